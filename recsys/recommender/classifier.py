"""Stage 2, ``recsys train-classifier``: choose, fit and save the model of the owner's taste from their ratings.

The steps, each in its own module: labels (``labels``: ratings and play history joined to the vectors, groups by
album and artist), grouped cross-validation of logistic regression, ridge regression, the MLP and the neighbour
votes against the base rate (``evaluation``), the better-than-chance rule (``evaluation.better_than_chance``), the
final fit on every label and the files (``persistence``). What is saved is the model the cross-validation scored:
the same code fits it, on all the labels instead of a fold's.

The vector model with the best out-of-fold ROC-AUC is saved. When it is clearly better than chance on held-out
albums and its blend with the neighbour votes beats the votes alone there (``evaluation.blend_helps``), the playlist
blends its like-probability with the votes; when not, the json says so, the command says so, and the playlist ranks
by the neighbour votes alone. A ridge regression of the rating (for predicted stars) is saved
either way. torch (for the MLP) and mlflow are imported only here, inside training.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from recsys.library.catalogue import Catalogue
from recsys.library.track import Track
from recsys.recommender.cross_validation import (
    KINDS,
    CrossValidation,
    better_than_chance,
    blend_helps,
    cross_validate,
    fit_vector_model,
    gate_verdict,
    prior_note,
)
from recsys.recommender.labels import collect_labels
from recsys.recommender.neighbours import Search, exact_search, neighbourhoods
from recsys.recommender.persistence import ClassifierError, RatingModel, save

log = logging.getLogger(__name__)

COLUMNS = (("ROC-AUC", "roc_auc"), ("AUC low", "auc_low"), ("log-loss", "log_loss"), ("Brier", "brier"))
ROWS = (*KINDS, "blend")

__all__ = ["ClassifierError", "RatingModel", "ClassifierReport", "train_classifier"]


@dataclass
class ClassifierReport:
    kind: str
    blend: bool
    n_ratings: int
    n_folds: int
    used: dict[str, int]
    dropped: dict[str, int]
    metrics: dict[str, dict[str, float]]
    stars: dict[str, float]
    reason: str
    run_id: str | None
    seconds: float
    split: str = "album and artist"
    files: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The cross-validation metrics as an aligned text table (P(liked) of each candidate)."""
        lines = [f"{'':11s}" + "".join(f"{name:>10s}" for name, _ in COLUMNS)]
        for row in ROWS:
            values = self.metrics.get(row)
            if values is not None:
                lines.append(f"{row:11s}" + "".join(f"{values.get(key, math.nan):10.3f}" for _, key in COLUMNS))
        if note := prior_note(self.metrics):
            lines.append(note)
        if self.stars:
            lines.append(f"predicted stars (ridge): MAE {self.stars['ridge_mae_stars']:.2f} stars vs "
                         f"{self.stars['mean_mae_stars']:.2f} for the mean rating, Spearman "
                         f"{self.stars['ridge_spearman']:.2f}")
        return "\n".join(lines)


RULE = ("the rule: blended only if, on albums held out of training, the 5th percentile of its ROC-AUC (against "
        "each fold's base rate) over "
        "bootstrap resamples of the albums is above 0.5 AND its blend with the neighbour votes beats the votes alone "
        "(the votes already cover the albums you rated)")


def _decision(cv: CrossValidation, best: str) -> tuple[bool, str]:
    m, b, k = cv.metrics[best], cv.metrics["blend"], cv.metrics["knn"]
    figures = (f"{best} ROC-AUC {m['roc_auc']:.3f}, lower bound {m['auc_low']:.3f}; blend {b['roc_auc']:.3f} vs "
               f"votes alone {k['roc_auc']:.3f}")
    blend = blend_helps(cv, best)
    verdict = gate_verdict(best, blend, better_than_chance(m))
    return blend, f"{verdict} ({figures}; {RULE})." + ("" if blend else " Rating tracks of more albums helps most.")


def _classifier_card(report: ClassifierReport, lib: Any, params: dict[str, Any]) -> str:
    used = ", ".join(f"{k}: {v}" for k, v in report.used.items())
    dropped = ", ".join(f"{k}: {v}" for k, v in report.dropped.items()) or "none"
    return "\n".join([
        "# recsys rating classifier", "",
        f"- created: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- encoder_id: {lib.encoder_id}", f"- library vectors: {len(lib.keys)} x {lib.vectors.shape[1]}",
        f"- ratings used: {used}", f"- ratings dropped: {dropped}",
        f"- cross-validation: {report.n_folds} folds grouped by {report.split}, {report.n_ratings} ratings",
        f"- parameters: {json.dumps(params)}", "", "## Out-of-fold P(liked)", "", "```", report.table(), "```", "",
        f"## Decision: {report.kind}{' (blended)' if report.blend else ' (not blended)'}", "", report.reason, ""])


