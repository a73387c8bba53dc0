"""Stage 2: a track's vector -> its predicted rating in [0, 1] (0.2 per star), trained on the owner's star ratings.

Labels. Every explicit rating of a track that has a vector is a target with weight 1. Where explicit ratings are few
(fewer than ``pseudo_until``, default 500), the play history of UNRATED tracks adds weak pseudo-labels:
at least 3 plays and at most one skip per 4 plays -> 3.5 stars (0.7) with weight 0.2 ("liked-ish");
at least 3 skips and more skips than plays -> 1.5 stars (0.3) with weight 0.2 ("disliked-ish");
any other play history says too little and is not used. Pseudo-labels only ever train: validation measures explicit
ratings alone. Every rating that is not used is counted under its reason (no vector, rating out of range, duplicate
entry, pseudo-label in a validation album) and logged, with the counts of what was used.

Split. Validation is about 20 % of the explicit ratings, drawn as whole groups -- an album (album + album artist), or
the artist when the album tag is empty -- so one album's tracks are never on both sides; deterministic for a seed.

Model. A small MLP (D -> 64 -> 1, ReLU, dropout, AdamW weight decay) outputs one LOGIT per track, shape (B,), trained
with BCEWithLogits against targets in [0, 1] of the same shape (B,), weighted per sample; the sigmoid is applied once,
at prediction. Early stopping on the validation loss, then a refit on all labels for the best number of epochs.

Keep or fall back. The model, the mean-rating baseline and a kNN baseline (similarity-weighted mean rating of the 10
nearest training tracks) are scored on the validation split: MAE in stars, Spearman, ROC-AUC of liked (>= 4 stars)
vs not, NDCG@20, and the std of the predictions in stars. The mean baseline's Spearman is 0 by definition (a constant
orders nothing). The MLP is kept only if its MAE is lower than the mean baseline's AND its Spearman is above 0 AND its
predictions spread (std >= 0.05 stars: a constant predictor is the failure this design was built against). Otherwise
the saved scorer is the kNN one: the rated vectors and their ratings, so inference needs no torch either way.

Files in ``models/``: ``classifier.npz`` (numpy arrays for inference, loaded with allow_pickle=False),
``classifier.json`` (kind, encoder_id, metrics, created), ``classifier.pt`` (the same tensors as a state_dict that
``torch.load(weights_only=True)`` accepts). torch and mlflow are imported only inside training.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.atomic import atomic_path, write_bytes_atomic
from recsys.errors import RecsysError
from recsys.library.track import Track

log = logging.getLogger(__name__)

LIKED = 0.8  # 4 stars and up count as liked for ROC-AUC
BOUNDARY = 0.6  # 3 stars: the rating the model is least sure about (between liked and disliked)
PSEUDO_MIN_EVENTS = 3
PSEUDO_LIKED_TARGET, PSEUDO_DISLIKED_TARGET, PSEUDO_WEIGHT = 0.7, 0.3, 0.2
MIN_SPREAD_STARS = 0.05
KNN_TEMPERATURE = 0.05  # softmax temperature over cosine similarities of the neighbours
CHUNK = 8192
FILES = ("classifier.npz", "classifier.json", "classifier.pt")
ROWS = ("model", "mean baseline", "knn baseline")


class ClassifierError(RecsysError):
    """The classifier cannot be trained or loaded; the message says what to do."""


@dataclass
class Labels:
    """Training labels joined to the library's rows."""

    rows: np.ndarray  # row index into the library's vectors
    targets: np.ndarray  # rating in [0, 1]
    weights: np.ndarray
    explicit: np.ndarray  # bool: an explicit rating (else a pseudo-label)
    groups: list[str]
    used: dict[str, int]
    dropped: dict[str, int]


