"""The saved classifier: written by ``recsys train-classifier``, read (numpy only) by ``recsys playlist``.

Files in ``models/``: ``classifier.npz`` (numpy arrays, loaded with allow_pickle=False), ``classifier.json`` (kind,
whether the playlist blends it in, encoder_id, the cross-validation table, created) and, for the MLP,
``classifier.pt`` (its state_dict, which ``torch.load(weights_only=True)`` accepts). The json goes last: it is what
``load`` checks first, so a crash midway leaves the previous json naming its kind.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from recsys.atomic import atomic_path, write_bytes_atomic
from recsys.errors import RecsysError
from recsys.recommender import models

FILES = ("classifier.npz", "classifier.json", "classifier.pt")
KINDS = ("logistic", "ridge", "mlp")


class ClassifierError(RecsysError):
    """The classifier cannot be trained or loaded; the message says what to do."""


class RatingModel:
    """The trained scorer in numpy: P(liked) from a vector model, predicted stars from a ridge regression.

    ``blend`` says whether the playlist uses the like-probability (False when cross-validation could not show it
    better than chance: the playlist then ranks by the neighbour votes alone). ``uncertainty`` (``--mode uncertain``)
    is the mean of two parts in [0, 1]: how close P(liked) is to one half, and how far the track is from every rated
    track (1 - its highest cosine to one, scaled so the farthest of the given tracks scores 1).
    """

    def __init__(self, kind: str, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.kind, self.arrays, self.info = kind, arrays, info

    @property
    def blend(self) -> bool:
        return bool(self.info.get("blend", True))

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
        if info.get("kind") not in KINDS or "stars_coef" not in arrays:
            raise ClassifierError(f"{meta_file} is from an older recsys or names an unknown kind "
                                  f"{info.get('kind')!r}: run `recsys train-classifier`")
        return cls(info["kind"], arrays, info)

    def like_probability(self, vectors: np.ndarray) -> np.ndarray:
        """P(the owner likes it: 4 stars and up), one per row of ``vectors``."""
        return models.probability(self.kind, self.arrays, self._check(vectors))

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """Predicted ratings in [0, 1] (0.2 per star), one per row of ``vectors``."""
        x = self._check(vectors)
        return np.clip(x @ self.arrays["stars_coef"] + self.arrays["stars_bias"], 0.0, 1.0).astype(np.float32)

    def uncertainty(self, vectors: np.ndarray) -> np.ndarray:
        """How unsure the classifier is about each track, in [0, 1] (see the class docstring)."""
        import faiss

        x = self._check(vectors)
        closeness = 1.0 - 2.0 * np.abs(self.like_probability(x) - 0.5)
        rated = np.ascontiguousarray(self.arrays["rated_vectors"], dtype=np.float32)
        nearest = faiss.knn(np.ascontiguousarray(x), rated, 1, metric=faiss.METRIC_INNER_PRODUCT)[0][:, 0]
        novelty = 1.0 - nearest
        top = float(novelty.max()) if len(novelty) else 0.0
        novelty = novelty / top if top > 0 else np.zeros_like(novelty)
        return (0.5 * np.clip(closeness, 0.0, 1.0) + 0.5 * np.clip(novelty, 0.0, 1.0)).astype(np.float32)

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
