"""`recsys similar`: find the query track in the index snapshot and return its nearest neighbours.

Imports neither torch nor lancedb (start-up time): the snapshot under ``<home>/ann`` holds all a query needs. It reads
the last complete snapshot and never rebuilds it (only writers do, under the home lock); when the table moved on
since, the result says so.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass
from urllib.parse import unquote, urlsplit

import numpy as np

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.index.ann import SEARCH_COLUMN, LibraryVectors, Searcher, current_snapshot
from recsys.library.text import search_key, search_label
from recsys.library.track import display_label

DUPLICATE_COSINE = 0.99999


class TrackNotFound(RecsysError):
    """The query matches no embedded track."""


class AmbiguousQuery(RecsysError):
    """The query text matches several tracks; the message lists them. Exit code 2."""

    exit_code = 2


@dataclass
class Hit:
    key: str
    path: str
    start_s: float
    score: float
    artist: str
    title: str
    album: str

    @property
    def label(self) -> str:
        return display_label(self.artist, self.title, self.path, self.start_s)

    def as_json(self) -> dict:
        return asdict(self)


@dataclass
class SimilarResult:
    query: Hit
    neighbours: list[Hit]
    note: str | None = None  # why the index may lag the table (it is served anyway: always whole)


def _hit(lib: LibraryVectors, row: int, score: float) -> Hit:
    m = lib.row(row)
    return Hit(key=m["key"], path=m["path"], start_s=float(m.get("start_s") or 0.0), score=float(score),
               artist=m.get("artist") or "", title=m.get("title") or "", album=m.get("album") or "")


def _as_path(query: str) -> str | None:
    if query.startswith("file://"):
        parts = urlsplit(query)
        return unquote(parts.path)
    if os.sep in query or os.path.exists(query):
        return os.path.abspath(os.path.expanduser(query))
    return None


def resolve_query(lib: LibraryVectors, query: str) -> int:
    """The row of the track TRACK names: a track key as recsys prints it (``path``, or ``path@80.000`` for a CUE
    track), a path or file:// URI, else 'artist - title' text (loose)."""
    if "@" in query:
        keys = lib.values("key")
        wanted = {query, os.path.abspath(os.path.expanduser(query))}
        rows = [i for i, key in enumerate(keys) if key in wanted]
        if len(rows) == 1:
            return rows[0]
    path = _as_path(query)
    if path is not None:
        paths = lib.values("path")
        real = os.path.realpath(path)
        # realpath() of every row costs ~30 us each (3 s at 100k tracks): only when no path matches as given
        rows = ([i for i, p in enumerate(paths) if p in (path, real)]
                or [i for i, p in enumerate(paths) if os.path.realpath(p) == real])
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:  # several tracks cut from one file (CUE): the user must pick one by name
            return _choose(lib, rows, query)
        if query.startswith("file://") or os.path.exists(path):
            raise TrackNotFound(f"{path} is not in the index: run `recsys embed` (is it in your library?)")
    return _by_text(lib, query)


def _labels(lib: LibraryVectors) -> list[str]:
    if SEARCH_COLUMN in lib.column_names:  # computed when the snapshot was built
        return lib.values(SEARCH_COLUMN)
    return [search_label(a, t, p) for a, t, p in zip(lib.values("artist"), lib.values("title"), lib.values("path"),
                                                      strict=True)]


def _by_text(lib: LibraryVectors, query: str) -> int:
    wanted = search_key(query)
    if not wanted:
        raise TrackNotFound(f"'{query}' names no track: give a path, a file:// URI or 'artist - title'")
    labels = _labels(lib)
    exact = [i for i, label in enumerate(labels) if label == wanted]
    if len(exact) == 1:
        return exact[0]
    tokens = wanted.split()
    rows = exact or [i for i, label in enumerate(labels) if all(t in label.split() for t in tokens)]
    if not rows:
        rows = [i for i, label in enumerate(labels) if wanted in label]
    if not rows:
        close = difflib.get_close_matches(wanted, labels, n=5, cutoff=0.6)
        rows = sorted({i for i, label in enumerate(labels) if label in close})
    if not rows:
        raise TrackNotFound(f"no embedded track matches '{query}': try 'artist - title' or a file path")
    if len(rows) == 1:
        return rows[0]
    return _choose(lib, rows, query)


def _choose(lib: LibraryVectors, rows: list[int], query: str) -> int:
    shown = "; ".join(f"{_hit(lib, i, 0).label} [{lib.row(i)['key']}]" for i in rows[:8])
    more = f" and {len(rows) - 8} more" if len(rows) > 8 else ""
    raise AmbiguousQuery(f"'{query}' matches {len(rows)} tracks: {shown}{more}. Give one of the keys in brackets, "
                         "or more words")


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
            _hit(lib, i, s)
            for i, s in found
            if i != row and s < DUPLICATE_COSINE and lib.row(i)["content_id"] != query_content
        ]
        if len(hits) >= k or want >= len(lib):
            break
        want *= 4  # many copies of the query: look further
    return SimilarResult(query=_hit(lib, row, 1.0), neighbours=hits[:k], note=lib.behind)
