"""`recsys similar`: find the query track in the index snapshot and return its nearest neighbours.

Imports neither torch nor lancedb (start-up time): the snapshot under ``<home>/ann`` holds all a query needs. It reads
the last complete snapshot and never rebuilds it (only writers do, under the home lock); when the table moved on
since, the result says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.app.output import (
    as_written,
    output_path,
    playlist_format,
    snapshot_entry,
    snapshot_inputs,
    with_fingerprints,
)
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.index.ann import LibraryVectors, Searcher, current_snapshot
from recsys.index.hubness import hub_scores, hub_search
from recsys.index.lookup import Hit, first_column, hit, resolve_query
from recsys.library.filters import Filter, parse, selected_mask, snapshot_column
from recsys.library.groups import one_recording_with, recording_key
from recsys.playlists import write_playlist


@dataclass
class SimilarResult:
    query: Hit
    neighbours: list[Hit]
    note: str | None = None  # why the index may lag the table (it is served anyway: always whole)
    path: Path | None = None  # the playlist of the neighbours, when one was asked for


def find_similar(settings: Settings, query: str, k: int = 10, where: Sequence[str] = (), out: str | None = None,
                 fmt: str | None = None, force: bool = False) -> SimilarResult:
    """The k tracks nearest to the query track, excluding it and copies of it (same content, or the same recording
    by ``recsys.library.groups``), and never two versions of one recording;
    with ``where`` (filter terms), only the tracks that match them; with ``out`` (or ``fmt``) they are also
    written as a playlist, nearest first."""
    flt = parse(where)
    chosen = playlist_format(out, fmt, settings) if out is not None or fmt else None
    lib = with_fingerprints(settings, current_snapshot(settings.home_path, settings.index,
                                                       read_ahead=[first_column(query)]))
    row = resolve_query(lib, query)
    note = lib.behind
    if flt:
        kept = _filtered(settings, lib, row, k, flt)
        if len(kept) < k:
            note = "; ".join(filter(None, [note, f"only {len(kept)} tracks match --where '{flt}'"]))
    else:
        kept = _nearest(settings, lib, row, k)
    result = SimilarResult(query=hit(lib, row, 1.0), neighbours=[hit(lib, i, s) for i, s in kept], note=note)
    if chosen:
        tracks, written_note = as_written([snapshot_entry(lib, i, s) for i, s in kept], chosen, settings)
        result.note = "; ".join(filter(None, [result.note, written_note])) or None
        result.path = write_playlist(output_path(out, settings, "similar", chosen), tracks,
                                     f"like {result.query.label}", fmt=chosen, overwrite=force,
                                     inputs=snapshot_inputs(settings, lib))
    return result


@dataclass
class SimilarToTracks:
    queries: list[Hit]  # the tracks asked about that are in the index
    neighbours: list[Hit]
    notes: list[str]


def find_similar_to_tracks(settings: Settings, keys: Sequence[str], k: int = 10) -> SimilarToTracks:
    """The k tracks nearest to several tracks together (those a beets query picks): to the one track itself, else to
    the mean of their vectors; the tracks themselves and exact copies of them left out. Keys not in the index (not
    embedded yet) are counted in a note; none in the index is an error."""
    lib = with_fingerprints(settings, current_snapshot(settings.home_path, settings.index, read_ahead=["key"]))
    wanted = list(dict.fromkeys(keys))
    found = lib.rows_with("key", wanted)  # a few rows of a million: never a {key: row} of every key
    row_of = {lib.column("key")[i].as_py(): i for i in found}
    rows = [row_of[key] for key in wanted if key in row_of]
    if not rows:
        raise RecsysError(f"none of the {len(wanted)} tracks asked about is in the index: run `recsys embed` on this "
                          "library first")
    notes = [lib.behind] if lib.behind else []
    if len(rows) < len(wanted):
        notes.append(f"{len(wanted) - len(rows)} of the {len(wanted)} tracks are not in the index (not embedded "
                     "yet?): left out")
    if len(rows) == 1:
        kept = _nearest(settings, lib, rows[0], k)
    else:
        vectors = np.asarray(lib.vectors, dtype=np.float32)
        centre = vectors[rows].mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        contents = {lib.row(r)["content_id"] for r in rows}
        kept = _top(lib, np.arange(len(vectors)), vectors @ centre, set(rows), contents, k, _hub(settings, lib))
    return SimilarToTracks([hit(lib, r, 1.0) for r in rows], [hit(lib, i, s) for i, s in kept], notes)


def _nearest(settings: Settings, lib: LibraryVectors, row: int, k: int) -> list[tuple[int, float]]:
    """(row, score) of the k nearest tracks through the index, the query and its copies left out; the score is the
    cosine, corrected for hubs (``recsys.index.hubness.hub_scores``) when ``index.hubness`` is csls."""
    searcher = Searcher(lib, settings.home_path, ef_search=settings.index.hnsw_ef_search,
                        nprobe=settings.index.ivf_nprobe, rerank=settings.index.ivf_rerank)
    hub = _hub(settings, lib)
    search = hub_search(searcher.search_arrays, hub)
    qvec = np.asarray(lib.vectors[row], dtype=np.float32)[None, :]
    query_content = lib.row(row)["content_id"]
    want = k + 1
    while True:
        cosines, rows = search(qvec, min(want, len(lib)))
        found = [(int(i), float(s)) for i, s in zip(rows[0], cosines[0], strict=True) if i >= 0]
        if hub is not None and found:  # already in CSLS order: show the score it ranks by
            hits = [i for i, _ in found]
            found = list(zip(hits, hub_scores([s for _, s in found], hits, hub, hub[row]).tolist(), strict=True))
        kept = _distinct(lib, [(i, s) for i, s in found if i != row and lib.row(i)["content_id"] != query_content],
                         [row], k)
        if len(kept) >= k or want >= len(lib):
            return kept
        want *= 4  # many copies of the query or of its neighbours: look further


def _filtered(settings: Settings, lib: LibraryVectors, row: int, k: int, flt: Filter) -> list[tuple[int, float]]:
    """Exact search over the rows the filter keeps: a filter may keep few rows far from the query, which an
    approximate search of the whole index would not reach (one pass over the kept vectors, about 10 ms at 100,000)."""
    tracks = []
    if flt.needs_taste:  # rating: or played: terms read the owner's ratings and plays, live
        from recsys.library.sources import load_library

        tracks = load_library(settings.library.db, settings.library.folders, settings=settings).tracks
    rows = np.flatnonzero(selected_mask(flt, lib.keys, snapshot_column(lib), tracks))
    vectors = np.asarray(lib.vectors, dtype=np.float32)
    scores = vectors[rows] @ vectors[row] if len(rows) else np.zeros(0, dtype=np.float32)
    return _top(lib, rows, scores, {row}, {lib.row(row)["content_id"]}, k, _hub(settings, lib))


def _hub(settings: Settings, lib: LibraryVectors) -> np.ndarray | None:
    """The snapshot's hub statistics when hubness reduction is on (``index.hubness``), else None."""
    return lib.hub if settings.index.hubness == "csls" else None


