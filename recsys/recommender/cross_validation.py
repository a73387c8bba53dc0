"""Grouped cross-validation of the rating models, and the rule that says whether the best one beats chance.

Every candidate is scored on the same folds (whole albums and artists held out, see ``labels.grouped_folds``): each
explicit rating is predicted once, by a model fit without its album and artist; the out-of-fold predictions give
ROC-AUC of liked vs not, log-loss and Brier score, next to the base rate (each training fold's share of liked).
ROC-AUC is of each prediction against its own fold's base rate, ``logit p - logit base rate``: a fold that holds
out a liked album trains on fewer liked ratings, so every model's predictions for it sit lower, and pooled over
folds that shift alone can order the held-out ratings (backwards, far below 0.5 for every model, on a real library
whose ratings lie in four soundtracks). So the gate asks what a model adds to the share of liked it was trained
on; the base rate scores 0.5 by construction, and its pooled figure is kept (``pooled_auc``) for the table's note
(``prior_note``). Hyper-parameters (the L2 strength) are chosen inside each training fold by an
inner grouped CV, never on the fold that scores them.

Better than chance. ROC-AUC is a ranking of the held-out tracks; its uncertainty comes from which albums happened
to be rated, so the bound resamples GROUPS: the 5th percentile of ROC-AUC over 500 seeded bootstrap resamples of the
held-out groups. A model is "clearly better than chance" when that lower bound exceeds 0.5. It is blended into
playlists only when, in addition, its blend with the neighbour votes (the playlist's weights) ranks the held-out
ratings better than the votes alone (``blend_helps``); otherwise the playlist ranks by the votes and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from recsys.recommender import models
from recsys.recommender.labels import Labels, group_ids, grouped_folds
from recsys.recommender.neighbours import Neighbourhoods, evidence_weights, vote

VECTOR_KINDS = ("logistic", "ridge", "mlp")
KINDS = (*VECTOR_KINDS, "knn", "base rate")
BOOTSTRAP, BOUND_QUANTILE, CHANCE = 500, 0.05, 0.5
INNER_FOLDS = 3


def rankdata(x: np.ndarray) -> np.ndarray:
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


def roc_auc(score: np.ndarray, liked: np.ndarray) -> float:
    """P(a liked track scores above a not-liked one), ties half; NaN with one class only."""
    liked = np.asarray(liked, dtype=bool)
    n_pos, n_neg = int(liked.sum()), int((~liked).sum())
    if not n_pos or not n_neg:
        return math.nan
    r = rankdata(np.asarray(score, dtype=np.float64))
    return float((r[liked].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_lower_bound(score: np.ndarray, liked: np.ndarray, groups: np.ndarray, seed: int) -> float:
    """5th percentile of ROC-AUC over bootstrap resamples of whole groups (NaN when it cannot be computed)."""
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in unique]
    values = []
    for _ in range(BOOTSTRAP):
        pick = np.concatenate([members[i] for i in rng.integers(0, len(unique), len(unique))])
        value = roc_auc(score[pick], liked[pick])
        if not math.isnan(value):
            values.append(value)
    return float(np.quantile(values, BOUND_QUANTILE)) if len(values) >= BOOTSTRAP // 2 else math.nan


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1.0 - p))


def probability_metrics(p: np.ndarray, liked: np.ndarray, groups: np.ndarray, seed: int,
                        prior: np.ndarray | None = None) -> dict[str, float]:
    """ROC-AUC (and its grouped-bootstrap lower bound) of ``p`` against ``prior`` (each prediction's training fold's
    base rate: ``logit p - logit prior``; None: of ``p`` itself), ``pooled_auc`` of ``p`` itself, log-loss, Brier."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(liked, dtype=np.float64)
    lift = p if prior is None else logit(p) - logit(prior)
    return {"roc_auc": roc_auc(lift, y), "auc_low": auc_lower_bound(lift, y, groups, seed),
            "pooled_auc": roc_auc(p, y),
            "log_loss": float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()),
            "brier": float(((p - y) ** 2).mean()), "p_std": float(p.std())}


def rating_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Predicted stars against true stars (both in [0, 1]): MAE in stars and Spearman."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    rp, rt = rankdata(pred), rankdata(true)
    spearman = 0.0 if rp.std() == 0 or rt.std() == 0 else float(np.corrcoef(rp, rt)[0, 1])
    return {"mae_stars": float(np.abs(pred - true).mean() * 5), "spearman": spearman}


