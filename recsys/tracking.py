"""MLflow tracking for both training stages: where runs go, and one run as a context manager.

By default runs go to a SQLite store in the home folder (``sqlite:///<home>/mlflow.db``) with artifacts under
``<home>/mlartifacts``; a configured URI or ``MLFLOW_TRACKING_URI`` points them elsewhere (a server, another store).
``mlflow`` is imported inside the functions that need it: importing it takes seconds, and the commands that only
recommend never track anything. MLflow's and alembic's INFO chatter (store migrations) is kept off the terminal, and the
run is driven through ``MlflowClient`` rather than the fluent API, which prints a "View run" banner on exit.

MLflow's usage telemetry is turned off before mlflow is imported: it writes an installation id to
``~/.config/mlflow/telemetry.json`` and reports to a server, and recsys writes nothing outside the home and the playlist
folder (``MLFLOW_DISABLE_TELEMETRY=false`` set by the user is left alone).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recsys.errors import RecsysError
from recsys.home import MLFLOW_DB

_NOISY_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "urllib3")


class TrackingError(RecsysError):
    """The tracking store cannot be opened or written."""


def tracking_uri(home: Path, configured: str | None = None) -> str:
    """The tracking URI: the configured one, else ``MLFLOW_TRACKING_URI``, else the SQLite store in the home."""
    if configured:
        return configured
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    return f"sqlite:///{Path(home).expanduser().resolve() / MLFLOW_DB}"


class TrackedRun:
    """One open MLflow run; every call logs straight to the store (no global 'active run' state)."""

    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for name, value in metrics.items():
            self._client.log_metric(self.run_id, name, float(value), step=step or 0)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self._client.log_text(self.run_id, text, name)


def _no_telemetry() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def _quiet() -> None:
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Keeps mlflow from printing its git-not-found warning and progress bars when it logs artifacts.
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _home_artifacts(home: Path) -> Path:
    return Path(home).expanduser().resolve() / "mlartifacts"


def _rehome_artifacts(db: Path, experiment_id: str, old: str, new: str) -> None:
    """Point an experiment (and its runs) of the home's own store at this home's ``mlartifacts``.

    MLflow stores artifact locations as absolute URIs: a home copied or moved elsewhere kept writing its artifacts
    into the old home. The store is the home's own SQLite file, so its rows are rewritten in place (MLflow has no API
    to move an experiment); runs' URIs keep their tail (``<run id>/artifacts``), which the copied home also holds.
    """
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, experiment_id))
            conn.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                         "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
                         (new, len(old) + 1, experiment_id, len(old), old))
    finally:
        conn.close()


def _experiment_id(client: Any, home: Path, uri: str, experiment: str) -> str:
    own_store = uri.startswith("sqlite:") and not os.environ.get("MLFLOW_TRACKING_URI") and \
        uri == tracking_uri(home)
    location = None
    if own_store:
        artifacts = _home_artifacts(home)
        artifacts.mkdir(parents=True, exist_ok=True)
        location = artifacts.as_uri()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return client.create_experiment(experiment, artifact_location=location)
    if location is not None and found.artifact_location != location:
        _rehome_artifacts(Path(home).expanduser().resolve() / MLFLOW_DB, found.experiment_id,
                          found.artifact_location, location)
    return found.experiment_id


@contextmanager
def mlflow_run(home: Path, experiment: str, run_name: str, params: dict[str, Any], configured_uri: str | None = None,
               tags: dict[str, str] | None = None) -> Iterator[TrackedRun]:
    """Open a run in ``experiment`` (created when missing), log ``params``, yield it, and close it.

    The run ends FINISHED, or FAILED when the body raises (the exception goes on).
    """
    _no_telemetry()
    import mlflow  # noqa: F401  (slow import: only training tracks runs)

    _quiet()  # after the import: importing mlflow sets its loggers to INFO
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(home, configured_uri)
    if uri.startswith("sqlite:"):
        Path(home).expanduser().mkdir(parents=True, exist_ok=True)
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, home, uri, experiment)
        run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        for name, value in params.items():
            client.log_param(run.info.run_id, name, value)
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrackingError(f"MLflow tracking store {uri} cannot be used ({first}): fix the tracking URI "
                            "(MLFLOW_TRACKING_URI or the config) or pass none to use the home's SQLite store") from None
    tracked = TrackedRun(client, run.info.run_id)
    status = "FAILED"
    try:
        yield tracked
        status = "FINISHED"
    finally:
        client.set_terminated(tracked.run_id, status)
