"""`recsys similar`: find the query track in the index snapshot and return its nearest neighbours.

Imports neither torch nor lancedb (start-up time): the snapshot under ``<home>/ann`` holds all a query needs. It reads
the last complete snapshot and never rebuilds it (only writers do, under the home lock); when the table moved on
since, the result says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys.config import Settings
from recsys.index.ann import LibraryVectors, Searcher, current_snapshot
from recsys.index.lookup import Hit, hit, resolve_query
from recsys.library.filters import Filter, candidate_mask, parse, snapshot_column

DUPLICATE_COSINE = 0.99999


@dataclass
class SimilarResult:
    query: Hit
    neighbours: list[Hit]
    note: str | None = None  # why the index may lag the table (it is served anyway: always whole)


def find_similar(settings: Settings, query: str, k: int = 10, where: Sequence[str] = ()) -> SimilarResult:
    """The k tracks nearest to the query track, excluding it and exact copies of it (same content, same vector);
    with ``where`` (filter terms), only the tracks that match them."""
    flt = parse(where)
    lib = current_snapshot(settings.home_path, settings.index)
    row = resolve_query(lib, query)
    if flt:
        return _filtered(settings, lib, row, k, flt)
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


def _filtered(settings: Settings, lib: LibraryVectors, row: int, k: int, flt: Filter) -> SimilarResult:
    """Exact search over the rows the filter keeps: a filter may keep few rows far from the query, which an
    approximate search of the whole index would not reach (one pass over the kept vectors, about 10 ms at 100,000)."""
    tracks = []
    if flt.needs_taste:  # rating: or played: terms read the owner's ratings and plays, live
        from recsys.library.sources import load_library

        tracks = load_library(settings.library.db, settings.library.folders, settings=settings).tracks
    kept = np.flatnonzero(candidate_mask(flt, lib.keys, snapshot_column(lib), tracks))
    vectors = np.asarray(lib.vectors, dtype=np.float32)
    scores = vectors[kept] @ vectors[row] if len(kept) else np.zeros(0, dtype=np.float32)
    query_content = lib.row(row)["content_id"]
    hits: list[Hit] = []
    for i in np.argsort(-scores, kind="stable"):
        r, s = int(kept[i]), float(scores[i])
        if r != row and s < DUPLICATE_COSINE and lib.row(r)["content_id"] != query_content:
            hits.append(hit(lib, r, s))
            if len(hits) == k:
                break
    note = lib.behind
    if len(hits) < k:
        note = "; ".join(filter(None, [note, f"only {len(hits)} tracks match --where '{flt}'"]))
    return SimilarResult(query=hit(lib, row, 1.0), neighbours=hits, note=note)