def _top(lib: LibraryVectors, rows: np.ndarray, scores: np.ndarray, queries: set[int], contents: set[str],
         k: int, hub: np.ndarray | None = None) -> list[tuple[int, float]]:
    """(row, score) of the k best-scoring ``rows`` (scored against hubs with ``hub``: ``hub_scores``), the queries
    and their copies (same content) left out."""
    if hub is not None and len(rows):
        scores = hub_scores(scores, rows, hub, float(np.mean(hub[sorted(queries)])))
    order = np.argsort(-scores, kind="stable")
    ranked = ((int(rows[i]), float(scores[i])) for i in order)
    return _distinct(lib, (p for p in ranked if p[0] not in queries and lib.row(p[0])["content_id"] not in contents),
                     sorted(queries), k)


def _distinct(lib: LibraryVectors, ranked: Iterable[tuple[int, float]], queries: Sequence[int],
              k: int) -> list[tuple[int, float]]:
    """The first k of ``ranked`` (row, score) of which no two, and none with a query, are one recording
    (``recsys.library.groups``: the same performer and title, or close vectors whose files' fingerprints agree): a
    list never holds a song and its copy."""
    kept: list[tuple[int, float]] = []
    seen = list(queries)
    recordings = {recording_key(lib.row(q).get("artist"), lib.row(q).get("title")) for q in queries} - {""}
    for r, s in ranked:
        if len(kept) == k:
            break
        recording = recording_key(lib.row(r).get("artist"), lib.row(r).get("title"))
        if (recording and recording in recordings) or one_recording_with(lib.vectors, r, seen, lib.agreement):
            continue
        kept.append((r, s))
        seen.append(r)
        if recording:
            recordings.add(recording)
    return kept
