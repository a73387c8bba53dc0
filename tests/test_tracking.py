"""tracking.py against a real MLflow SQLite store (one store for the module: mlflow's migrations take seconds)."""

from __future__ import annotations

import pytest

from recsys.tracking import TrackingError, mlflow_run, tracking_uri


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


def test_uri_defaults_to_home_sqlite_and_respects_config_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert tracking_uri(tmp_path) == "http://example.invalid:5000"
    assert tracking_uri(tmp_path, "sqlite:////other.db") == "sqlite:////other.db"


def test_run_logs_params_metrics_and_artifacts(home, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model_file = tmp_path / "classifier.json"
    model_file.write_text('{"kind": "mlp"}')
    with mlflow_run(home, "recsys-test", "run-1", {"seed": 3, "lr": 0.01}, tags={"stage": "2"}) as run:
        run.log_metrics({"mae": 0.5, "spearman": 0.25})
        run.log_metrics({"loss": 1.0}, step=1)
        run.log_artifact(model_file)
        run.log_text("# card\n", "model_card.md")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(home))
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"seed": "3", "lr": "0.01"}
    assert got.data.metrics == {"mae": 0.5, "spearman": 0.25, "loss": 1.0}
    assert got.data.tags["stage"] == "2"
    names = {a.path for a in client.list_artifacts(run.run_id)}
    assert names == {"classifier.json", "model_card.md"}
    assert (home / "mlflow.db").is_file()
    assert any((home / "mlartifacts").rglob("model_card.md"))
    out = capsys.readouterr()
    assert "🏃" not in out.out + out.err


def test_failed_body_marks_run_failed(home, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RuntimeError), mlflow_run(home, "recsys-test", "run-2", {}) as run:
        raise RuntimeError("boom")
    from mlflow.tracking import MlflowClient

    assert MlflowClient(tracking_uri=tracking_uri(home)).get_run(run.run_id).info.status == "FAILED"


def test_unusable_store_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingError) as err, mlflow_run(tmp_path, "x", "r", {}, configured_uri="bogus-scheme://nowhere"):
        pass
    assert "\n" not in str(err.value) and "bogus-scheme://nowhere" in str(err.value)


def test_a_copied_home_writes_its_artifacts_into_itself(tmp_path, monkeypatch):
    """MLflow stores absolute artifact locations: a copied (or moved) home kept writing into the old one."""
    import shutil

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    old, new = tmp_path / "old-home", tmp_path / "new-home"
    note = tmp_path / "note.txt"
    note.write_text("x")
    with mlflow_run(old, "recsys-test", "before", {}) as first:
        first.log_artifact(note)
    shutil.copytree(old, new)
    before = sorted(p.relative_to(old) for p in old.rglob("*"))
    with mlflow_run(new, "recsys-test", "after", {}) as run:
        run.log_artifact(note)
    assert sorted(p.relative_to(old) for p in old.rglob("*")) == before  # nothing written into the old home
    assert (new / "mlartifacts").is_dir() and any(run.run_id in str(p) for p in (new / "mlartifacts").rglob("*"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(new))
    for run_id in (first.run_id, run.run_id):  # the copied run's artifacts are read from the copy
        assert [a.path for a in client.list_artifacts(run_id)] == ["note.txt"]
        assert client.get_run(run_id).info.artifact_uri.startswith((new / "mlartifacts").resolve().as_uri())


def test_an_interrupted_body_marks_run_killed(home, monkeypatch):
    """Ctrl-C in train-encoder (TrainingInterrupted, exit code 130) is no failure: the run shows KILLED."""
    from mlflow.tracking import MlflowClient

    from recsys.training.trainer import TrainingInterrupted

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name, error in (("run-3", TrainingInterrupted("interrupted in epoch 2")), ("run-4", KeyboardInterrupt())):
        with pytest.raises(type(error)), mlflow_run(home, "recsys-test", name, {}) as run:
            raise error
        assert MlflowClient(tracking_uri=tracking_uri(home)).get_run(run.run_id).info.status == "KILLED"