@dataclass
class TrainReport:
    kind: str
    n_train: int
    n_val: int
    used: dict[str, int]
    dropped: dict[str, int]
    metrics: dict[str, dict[str, float]]
    kept_model: bool
    reason: str
    run_id: str | None
    seconds: float
    split: str = "album"
    files: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The validation metrics as an aligned text table."""
        cols = (("MAE (stars)", "mae_stars"), ("Spearman", "spearman"), ("ROC-AUC", "roc_auc"),
                ("NDCG@20", "ndcg20"), ("std (stars)", "pred_std_stars"))
        lines = [f"{'':14s}" + "".join(f"{name:>13s}" for name, _ in cols)]
        for row in ROWS:
            values = self.metrics.get(row, {})
            lines.append(f"{row:14s}" + "".join(f"{values.get(key, math.nan):13.3f}" for _, key in cols))
        return "\n".join(lines)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text or "").casefold()).strip()


def _group(track: Track) -> str:
    if track.album.strip():
        return f"album:{_norm(track.albumartist)}\x00{_norm(track.album)}"
    if track.artist.strip():
        return f"artist:{_norm(track.artist)}"
    return f"track:{track.key}"


def collect_labels(keys: Sequence[str], tracks: Sequence[Track], pseudo_until: int = 500) -> Labels:
    """Join ratings (and, when explicit ones are few, play history) to the library's rows; count what is dropped."""
    row_of = {k: i for i, k in enumerate(keys)}
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    explicit: list[tuple[int, float, str]] = []
    unrated: list[Track] = []
    for t in tracks:
        if t.key in seen:
            dropped["duplicate entry" if t.rating is not None else "duplicate unrated entry"] += 1
            continue
        seen.add(t.key)
        if t.rating is None:
            unrated.append(t)
        elif not 0.0 <= t.rating <= 1.0:
            dropped["rating out of range"] += 1
            log.debug("rating dropped (out of range %r): %s", t.rating, t.key)
        elif t.key not in row_of:
            dropped["no vector (not embedded)"] += 1
            log.debug("rating dropped (no vector): %s", t.key)
        else:
            explicit.append((row_of[t.key], float(t.rating), _group(t)))
    pseudo: list[tuple[int, float, str]] = []
    if len(explicit) < pseudo_until:
        for t in unrated:
            if t.key not in row_of:
                continue
            plays, skips = t.playcount, t.skipcount
            if plays >= PSEUDO_MIN_EVENTS and 4 * skips <= plays:
                pseudo.append((row_of[t.key], PSEUDO_LIKED_TARGET, _group(t)))
            elif skips >= PSEUDO_MIN_EVENTS and skips > plays:
                pseudo.append((row_of[t.key], PSEUDO_DISLIKED_TARGET, _group(t)))
    every = explicit + pseudo
    used = {"explicit": len(explicit), "pseudo (plays)": sum(1 for p in pseudo if p[1] > 0.5),
            "pseudo (skips)": sum(1 for p in pseudo if p[1] < 0.5)}
    labels = Labels(rows=np.array([e[0] for e in every], dtype=np.int64),
                    targets=np.array([e[1] for e in every], dtype=np.float32),
                    weights=np.array([1.0] * len(explicit) + [PSEUDO_WEIGHT] * len(pseudo), dtype=np.float32),
                    explicit=np.array([True] * len(explicit) + [False] * len(pseudo)),
                    groups=[e[2] for e in every], used=used, dropped=dict(dropped))
    log.info("ratings used: %s; dropped: %s", used, dict(dropped) or "none")
    return labels


