"""The saved classifier: written by ``recsys train-classifier``, read (numpy only) by ``recsys playlist``.

Files in ``models/``: ``classifier.npz`` (numpy arrays, loaded with allow_pickle=False), ``classifier.json`` (kind,
whether the playlist blends it in, encoder_id, the cross-validation table, created) and, for the MLP,
``classifier.pt`` (its state_dict, which ``torch.load(weights_only=True)`` accepts). The json goes last: it is what
``load`` checks first, so a crash midway leaves the previous json naming its kind.

``scores.npy`` and ``scores.json``: the classifier's P(liked) of every track of one index snapshot
(:meth:`RatingModel.snapshot_probability`). The score of a track changes only with the classifier or its vector, so
it is computed once per classifier and snapshot, not over every vector (all of them read from the disk) by every
playlist; ``scores.json`` names the classifier (a digest of its files) and the snapshot's vectors it was computed
for, and anything else recomputes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from recsys.atomic import atomic_path, write_bytes_atomic
from recsys.errors import RecsysError
from recsys.recommender import models
from recsys.recommender.cross_validation import gate_verdict

FILES = ("classifier.npz", "classifier.json", "classifier.pt")
SCORES, SCORES_INFO = "scores.npy", "scores.json"
KINDS = ("logistic", "ridge", "mlp")


class ClassifierError(RecsysError):
    """The classifier cannot be trained or loaded; the message says what to do."""


class RatingModel:
    """The trained scorer in numpy: P(liked) from a vector model.

    ``blend`` says whether the playlist uses the like-probability (False when cross-validation could not show it
    better than chance: the playlist then ranks by the neighbour votes alone). The stars a playlist shows and
    ``--min-rating`` filters on, and ``--mode uncertain``, are functions of the blended probability
    (``recsys.recommender.rank.shown_rating``, ``rank.uncertainty``), not of this model alone: the ridge regression
    of the stars saved beside it (``stars_coef``) is measured in the cross-validation report only.
    """

    def __init__(self, kind: str, arrays: dict[str, np.ndarray], info: dict[str, Any],
                 folder: Path | None = None, digest: str = "") -> None:
        self.kind, self.arrays, self.info = kind, arrays, info
        self.folder, self.digest = folder, digest  # where it was loaded from and its files' digest (scores cache)

    @property
    def blend(self) -> bool:
        return bool(self.info.get("blend", True))

    @property
    def verdict(self) -> str:
        """The gate's decision in the words `train-classifier` printed (``cross_validation.gate_verdict``)."""
        return self.info.get("verdict") or gate_verdict(self.kind, self.blend, clear=False)

    @classmethod
    def load(cls, models_dir: Path, encoder_id: str) -> RatingModel:
        models_dir = Path(models_dir)
        meta_file, arrays_file = models_dir / "classifier.json", models_dir / "classifier.npz"
        if not meta_file.is_file() or not arrays_file.is_file():
            raise ClassifierError(f"no classifier in {models_dir}: run `recsys train-classifier`")
        try:
            meta_bytes, arrays_bytes = meta_file.read_bytes(), arrays_file.read_bytes()
            info = json.loads(meta_bytes.decode("utf-8"))
            with np.load(io.BytesIO(arrays_bytes), allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a truncated .npz: BadZipFile
            raise ClassifierError(f"classifier in {models_dir} is damaged ({exc}): run `recsys train-classifier` "
                                  "(or `recsys repair`)") from None
        if info.get("encoder_id") != encoder_id:
            raise ClassifierError("the classifier was trained on another encoder's vectors: "
                                  "run `recsys train-classifier`")
        if info.get("kind") not in KINDS or "stars_coef" not in arrays:
            raise ClassifierError(f"{meta_file} is from an older recsys or names an unknown kind "
                                  f"{info.get('kind')!r}: run `recsys train-classifier`")
        digest = hashlib.sha256(arrays_bytes + b"\0" + meta_bytes).hexdigest()[:32]
        return cls(info["kind"], arrays, info, models_dir, digest)

    def like_probability(self, vectors: np.ndarray) -> np.ndarray:
        """P(the owner likes it: 4 stars and up), one per row of ``vectors``."""
        return models.probability(self.kind, self.arrays, self._check(vectors))

    def snapshot_probability(self, vectors: np.ndarray, snapshot: Path | None) -> np.ndarray:
        """``like_probability(vectors)`` of the index snapshot in the folder ``snapshot`` (whose ``vectors.npy``
        ``vectors`` are), read from ``scores.npy`` when it was computed by this classifier for these vectors, else
        computed and stored there for the next run (a home that cannot be written just computes it each time).
        Without a folder (a model not loaded from the disk, vectors of no snapshot) it is computed."""
        source = None if snapshot is None else Path(snapshot) / "vectors.npy"
        if self.folder is None or source is None or not self.digest:
            return self.like_probability(vectors)
        try:
            st = source.stat()
        except OSError:
            return self.like_probability(vectors)
        wanted = {"classifier": self.digest, "vectors": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                  "inode": st.st_ino, "rows": len(vectors)}
        scores_file, info_file = self.folder / SCORES, self.folder / SCORES_INFO
        try:
            if json.loads(info_file.read_text(encoding="utf-8")) == wanted:
                stored = np.load(scores_file, allow_pickle=False)
                if stored.shape == (len(vectors),) and stored.dtype == np.float32:
                    return stored
        except (OSError, ValueError):
            pass  # none stored yet, or damaged: computed again
        scores = self.like_probability(vectors)
        try:
            info_file.unlink(missing_ok=True)  # no info naming scores that are being replaced
            with atomic_path(scores_file) as tmp, open(tmp, "wb") as handle:
                np.save(handle, scores)
            write_bytes_atomic(info_file, json.dumps(wanted).encode("utf-8"))
        except OSError:
            pass  # a read-only home: the next run computes them again
        return scores

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        dim = self.arrays["stars_coef"].shape[0]
        if x.ndim != 2 or x.shape[1] != dim:
            raise ClassifierError(f"vectors of shape {x.shape} do not fit the classifier (dimension {dim}): "
                                  "run `recsys train-classifier`")
        return x


def finite(value: Any) -> Any:
    """NaN metrics (ROC-AUC with one class, a standard error of one split) as null, in dicts and lists too: strict
    JSON has no NaN."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def save(models_dir: Path, model: RatingModel) -> list[Path]:
    """Write the model's files atomically; the MLP also as a torch state_dict (classifier.pt), else no .pt is left."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    npz, js, pt = (models_dir / name for name in FILES)
    with atomic_path(npz) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **model.arrays)
    written = [npz]
    if model.kind == "mlp":
        import torch

        a = model.arrays
        state = {"0.weight": torch.from_numpy(a["w1"] / np.float32(math.sqrt(a["w1"].shape[1]))),
                 "0.bias": torch.from_numpy(a["b1"]), "3.weight": torch.from_numpy(a["w2"][None, :].copy()),
                 "3.bias": torch.from_numpy(np.atleast_1d(a["b2"]).astype(np.float32))}
        with atomic_path(pt) as tmp:
            torch.save(state, tmp)
        written.append(pt)
    else:
        pt.unlink(missing_ok=True)  # an older MLP's weights would no longer match the json
    write_bytes_atomic(js, json.dumps(finite(model.info), indent=2).encode("utf-8"))
    return [*written, js]
