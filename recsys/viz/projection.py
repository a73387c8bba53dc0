"""2-D projections of the track vectors, for the library map.

``pca``: the plane of the two directions the vectors vary most along (numpy SVD of the D x D covariance: ~0.1 s at
100,000 x 200). It keeps the large-scale shape but folds distant groups onto each other. ``neighbours``: starts from
PCA and moves every point toward its nearest tracks in the full space and away from random others (a small
UMAP-like layout: attraction along the k-nearest-neighbour graph, repulsion by negative sampling), so tracks that
sound alike end up side by side. Both are deterministic (fixed seed). Figures: benchmarks/RESULTS.md "Library map".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # queries, k -> (cosines, rows), best first
METHODS = ("neighbours", "pca")


def pca(vectors: np.ndarray) -> np.ndarray:
    """(N, 2) coordinates on the first two principal axes; each axis's sign fixed (largest loading positive)."""
    x = np.asarray(vectors, dtype=np.float64)
    if len(x) == 0:
        return np.zeros((0, 2), np.float32)
    x = x - x.mean(axis=0)
    cov = x.T @ x
    values, vecs = np.linalg.eigh(cov)
    axes = vecs[:, np.argsort(values)[::-1][:2]]
    if axes.shape[1] < 2:
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    axes *= np.where(axes[np.argmax(np.abs(axes), axis=0), [0, 1]] < 0, -1.0, 1.0)
    return (x @ axes).astype(np.float32)


def neighbour_layout(vectors: np.ndarray, search: Search, k: int = 10, epochs: int = 60, negatives: int = 3,
                     seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates where each track sits near its ``k`` nearest tracks (found by ``search``).

    Vectorised SGD over all edges at once per epoch (numpy; bincount sums the moves per track): attraction
    ``-2 d / (1 + d^2)`` along each k-NN edge, repulsion ``2 d / ((0.01 + d^2)(1 + d^2))`` from ``negatives``
    random tracks per edge, the step shrinking linearly to zero (UMAP's forces with a = b = 1).
    """
    n = len(vectors)
    y = pca(vectors).astype(np.float64)
    if n < 3:
        return y.astype(np.float32)
    y = 10.0 * (y - y.mean(axis=0)) / (np.abs(y).max() or 1.0)
    k = min(k, n - 1)
    _, rows = search(np.ascontiguousarray(vectors, dtype=np.float32), k + 1)
    heads = np.repeat(np.arange(n), k + 1)
    tails = rows.reshape(-1)
    keep = (tails >= 0) & (tails != heads)
    heads, tails = heads[keep], tails[keep]
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        rate = 1.0 - epoch / epochs
        d = y[heads] - y[tails]
        dist2 = (d * d).sum(axis=1, keepdims=True)
        move = np.clip(-2.0 * d / (1.0 + dist2), -4, 4) * rate
        y += _scatter(heads, move, n) - _scatter(tails, move, n)
        others = rng.integers(0, n, size=len(heads) * negatives)
        h = np.repeat(heads, negatives)
        d = y[h] - y[others]
        dist2 = (d * d).sum(axis=1, keepdims=True)
        push = np.clip(2.0 * d / ((0.01 + dist2) * (1.0 + dist2)), -4, 4) * rate
        y += _scatter(h, push, n)
    return y.astype(np.float32)


def _scatter(rows: np.ndarray, moves: np.ndarray, n: int) -> np.ndarray:
    """The moves summed per track, (n, 2): np.bincount is ~20x faster than np.add.at."""
    return np.stack([np.bincount(rows, weights=moves[:, j], minlength=n) for j in range(2)], axis=1)


def project(vectors: np.ndarray, method: str = "neighbours", search: Search | None = None) -> np.ndarray:
    """The map's coordinates by ``method`` (see the module docstring); ``neighbours`` needs the index's search."""
    if method == "pca":
        return pca(vectors)
    if method == "neighbours":
        if search is None:
            raise ValueError("the neighbour layout needs a search")
        return neighbour_layout(vectors, search)
    raise ValueError(f"unknown projection {method!r}: choose one of {', '.join(METHODS)}")


def neighbourhood_kept(vectors: np.ndarray, points: np.ndarray, search: Search, k: int = 10,
                       sample: int = 2000, seed: int = 0) -> float:
    """The share of each track's ``k`` nearest tracks (full space) that are among its ``k`` nearest on the map,
    averaged over ``sample`` tracks: 1.0 keeps every neighbourhood, about k / N is chance."""
    import faiss

    n = len(vectors)
    rows = np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False)
    _, high = search(np.ascontiguousarray(vectors[rows], dtype=np.float32), k + 1)
    pts = np.ascontiguousarray(points, dtype=np.float32)
    _, low = faiss.knn(pts[rows], pts, k + 1)
    kept = [len((set(h) - {r}) & (set(lo) - {r})) / k for r, h, lo in zip(rows, high, low, strict=True)]
    return float(np.mean(kept))