def split_by_group(labels: Labels, seed: int, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray, str]:
    """Boolean train and validation masks over ``labels``: whole groups go to one side. Returns (train, val, how)."""
    groups = np.array(labels.groups, dtype=object)
    how = "album (artist where the album is empty)"
    explicit_groups = sorted(set(groups[labels.explicit]))
    if len(explicit_groups) < 2:
        # Every rating in one album: a grouped split is impossible, so split by track and say so.
        groups = np.array([f"row:{r}" for r in labels.rows], dtype=object)
        explicit_groups = sorted(set(groups[labels.explicit]))
        how = "track (all ratings are in one album)"
    order = np.random.default_rng(seed).permutation(len(explicit_groups))
    counts = Counter(groups[labels.explicit])
    want = max(1.0, val_fraction * int(labels.explicit.sum()))
    val_groups: set[str] = set()
    taken = 0
    for i in order[:-1]:  # the last group always stays in training
        if taken >= want:
            break
        val_groups.add(explicit_groups[i])
        taken += counts[explicit_groups[i]]
    in_val = np.array([g in val_groups for g in groups], dtype=bool)
    val = in_val & labels.explicit
    train = ~in_val
    leaked = int((in_val & ~labels.explicit).sum())
    if leaked:
        labels.dropped["pseudo-label in a validation album"] = leaked
        log.info("dropped %d pseudo-labels whose album is in the validation split", leaked)
    return train, val, how


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _nearest(rated: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and row indices of the ``k`` rated vectors nearest each query (exact, FAISS).

    FAISS rather than a numpy matmul + argpartition: on 100,000 x 5,000 x 128 it is about 8 times faster.
    """
    index = faiss.IndexFlatIP(rated.shape[1])
    index.add(np.ascontiguousarray(rated, dtype=np.float32))
    return index.search(np.ascontiguousarray(query, dtype=np.float32), k)


def knn_predict(rated: np.ndarray, targets: np.ndarray, weights: np.ndarray, query: np.ndarray,
                k: int = 10) -> np.ndarray:
    """Rating of each query vector: softmax(similarity / T)-weighted mean of its k most similar rated tracks."""
    arrays = {"rated_vectors": rated, "rated_targets": targets, "rated_weights": weights, "k": np.array(k)}
    return RatingModel("knn", arrays, {}).predict(query)


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman and ROC-AUC need."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end - 1) / 2.0 + 1.0
            start = end
    return ranks


def metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Validation metrics of predicted ratings against true ratings (both in [0, 1])."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    out = {"mae_stars": float(np.abs(pred - true).mean() * 5), "pred_std_stars": float(pred.std() * 5)}
    rp, rt = _rankdata(pred), _rankdata(true)
    out["spearman"] = 0.0 if rp.std() == 0 or rt.std() == 0 else float(np.corrcoef(rp, rt)[0, 1])
    liked = true >= LIKED - 1e-6
    n_pos, n_neg = int(liked.sum()), int((~liked).sum())
    out["roc_auc"] = math.nan if not n_pos or not n_neg else \
        float((rp[liked].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    k = min(20, len(true))
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    gain = true * 5
    ideal = float((np.sort(gain)[::-1][:k] * discount).sum())
    got = float((gain[np.argsort(-pred, kind="stable")][:k] * discount).sum())
    out["ndcg20"] = got / ideal if ideal > 0 else math.nan
    return out


class RatingModel:
    """The trained scorer, in numpy: kind 'mlp' (weights) or 'knn' (the rated vectors and their ratings).

    ``uncertainty`` (for ``--mode uncertain``) is the mean of two parts in [0, 1]: how close the predicted rating is to
    3 stars, the boundary between liked and disliked (1 at 3 stars, 0 at 0 stars), and how far the track is from every
    rated track (1 - its highest cosine to a rated track, scaled so the farthest of the given tracks scores 1).
    """

    def __init__(self, kind: str, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.kind = kind
        self.arrays = arrays
        self.info = info

    @classmethod
    def load(cls, models_dir: Path, encoder_id: str) -> RatingModel:
        models_dir = Path(models_dir)
        meta_file, arrays_file = models_dir / "classifier.json", models_dir / "classifier.npz"
        if not meta_file.is_file() or not arrays_file.is_file():
            raise ClassifierError(f"no classifier in {models_dir}: run `recsys train-classifier`")
        try:
            info = json.loads(meta_file.read_text(encoding="utf-8"))
            with np.load(arrays_file, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a truncated .npz: BadZipFile
            raise ClassifierError(f"classifier in {models_dir} is damaged ({exc}): run `recsys train-classifier` "
                                  "(or `recsys repair`)") from None
        if info.get("encoder_id") != encoder_id:
            raise ClassifierError("the classifier was trained on another encoder's vectors: "
                                  "run `recsys train-classifier`")
        if info.get("kind") not in ("mlp", "knn"):
            raise ClassifierError(f"{meta_file} names an unknown kind {info.get('kind')!r}: "
                                  "run `recsys train-classifier`")
        return cls(info["kind"], arrays, info)

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """Predicted ratings in [0, 1], one per row of ``vectors``."""
        return self._predict(self._check(vectors))[0]

    def uncertainty(self, vectors: np.ndarray) -> np.ndarray:
        """How unsure the classifier is about each track, in [0, 1] (see the class docstring)."""
        x = self._check(vectors)
        predicted, nearest = self._predict(x, with_nearest=True)
        closeness = 1.0 - np.abs(predicted - BOUNDARY) / max(BOUNDARY, 1.0 - BOUNDARY)
        novelty = 1.0 - nearest
        top = float(novelty.max()) if len(novelty) else 0.0
        novelty = novelty / top if top > 0 else np.zeros_like(novelty)
        return (0.5 * np.clip(closeness, 0.0, 1.0) + 0.5 * np.clip(novelty, 0.0, 1.0)).astype(np.float32)

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        dim = self.arrays["rated_vectors"].shape[1]
        if x.ndim != 2 or x.shape[1] != dim:
            raise ClassifierError(f"vectors of shape {x.shape} do not fit the classifier (dimension {dim}): "
                                  "run `recsys train-classifier`")
        return x

    def _predict(self, x: np.ndarray, with_nearest: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions and, when asked, each row's highest cosine to a rated track (one FAISS search for kNN)."""
        a = self.arrays
        if self.kind == "knn":
            top, idx = _nearest(a["rated_vectors"], x, min(int(a["k"]), len(a["rated_vectors"])))
            w = np.exp((top - top[:, :1]) / KNN_TEMPERATURE) * a["rated_weights"][idx]
            return ((w * a["rated_targets"][idx]).sum(axis=1) / w.sum(axis=1)).astype(np.float32), top[:, 0]
        out = np.empty(len(x), dtype=np.float32)
        for start in range(0, len(x), CHUNK):
            hidden = np.maximum(x[start:start + CHUNK] @ a["w1"].T + a["b1"], 0.0)
            out[start:start + CHUNK] = _sigmoid(hidden @ a["w2"] + a["b2"])
        return out, _nearest(a["rated_vectors"], x, 1)[0][:, 0] if with_nearest else None


def _fit_mlp(x: np.ndarray, y: np.ndarray, w: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, *, seed: int,
             epochs: int, patience: int, hidden: int, dropout: float, lr: float, weight_decay: float,
             batch_size: int) -> tuple[Any, int]:
    """Train the MLP; with ``val`` stop early on its loss. Returns (module with the best weights, best epoch count)."""
    import torch

    torch.manual_seed(seed)
    dim = x.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                              torch.nn.Linear(hidden, 1))
    mean = float(np.clip(np.average(y, weights=w), 0.02, 0.98))
    with torch.no_grad():
        net[3].bias.fill_(math.log(mean / (1 - mean)))  # start at the mean rating, not at 2.5 stars
    # L2-normalised rows have entries ~1/sqrt(D); scaling to unit size keeps the default init well conditioned.
    scale = math.sqrt(dim)
    xt, yt, wt = torch.from_numpy(x * scale), torch.from_numpy(y), torch.from_numpy(w)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    gen = torch.Generator().manual_seed(seed)
    best, best_epoch, best_state = math.inf, epochs, None
    for epoch in range(1, epochs + 1):
        net.train()
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            logits = net(xt[idx]).squeeze(-1)
            assert logits.shape == yt[idx].shape  # (B,) vs (B,): a (B, 1) broadcast once trained a constant
            loss = (loss_fn(logits, yt[idx]) * wt[idx]).sum() / wt[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if val is None:
            continue
        net.eval()
        with torch.no_grad():
            vx, vy = val
            val_loss = float(loss_fn(net(torch.from_numpy(vx * scale)).squeeze(-1), torch.from_numpy(vy)).mean())
        if val_loss < best - 1e-5:
            best, best_epoch = val_loss, epoch
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return net, best_epoch


def _mlp_arrays(net: Any, dim: int) -> dict[str, np.ndarray]:
    state = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    return {"w1": state["0.weight"] * np.float32(math.sqrt(dim)), "b1": state["0.bias"],
            "w2": state["3.weight"][0], "b2": state["3.bias"][0]}


def _finite(value: Any) -> Any:
    """NaN metrics (ROC-AUC with one class) as null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def _save(models_dir: Path, model: RatingModel, torch_state: dict[str, Any]) -> list[Path]:
    import torch

    models_dir.mkdir(parents=True, exist_ok=True)
    npz, js, pt = (models_dir / name for name in FILES)

    with atomic_path(npz) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **model.arrays)
    with atomic_path(pt) as tmp:
        torch.save(torch_state, tmp)
    # The json goes last: it is what `load` checks first, so a crash midway leaves the previous json naming its kind.
    write_bytes_atomic(js, json.dumps(_finite(model.info), indent=2).encode("utf-8"))
    return [npz, js, pt]


def _model_card(report: TrainReport, lib: Any, params: dict[str, Any]) -> str:
    used = ", ".join(f"{k}: {v}" for k, v in report.used.items())
    dropped = ", ".join(f"{k}: {v}" for k, v in report.dropped.items()) or "none"
    return "\n".join([
        "# recsys rating classifier", "",
        f"- created: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- encoder_id: {lib.encoder_id}", f"- library vectors: {len(lib.keys)} x {lib.vectors.shape[1]}",
        f"- ratings used: {used}", f"- ratings dropped: {dropped}",
        f"- split: by {report.split}; {report.n_train} training labels, {report.n_val} validation ratings",
        f"- parameters: {json.dumps(params)}", "", "## Validation metrics", "", "```", report.table(), "```", "",
        f"## Decision: {report.kind}", "", report.reason, ""])


def train_classifier(lib: Any, tracks: Sequence[Track], models_dir: Path, tracking_uri: str | None, *,
                     min_ratings: int = 20, seed: int = 0, val_fraction: float = 0.2, pseudo_until: int = 500,
                     hidden: int = 64, dropout: float = 0.2, weight_decay: float = 1e-3, lr: float = 3e-3,
                     max_epochs: int = 300, patience: int = 25, batch_size: int = 256, knn_k: int = 10,
                     experiment: str = "recsys-classifier") -> TrainReport:
    """Train, compare with the baselines, save the kept scorer under ``models_dir``, and track the run in MLflow.

    ``lib`` has ``keys``, ``vectors`` (N, D L2-normalised float32) and ``encoder_id``; ``tracking_uri`` None tracks
    nothing. The MLflow home is ``models_dir``'s parent (``<home>/models``).
    """
    started = time.perf_counter()
    vectors = np.asarray(lib.vectors, dtype=np.float32)
    labels = collect_labels(lib.keys, tracks, pseudo_until)
    n_rated = sum(1 for t in tracks if t.rating is not None)
    n_explicit = labels.used["explicit"]
    if n_rated == 0:
        raise ClassifierError(f"no rated tracks in the player database: rate at least {min_ratings} tracks, "
                              "then run `recsys train-classifier` again")
    if n_explicit == 0:
        raise ClassifierError(f"none of the {n_rated} rated tracks has a vector: run `recsys embed`")
    if n_explicit < min_ratings:
        raise ClassifierError(f"only {n_explicit} rated tracks have vectors: rate {min_ratings - n_explicit} more "
                              f"(minimum {min_ratings}), then run `recsys train-classifier` again")
    explicit_targets = labels.targets[labels.explicit]
    if np.ptp(explicit_targets) == 0:
        raise ClassifierError(f"all {n_explicit} ratings are {explicit_targets[0] * 5:g} stars: rate some tracks "
                              "higher or lower so the classifier can tell them apart")
    train, val, how = split_by_group(labels, seed, val_fraction)
    x = vectors[labels.rows]
    y, w = labels.targets, labels.weights
    train_explicit = train & labels.explicit
    params = {"seed": seed, "val_fraction": val_fraction, "pseudo_until": pseudo_until, "hidden": hidden,
              "dropout": dropout, "weight_decay": weight_decay, "lr": lr, "max_epochs": max_epochs,
              "patience": patience, "batch_size": batch_size, "knn_k": knn_k, "encoder_id": lib.encoder_id,
              "n_tracks": len(lib.keys), "dim": int(vectors.shape[1])}

    fit = {"seed": seed, "hidden": hidden, "dropout": dropout, "lr": lr, "weight_decay": weight_decay,
           "batch_size": batch_size, "patience": patience}
    net, best_epoch = _fit_mlp(x[train], y[train], w[train], (x[val], y[val]), epochs=max_epochs, **fit)
    mlp_val = RatingModel("mlp", {**_mlp_arrays(net, x.shape[1]), "rated_vectors": x[train]}, {}).predict(x[val])
    mean_val = np.full(int(val.sum()), float(np.mean(y[train_explicit])), dtype=np.float32)
    knn_val = knn_predict(x[train], y[train], w[train], x[val], knn_k)
    table = {"model": metrics(mlp_val, y[val]), "mean baseline": metrics(mean_val, y[val]),
             "knn baseline": metrics(knn_val, y[val])}
    table["mean baseline"]["spearman"] = 0.0  # a constant orders nothing (defined, not measured)
    m, base = table["model"], table["mean baseline"]
    kept = m["mae_stars"] < base["mae_stars"] and m["spearman"] > 0.0 and m["pred_std_stars"] >= MIN_SPREAD_STARS
    if kept:
        reason = (f"MLP kept: MAE {m['mae_stars']:.3f} < mean baseline {base['mae_stars']:.3f} stars, Spearman "
                  f"{m['spearman']:.3f} > 0, predictions spread (std {m['pred_std_stars']:.3f} stars).")
    else:
        reason = (f"MLP not kept (MAE {m['mae_stars']:.3f} vs mean baseline {base['mae_stars']:.3f} stars, Spearman "
                  f"{m['spearman']:.3f}, std {m['pred_std_stars']:.3f} stars): scoring with kNN over the rated "
                  "tracks instead.")
    log.info(reason)

    keep_rows = train | val  # pseudo-labels of validation albums stay out of the final fit too
    rated = {"rated_vectors": x[keep_rows], "rated_targets": y[keep_rows], "rated_weights": w[keep_rows]}
    info: dict[str, Any] = {"kind": "mlp" if kept else "knn", "encoder_id": lib.encoder_id,
                            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "metrics": table,
                            "reason": reason, "used": labels.used, "dropped": labels.dropped, "split": how}
    if kept:
        final, _ = _fit_mlp(x[keep_rows], y[keep_rows], w[keep_rows], None, epochs=best_epoch, **fit)
        arrays = {**_mlp_arrays(final, x.shape[1]), "rated_vectors": rated["rated_vectors"]}
        torch_state = dict(final.state_dict())
        info["torch_input_scale"] = math.sqrt(x.shape[1])  # classifier.pt's net expects vectors times this
    else:
        import torch

        arrays = {**rated, "k": np.array(knn_k, dtype=np.int64)}
        torch_state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    model = RatingModel(info["kind"], arrays, info)
    report = TrainReport(kind=info["kind"], n_train=int(train.sum()), n_val=int(val.sum()), used=labels.used,
                         dropped=labels.dropped, metrics=table, kept_model=kept, reason=reason, run_id=None,
                         seconds=0.0, split=how)
    files = _save(Path(models_dir), model, torch_state)
    report.files = [str(f) for f in files]
    if tracking_uri is not None:
        from recsys.tracking import mlflow_run

        with mlflow_run(Path(models_dir).parent, experiment, f"classifier-{info['kind']}", params,
                        configured_uri=tracking_uri, tags={"stage": "classifier", "kind": info["kind"]}) as run:
            run.log_metrics({f"{row.replace(' ', '_')}.{name}": value for row, values in table.items()
                             for name, value in values.items() if not math.isnan(value)})
            run.log_metrics({"kept_model": float(kept), "best_epoch": float(best_epoch), "n_train": report.n_train,
                             "n_val": report.n_val})
            for f in files:
                run.log_artifact(f)
            run.log_text(_model_card(report, lib, params), "model_card.md")
            report.run_id = run.run_id
    report.seconds = time.perf_counter() - started
    return report
