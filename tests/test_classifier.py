"""Stage 2 classifier: labels, grouped split, metrics, training decisions, saved files, numpy inference, MLflow."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from recsys.library.track import Track
from recsys.recommender.classifier import (
    ClassifierError,
    RatingModel,
    collect_labels,
    metrics,
    split_by_group,
    train_classifier,
)


@dataclass
class Lib:
    keys: list[str]
    vectors: np.ndarray
    encoder_id: str = "enc-a"


def make_library(n_albums: int, per_album: int, dim: int, seed: int, learnable: bool = True):
    """Albums of similar vectors; the rating follows a hidden taste direction (or is pure noise)."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=dim)
    taste /= np.linalg.norm(taste)
    vectors, tracks = [], []
    for a in range(n_albums):
        centre = rng.normal(size=dim)
        for t in range(per_album):
            v = centre + 0.5 * rng.normal(size=dim)
            v /= np.linalg.norm(v)
            vectors.append(v)
            score = float(v @ taste) * np.sqrt(dim / 16) if learnable else float(rng.uniform(-1, 1))
            stars = int(np.clip(np.round(3 + 4 * score + 0.3 * rng.normal()), 1, 5))
            tracks.append(Track(path=f"/m/a{a}/t{t}.flac", title=f"t{t}", artist=f"artist {a % 7}",
                                album=f"album {a}", rating=stars * 0.2))
    return Lib([t.key for t in tracks], np.array(vectors, dtype=np.float32)), tracks


def test_labels_count_used_and_dropped_by_reason():
    keys = [f"/m/{i}" for i in range(10)]
    tracks = [Track(path="/m/0", rating=0.8), Track(path="/m/0", rating=0.8), Track(path="/m/1", rating=1.4),
              Track(path="/nowhere", rating=0.6), Track(path="/m/2", playcount=9, skipcount=1),
              Track(path="/m/3", playcount=1, skipcount=5), Track(path="/m/4", playcount=2, skipcount=2),
              Track(path="/m/5", rating=0.2)]
    labels = collect_labels(keys, tracks)
    assert labels.used == {"explicit": 2, "pseudo (plays)": 1, "pseudo (skips)": 1}
    assert labels.dropped == {"duplicate entry": 1, "rating out of range": 1, "no vector (not embedded)": 1}
    assert labels.targets.tolist() == pytest.approx([0.8, 0.2, 0.7, 0.3])
    assert labels.weights.tolist() == pytest.approx([1, 1, 0.2, 0.2])
    assert collect_labels(keys, tracks, pseudo_until=2).used["pseudo (plays)"] == 0


def test_split_keeps_albums_on_one_side_and_is_deterministic():
    lib, tracks = make_library(30, 4, 8, seed=1)
    labels = collect_labels(lib.keys, tracks)
    train, val, how = split_by_group(labels, seed=3)
    groups = np.array(labels.groups)
    assert not set(groups[train]) & set(groups[val])
    assert 0.15 <= val.sum() / len(val) <= 0.3 and how.startswith("album")
    again = split_by_group(collect_labels(lib.keys, tracks), seed=3)
    assert (again[1] == val).all()
    assert not (split_by_group(collect_labels(lib.keys, tracks), seed=4)[1] == val).all()


def test_metrics_perfect_and_constant():
    true = np.array([0.2, 0.4, 0.6, 0.8, 1.0, 0.8])
    good = metrics(true, true)
    assert good["mae_stars"] == 0 and good["spearman"] == pytest.approx(1) and good["roc_auc"] == 1
    assert good["ndcg20"] == pytest.approx(1)
    flat = metrics(np.full(6, 0.6), true)
    assert flat["spearman"] == 0 and flat["pred_std_stars"] == 0 and flat["roc_auc"] == 0.5
    assert flat["mae_stars"] == pytest.approx(np.abs(0.6 - true).mean() * 5)
    assert math.isnan(metrics(true, np.full(6, 0.2))["roc_auc"])


