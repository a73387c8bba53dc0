"""The rating models, fit and run in numpy (the MLP alone trains in torch, and runs in numpy too).

Every model outputs the probability that the owner LIKES a track (4 stars and up), the scale the neighbour votes
use too, so the playlist's blend means the same whatever model or encoder made it:

- ``logistic``: L2-regularised logistic regression of liked on the z-scored vector (Newton's method);
- ``ridge``: ridge regression of the rating on the z-scored vector; its output turned into a probability by a
  one-dimensional logistic fit (Platt scaling) on the training ratings;
- ``mlp``: the former D -> 64 -> 1 network (ReLU, dropout, AdamW), trained on liked with BCE for a fixed number of
  epochs (no early stopping: nothing is chosen on the data that scores it);
- ``knn``: the neighbour votes of ``recsys.recommender.neighbours`` (computed by the ranking, not stored here).

A ridge regression of the rating is fit alongside whatever is chosen: it is the "predicted stars" that
``--explain``, ``--json`` and ``--min-rating`` show and use.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LAMBDAS = (1.0, 10.0, 100.0)  # L2 strengths tried (inner grouped CV), in units of "ratings' worth"
MLP_EPOCHS, MLP_HIDDEN, MLP_DROPOUT, MLP_LR, MLP_WEIGHT_DECAY, MLP_BATCH = 60, 64, 0.2, 3e-3, 1e-2, 64
MLP_MAX_STEPS = 600  # large rating sets train fewer epochs: 5,000 ratings x 60 epochs made train-classifier 2 min
NEWTON_STEPS = 30


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return (x - mean) / std, mean, std


def _fold_scaling(coef: np.ndarray, bias: float, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights on z-scores -> weights on the raw vector (so inference is one dot product)."""
    raw = coef / std
    return raw.astype(np.float32), float(bias - raw @ mean)


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression by Newton's method; (coef, bias) on the raw vectors. The bias is unpenalised."""
    z, mean, std = _standardise(np.asarray(x, dtype=np.float64))
    n, d = z.shape
    a = np.hstack([z, np.ones((n, 1))])
    penalty = np.full(d + 1, lam, dtype=np.float64)
    penalty[-1] = 0.0
    p0 = float(np.clip(np.average(y, weights=w), 1e-3, 1 - 1e-3))
    theta = np.zeros(d + 1)
    theta[-1] = math.log(p0 / (1 - p0))
    for _ in range(NEWTON_STEPS):
        p = sigmoid(a @ theta)
        grad = a.T @ (w * (p - y)) + penalty * theta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return _fold_scaling(theta[:-1], theta[-1], mean, std)


def fit_ridge(x: np.ndarray, t: np.ndarray, w: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Weighted ridge regression of ``t`` on the z-scored vectors; (coef, bias) on the raw vectors."""
    z, mean, std = _standardise(np.asarray(x, dtype=np.float64))
    t = np.asarray(t, dtype=np.float64)
    centre = float(np.average(t, weights=w))
    zw = z * w[:, None]
    coef = np.linalg.solve(z.T @ zw + lam * np.eye(z.shape[1]), zw.T @ (t - centre))
    return _fold_scaling(coef, centre, mean, std)


def fit_platt(score: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(a, b) of P(liked) = sigmoid(a * score + b), a weighted 1-D logistic fit (lightly regularised)."""
    coef, bias = fit_logistic(score[:, None], y, w, lam=1e-2)
    return float(coef[0]), float(bias)


def fit_mlp(x: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int, epochs: int | None = None
            ) -> dict[str, np.ndarray]:
    """The D -> 64 -> 1 network on liked (BCE with logits, (B,) against (B,)); numpy weights back.

    Epochs are fixed in advance (never early-stopped on the data that scores them): 60, or fewer when that would
    pass ``MLP_MAX_STEPS`` optimiser steps.
    """
    import torch

    if epochs is None:
        steps_per_epoch = max(1, math.ceil(len(x) / MLP_BATCH))
        epochs = max(5, min(MLP_EPOCHS, MLP_MAX_STEPS // steps_per_epoch))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-unit net: thread hand-offs cost more than the arithmetic (10x on a busy CPU)
    try:
        return _train_mlp(torch, x, y, w, seed, epochs)
    finally:
        torch.set_num_threads(threads)


def _train_mlp(torch: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int, epochs: int
               ) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    dim = x.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(dim, MLP_HIDDEN), torch.nn.ReLU(), torch.nn.Dropout(MLP_DROPOUT),
                              torch.nn.Linear(MLP_HIDDEN, 1))
    mean = float(np.clip(np.average(y, weights=w), 0.02, 0.98))
    with torch.no_grad():
        net[3].bias.fill_(math.log(mean / (1 - mean)))  # start at the base rate
    scale = math.sqrt(dim)  # L2-normalised rows have entries ~1/sqrt(D): unit size keeps the init well conditioned
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32) * scale)
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    wt = torch.from_numpy(np.asarray(w, dtype=np.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(MLP_BATCH):
            logits = net(xt[idx]).squeeze(-1)
            assert logits.shape == yt[idx].shape  # (B,) vs (B,): a (B, 1) broadcast once trained a constant
            loss = (loss_fn(logits, yt[idx]) * wt[idx]).sum() / wt[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    state = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    return {"w1": state["0.weight"] * np.float32(scale), "b1": state["0.bias"], "w2": state["3.weight"][0],
            "b2": np.float32(state["3.bias"][0])}


def mlp_probability(arrays: dict[str, np.ndarray], x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk):
        hidden = np.maximum(x[start:start + chunk] @ arrays["w1"].T + arrays["b1"], 0.0)
        out[start:start + chunk] = sigmoid(hidden @ arrays["w2"] + arrays["b2"])
    return out


def linear_probability(arrays: dict[str, np.ndarray], kind: str, x: np.ndarray) -> np.ndarray:
    """P(liked) of a logistic or a Platt-scaled ridge model."""
    score = x @ arrays["coef"] + arrays["bias"]
    if kind == "ridge":
        score = arrays["platt_a"] * score + arrays["platt_b"]
    return sigmoid(score).astype(np.float32)


def probability(kind: str, arrays: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """P(liked) of each row of ``x`` under a fitted vector model (logistic, ridge or mlp)."""
    if kind == "mlp":
        return mlp_probability(arrays, x)
    return linear_probability(arrays, kind, x)