def _inner_lambda(kind: str, x: np.ndarray, labels: Labels, seed: int) -> float:
    """The L2 strength with the lowest inner grouped-CV loss (log-loss of liked, or squared error of the rating)."""
    folds, how = grouped_folds(labels, INNER_FOLDS, seed + 1)
    if how.startswith("track") or len(folds) < 2:
        return models.LAMBDAS[len(models.LAMBDAS) // 2]
    y, t, w = labels.liked, labels.targets.astype(np.float64), labels.weights.astype(np.float64)
    losses = []
    for lam in models.LAMBDAS:
        loss = 0.0
        for train, val in folds:
            if kind == "logistic":
                coef, bias = models.fit_logistic(x[train], y[train], w[train], lam)
                p = np.clip(models.sigmoid(x[val] @ coef + bias), 1e-6, 1 - 1e-6)
                loss += float(-(y[val] * np.log(p) + (1 - y[val]) * np.log(1 - p)).sum())
            else:
                coef, bias = models.fit_ridge(x[train], t[train], w[train], lam)
                loss += float(((x[val] @ coef + bias - t[val]) ** 2).sum())
        losses.append(loss)
    return models.LAMBDAS[int(np.argmin(losses))]


def fit_vector_model(kind: str, vectors: np.ndarray, labels: Labels, seed: int) -> dict[str, np.ndarray]:
    """Fit one candidate on ``labels`` (L2 strength by inner grouped CV); the arrays ``models.probability`` reads."""
    x = np.asarray(vectors[labels.rows], dtype=np.float64)
    y, w = labels.liked, labels.weights.astype(np.float64)
    if kind == "mlp":
        return models.fit_mlp(x.astype(np.float32), y, w, seed)
    lam = _inner_lambda(kind, x, labels, seed)
    if kind == "logistic":
        coef, bias = models.fit_logistic(x, y, w, lam)
        return {"coef": coef, "bias": np.float32(bias), "lambda": np.float32(lam)}
    coef, bias = models.fit_ridge(x, labels.targets, w, lam)
    a, b = models.fit_platt(x @ coef + bias, y, w)
    return {"coef": coef, "bias": np.float32(bias), "platt_a": np.float32(a), "platt_b": np.float32(b),
            "lambda": np.float32(lam)}


@dataclass
class CrossValidation:
    """Out-of-fold predictions of every candidate over the explicit ratings, and their metrics."""

    how: str
    n_folds: int
    n_ratings: int
    metrics: dict[str, dict[str, float]]
    stars: dict[str, float]  # the ridge's predicted stars vs the true ones, next to the mean rating
    oof: dict[str, np.ndarray] = field(repr=False)
    groups: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))  # of the scored ratings
    liked: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def add_blend(self, kind: str, w_model: float, w_knn: float, seed: int) -> None:
        """The out-of-fold blend of ``kind`` with the neighbour votes, as the playlist would weigh them: row 'blend'."""
        p = (w_model * self.oof[kind] + w_knn * self.oof["knn"]) / (w_model + w_knn)
        self.oof["blend"] = p
        self.metrics["blend"] = probability_metrics(p, self.liked, self.groups, seed, self.oof.get("base rate"))

    def best(self) -> str:
        """The vector model with the highest out-of-fold ROC-AUC (lowest log-loss on a tie)."""
        def key(kind: str) -> tuple[float, float]:
            m = self.metrics[kind]
            auc = m["roc_auc"] if not math.isnan(m["roc_auc"]) else -1.0
            return (auc, -m["log_loss"])

        return max((k for k in VECTOR_KINDS if k in self.metrics), key=key)


