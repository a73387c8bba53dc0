"""Hubness reduction: a few tracks are among everybody's nearest neighbours in a high-dimensional space (hubs);
CSLS (cross-domain similarity local scaling, Conneau et al. 2018, a local-scaling relative of Schnitzer et al.'s
mutual proximity, JMLR 2012) takes each candidate's own neighbourhood density off its score.

For a query x and a candidate y: ``csls(x, y) = 2 cos(x, y) - r(x) - r(y)``, where ``r(t)`` is the mean cosine of
track t to its :data:`HUB_K` nearest neighbours. For one query r(x) is a constant, so ranking by ``cos - r(y) / 2``
is the same ranking. ``r`` is one float per track, computed when the snapshot is built (one k-nearest search per
track through the index, never an N x N matrix) and stored beside the vectors (:data:`HUB_FILE`). A search asks the
index for a few times more candidates by cosine and re-ranks them; the cosines handed back stay cosines, so the
same-recording rule and the vote weights keep their meaning.

numpy only; the search is passed in (the snapshot's FAISS search).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

HUB_K = 10  # neighbours whose mean cosine is a track's density r(t)
HUB_FILE = "hub_stats.npy"
WIDEN = 4  # candidates asked of the index per result wanted, before re-ranking
CHUNK = 4096  # tracks searched together when the statistics are built

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (queries, k) -> (cosines, rows), best first


def hub_stats(vectors: np.ndarray, search: Search, k: int = HUB_K) -> np.ndarray:
    """r(t) for every row: the mean cosine to its ``k`` nearest other rows (float32, one per row)."""
    n = len(vectors)
    out = np.zeros(n, dtype=np.float32)
    if n < 2:
        return out
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(start + CHUNK, n))
        cosines, found = search(np.ascontiguousarray(vectors[rows], dtype=np.float32), min(k + 1, n))
        for q, (row, cos, hits) in enumerate(zip(rows, cosines, found, strict=True)):
            others = cos[(hits >= 0) & (hits != row)][:k]
            out[q + start] = float(others.mean()) if len(others) else 0.0
    return out


def hub_scores(cosines: np.ndarray, rows: np.ndarray, hub: np.ndarray, query_r: float) -> np.ndarray:
    """What a list shows as the score of ``rows`` for a query of density ``query_r``: half its CSLS plus ``r(x)``,
    i.e. ``cos + (r(x) - r(y)) / 2``: the cosine itself between tracks of equally dense neighbourhoods, lower for a
    hub, and in the order CSLS ranks."""
    return np.asarray(cosines, dtype=np.float64) + (float(query_r) - hub[np.asarray(rows)]) / 2


def hub_order(cosines: np.ndarray, rows: np.ndarray, hub: np.ndarray) -> np.ndarray:
    """Per query, the positions of its candidates best first by CSLS (``cos - r(y) / 2``); stable for ties."""
    rows = np.asarray(rows)
    penalty = np.where(rows >= 0, hub[np.clip(rows, 0, None)], np.inf)
    return np.argsort(-(np.asarray(cosines, dtype=np.float64) - penalty / 2), axis=1, kind="stable")


def hub_search(search: Search, hub: np.ndarray | None) -> Search:
    """``search`` re-ranked by CSLS when the snapshot has statistics (``hub``), else ``search`` itself."""
    if hub is None:
        return search

    def reranked(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        cosines, rows = search(queries, min(len(hub), k * WIDEN + HUB_K))
        order = hub_order(cosines, rows, hub)[:, :k]
        return np.take_along_axis(cosines, order, axis=1), np.take_along_axis(rows, order, axis=1)

    return reranked