def test_learnable_ratings_keep_the_mlp_and_save_numpy_and_torch_files(tmp_path):
    import torch
    from mlflow.tracking import MlflowClient

    lib, tracks = make_library(60, 5, 16, seed=0)
    models = tmp_path / "home" / "models"
    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    report = train_classifier(lib, tracks, models, uri, seed=0)
    assert report.kind == "mlp" and report.kept_model, report.reason
    m, base, knn = (report.metrics[r] for r in ("model", "mean baseline", "knn baseline"))
    assert m["mae_stars"] < base["mae_stars"] and m["spearman"] > 0.5 and m["pred_std_stars"] > 0.3
    assert set(knn) == set(m) and report.n_val + report.n_train == 300
    assert "model" in report.table() and "knn baseline" in report.table()

    model = RatingModel.load(models, "enc-a")
    pred = model.predict(lib.vectors)
    assert pred.shape == (300,) and pred.min() >= 0 and pred.max() <= 1 and pred.std() > 0.05
    true = np.array([t.rating for t in tracks])
    assert np.corrcoef(pred, true)[0, 1] > 0.6
    unc = model.uncertainty(lib.vectors)
    assert unc.shape == (300,) and 0 <= unc.min() and unc.max() <= 1
    info = json.loads((models / "classifier.json").read_text())
    assert info["kind"] == "mlp" and info["encoder_id"] == "enc-a"
    state = torch.load(models / "classifier.pt", weights_only=True)
    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 1))
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        torch_pred = torch.sigmoid(net(torch.from_numpy(lib.vectors * info["torch_input_scale"])).squeeze(-1))
    assert np.allclose(torch_pred.numpy(), pred, atol=1e-5)

    run = MlflowClient(tracking_uri=uri).get_run(report.run_id)
    assert run.data.metrics["model.mae_stars"] == pytest.approx(m["mae_stars"])
    assert "mean_baseline.mae_stars" in run.data.metrics and run.data.params["seed"] == "0"
    names = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(report.run_id)}
    assert names == {"classifier.npz", "classifier.json", "classifier.pt", "model_card.md"}

    with pytest.raises(ClassifierError, match="another encoder"):
        RatingModel.load(models, "enc-b")


def test_training_is_deterministic(tmp_path):
    lib, tracks = make_library(12, 4, 8, seed=5)
    a = train_classifier(lib, tracks, tmp_path / "a", None, seed=1)
    b = train_classifier(lib, tracks, tmp_path / "b", None, seed=1)
    assert a.metrics == b.metrics
    assert np.array_equal(RatingModel.load(tmp_path / "a", "enc-a").predict(lib.vectors),
                          RatingModel.load(tmp_path / "b", "enc-a").predict(lib.vectors))


def test_noise_ratings_fall_back_to_knn(tmp_path):
    lib, tracks = make_library(10, 3, 8, seed=2, learnable=False)
    report = train_classifier(lib, tracks, tmp_path, None, seed=0)
    assert report.kind == "knn" and not report.kept_model and "not kept" in report.reason
    model = RatingModel.load(tmp_path, "enc-a")
    pred = model.predict(lib.vectors)
    # kNN over all rated tracks: a rated track's own rating dominates its prediction.
    assert np.abs(pred - np.array([t.rating for t in tracks])).mean() < 0.1
    assert np.load(tmp_path / "classifier.npz", allow_pickle=False)["rated_vectors"].shape == (30, 8)


def test_twenty_ratings_are_enough(tmp_path):
    lib, tracks = make_library(5, 4, 8, seed=3)
    report = train_classifier(lib, tracks, tmp_path, None)
    assert report.n_val > 0 and report.kind in ("mlp", "knn")
    assert RatingModel.load(tmp_path, "enc-a").predict(lib.vectors).shape == (20,)


def test_clear_errors(tmp_path):
    lib, tracks = make_library(5, 4, 8, seed=3)
    with pytest.raises(ClassifierError, match=r"only 19 rated tracks have vectors: rate 1 more \(minimum 20\)"):
        train_classifier(lib, tracks[:19], tmp_path, None)
    same = [Track(path=t.path, album=t.album, rating=0.6) for t in tracks]
    with pytest.raises(ClassifierError, match="all 20 ratings are 3 stars"):
        train_classifier(lib, same, tmp_path, None)
    moved = [Track(path="/elsewhere" + t.path, rating=t.rating) for t in tracks]
    with pytest.raises(ClassifierError, match=r"none of the 20 rated tracks has a vector: run `recsys embed`"):
        train_classifier(lib, moved, tmp_path, None)
    with pytest.raises(ClassifierError, match="no classifier in .*: run `recsys train-classifier`"):
        RatingModel.load(tmp_path / "empty", "enc-a")
    assert not (tmp_path / "classifier.json").exists()
