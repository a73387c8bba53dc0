"""`recsys similar`: find the query track in the index snapshot and return its nearest neighbours.

Imports neither torch nor lancedb (start-up time): the snapshot under ``<home>/ann`` holds all a query needs. It reads
the last complete snapshot and never rebuilds it (only writers do, under the home lock); when the table moved on
since, the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.config import Settings
from recsys.index.ann import Searcher, current_snapshot
from recsys.index.lookup import Hit, hit, resolve_query

DUPLICATE_COSINE = 0.99999


@dataclass
class SimilarResult:
    query: Hit
    neighbours: list[Hit]
    note: str | None = None  # why the index may lag the table (it is served anyway: always whole)


def find_similar(settings: Settings, query: str, k: int = 10) -> SimilarResult:
    """The k tracks nearest to the query track, excluding it and exact copies of it (same content, same vector)."""
    lib = current_snapshot(settings.home_path, settings.index)
    row = resolve_query(lib, query)
    searcher = Searcher(lib, settings.home_path, ef_search=settings.index.hnsw_ef_search)
    qvec = np.asarray(lib.vectors[row], dtype=np.float32)
    query_content = lib.row(row)["content_id"]
    hits: list[Hit] = []
    want = k + 1
    while True:
        found = searcher.search(qvec, min(want, len(lib)))[0]
        hits = [
            hit(lib, i, s)
            for i, s in found
            if i != row and s < DUPLICATE_COSINE and lib.row(i)["content_id"] != query_content
        ]
        if len(hits) >= k or want >= len(lib):
            break
        want *= 4  # many copies of the query: look further
    return SimilarResult(query=hit(lib, row, 1.0), neighbours=hits[:k], note=lib.behind)