def train_classifier(lib: Any, tracks: Sequence[Track], models_dir: Path, tracking_uri: str | None, *,
                     min_ratings: int = 20, seed: int = 0, pseudo_until: int = 500, neighbours_k: int = 20,
                     n_folds: int = 5, search: Search | None = None, w_model: float = 0.2, w_knn: float = 0.8,
                     experiment: str = "recsys-classifier", library: Catalogue | None = None) -> ClassifierReport:
    """Cross-validate the candidates, fit the best on every label, save it under ``models_dir``, track in MLflow.

    ``lib`` has ``keys``, ``vectors`` (N, D L2-normalised float32) and ``encoder_id``; ``search`` finds neighbours
    (default: exact search over ``lib.vectors``); ``tracking_uri`` None tracks nothing. ``tracks`` and ``library``
    as for :func:`recsys.recommender.labels.collect_labels`.
    """
    started = time.perf_counter()
    vectors = np.asarray(lib.vectors, dtype=np.float32)
    labels = collect_labels(lib.keys, tracks, pseudo_until, library)
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
    liked = labels.liked[labels.explicit]
    if liked.min() == liked.max():
        side = "4 stars or more" if liked[0] else "3 stars or less"
        raise ClassifierError(f"all {n_explicit} ratings are {side}: the classifier learns what you like from the "
                              "difference, so rate some tracks on the other side too")
    hoods = neighbourhoods(search or exact_search(vectors), vectors, labels.rows, neighbours_k)
    cv = cross_validate(vectors, labels, hoods, seed, n_folds)
    best = cv.best()
    cv.add_blend(best, w_model, w_knn, seed)
    blend, reason = _decision(cv, best)
    log.info(reason)

    arrays = fit_vector_model(best, vectors, labels, seed)
    stars = arrays if best == "ridge" else fit_vector_model("ridge", vectors, labels, seed)
    arrays = {**arrays, "stars_coef": stars["coef"], "stars_bias": stars["bias"],
              "rated_vectors": vectors[labels.rows[labels.explicit]]}
    info: dict[str, Any] = {"kind": best, "blend": blend, "encoder_id": lib.encoder_id,
                            "verdict": gate_verdict(best, blend, better_than_chance(cv.metrics[best])),
                            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "metrics": cv.metrics, "stars": cv.stars, "reason": reason, "used": labels.used,
                            "dropped": labels.dropped, "split": cv.how, "folds": cv.n_folds}
    model = RatingModel(best, arrays, info)
    report = ClassifierReport(kind=best, blend=blend, n_ratings=cv.n_ratings, n_folds=cv.n_folds, used=labels.used,
                         dropped=labels.dropped, metrics=cv.metrics, stars=cv.stars, reason=reason, run_id=None,
                         seconds=0.0, split=cv.how)
    files = save(Path(models_dir), model)
    report.files = [str(f) for f in files]
    if tracking_uri is not None:
        from recsys.tracking import mlflow_run

        params = {"seed": seed, "pseudo_until": pseudo_until, "neighbours_k": neighbours_k, "n_folds": n_folds,
                  "encoder_id": lib.encoder_id, "n_tracks": len(lib.keys), "dim": int(vectors.shape[1])}
        with mlflow_run(Path(models_dir).parent, experiment, f"classifier-{best}", params,
                        configured_uri=tracking_uri, tags={"stage": "classifier", "kind": best}) as run:
            run.log_metrics({f"{row.replace(' ', '_')}.{name}": value for row, values in cv.metrics.items()
                             for name, value in values.items() if not math.isnan(value)})
            run.log_metrics({"blend": float(blend), "n_ratings": cv.n_ratings,
                             **{k: v for k, v in cv.stars.items() if not math.isnan(v)}})
            for f in files:
                run.log_artifact(f)
            run.log_text(_classifier_card(report, lib, params), "model_card.md")
            report.run_id = run.run_id
    report.seconds = time.perf_counter() - started
    return report