def cross_validate(vectors: np.ndarray, labels: Labels, hoods: Neighbourhoods, seed: int, n_folds: int = 5,
                   kinds: tuple[str, ...] = VECTOR_KINDS) -> CrossValidation:
    """Grouped K-fold CV of ``kinds``, the neighbour votes ('knn') and the base rate, on the same folds.

    ``hoods`` are the neighbourhoods of every label's row (as ``neighbours.neighbourhoods`` finds them); a fold's
    votes come from its training labels alone. They are the votes through the index only: the album and artist
    votes of the playlist have nothing to say here, since a fold holds out whole albums and artists.
    """
    folds, how = grouped_folds(labels, n_folds, seed)
    n = len(vectors)
    oof = {k: np.full(len(labels.rows), np.nan) for k in (*kinds, "knn", "base rate")}
    stars = np.full(len(labels.rows), np.nan)
    mean_stars = np.full(len(labels.rows), np.nan)
    for train, val in folds:
        part = labels.subset(train)
        xv = vectors[labels.rows[val]]
        for kind in kinds:
            arrays = fit_vector_model(kind, vectors, part, seed)
            oof[kind][val] = models.probability(kind, arrays, xv)
            if kind == "ridge":
                stars[val] = np.clip(xv @ arrays["coef"] + arrays["bias"], 0.0, 1.0)
        p, _ = vote(Neighbourhoods(hoods.sims[train], hoods.rows[train]), part.rows, part.liked,
                    evidence_weights(part), n)
        oof["knn"][val] = p[labels.rows[val]]
        explicit = part.liked[part.explicit]
        oof["base rate"][val] = float(explicit.mean()) if len(explicit) else 0.5
        mean_stars[val] = float(part.targets[part.explicit].mean())
    scored = labels.explicit & ~np.isnan(oof["knn"])
    liked = labels.liked[scored]
    groups = group_ids(labels)[scored]
    prior = oof["base rate"][scored]  # each rating's training fold's share of liked: what every ROC-AUC is against
    table = {k: probability_metrics(v[scored], liked, groups, seed, prior) for k, v in oof.items()}
    star_table: dict[str, float] = {}
    if "ridge" in kinds:
        true = labels.targets[scored]
        star_table = {**{f"ridge_{k}": v for k, v in rating_metrics(stars[scored], true).items()},
                      "mean_mae_stars": rating_metrics(mean_stars[scored], true)["mae_stars"]}
    return CrossValidation(how=how, n_folds=len(folds), n_ratings=int(scored.sum()), metrics=table, stars=star_table,
                           oof={k: v[scored] for k, v in oof.items()}, groups=groups, liked=liked)


def prior_note(metrics: dict[str, dict[str, float]]) -> str | None:
    """A line for the table when the base rate's pooled ROC-AUC is far from 0.5, else None.

    Folds that hold out whole albums change the share of liked ratings each model is trained on: a fold holding
    out a liked album trains on fewer liked ones. Pooled, that share alone would order the out-of-fold predictions
    (backwards on the real library of the module's docstring); the table's ROC-AUC takes it out, and the note says
    why the base rate's row reads 0.5 and what the pooled figure was.
    """
    auc = metrics.get("base rate", {}).get("pooled_auc", math.nan)
    if math.isnan(auc) or abs(auc - CHANCE) < 0.1:
        return None
    way = "backwards" if auc < CHANCE else "forwards"
    return (f"note: ROC-AUC here is each prediction against its fold's base rate: each fold holds out whole albums, "
            "which changes the share of liked ratings the models train on, and pooled, that share alone orders the "
            f"held-out ratings {way} (the base rate's pooled ROC-AUC is {auc:.3f}); rate tracks of more albums to "
            "even it out")


def better_than_chance(metrics: dict[str, float]) -> bool:
    """The grouped-bootstrap 5th percentile of out-of-fold ROC-AUC is above 0.5."""
    low = metrics.get("auc_low", math.nan)
    return not math.isnan(low) and low > CHANCE


# true of every list it is printed for: the voters are your ratings in a taste playlist, the seeds in `--seed` and radio
VOTES_ALONE = "playlists rank by the neighbour votes alone"


def gate_verdict(kind: str, blended: bool, clear: bool = True) -> str:
    """The classifier gate's decision in words, the one wording every command prints: `train-classifier` (its
    reason), `playlist` (its note) and `eval --playlist` (per split), so that they can never seem to disagree.

    ``clear``: the model is clearly better than chance (``better_than_chance``); it matters only when not blended.
    """
    if blended:
        return f"{kind} kept and blended with the neighbour votes"
    why = "does not improve on the neighbour votes" if clear else "is not clearly better than chance"
    return f"{kind} {why} on albums it never saw: not blended, {VOTES_ALONE}"


def blend_helps(cv: CrossValidation, kind: str) -> bool:
    """The rule: ``kind`` is clearly better than chance on albums it never saw, AND its blend with the neighbour votes
    ranks those held-out ratings better than the votes alone (out-of-fold ROC-AUC of 'blend' above 'knn').

    Why albums held out: the album and artist votes already recommend the unrated rest of an album you rated; what
    the classifier can add is a judgement of albums you never rated, and that is what these folds ask. Scoring it on
    tracks of albums it was trained on would reward recognising the album, which the votes do anyway.
    """
    blend, knn = cv.metrics.get("blend", {}), cv.metrics.get("knn", {})
    return (better_than_chance(cv.metrics[kind])
            and blend.get("roc_auc", math.nan) > knn.get("roc_auc", math.nan))
