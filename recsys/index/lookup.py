"""Which track a person means: a track key, a path, a file:// URI or loose 'artist - title' text, resolved against the
index snapshot (`recsys similar TRACK`, `recsys playlist --seed TRACK`).

Text is matched by the rules of :func:`recsys.library.text.search_key`: exact label first, then every word, then a
substring, then close spellings; several matches are an :class:`AmbiguousQuery` listing them, never a guess.
Imports neither torch nor lancedb.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass

import pyarrow as pa

from recsys.errors import RecsysError
from recsys.index.ann import SEARCH_COLUMN, LibraryVectors, arrow_strings, row_numbers
from recsys.library.text import search_key, search_label
from recsys.library.track import Labelled
from recsys.library.uri import uri_to_path


class TrackNotFound(RecsysError):
    """The query matches no embedded track."""


class AmbiguousQuery(RecsysError):
    """The query text matches several tracks; the message lists them. Exit code 2."""

    exit_code = 2


@dataclass
class Hit(Labelled):
    """A track of the snapshot as a result row: the query itself, or a neighbour with its cosine ``score``."""

    key: str
    path: str
    start_s: float
    score: float
    artist: str
    title: str
    album: str

    def as_json(self) -> dict:
        return asdict(self)


def hit(lib: LibraryVectors, row: int, score: float) -> Hit:
    """Row ``row`` of the snapshot as a :class:`Hit`."""
    m = lib.row(row)
    return Hit(key=m["key"], path=m["path"], start_s=float(m.get("start_s") or 0.0), score=float(score),
               artist=m.get("artist") or "", title=m.get("title") or "", album=m.get("album") or "")


def _names_a_file(query: str) -> bool:
    """Whether ``query`` is taken for a path or file:// URI before it is taken for text."""
    return query.startswith("file://") or os.sep in query or os.path.exists(query)


def first_column(query: str) -> str:
    """The snapshot column :func:`resolve_query` reads first for ``query`` (the key, the path or the label column):
    a reader has it read while the index loads (``recsys.index.ann.load_snapshot``'s ``read_ahead``)."""
    if "@" in query:
        return "key"
    return "path" if _names_a_file(query) else SEARCH_COLUMN


def _as_path(query: str) -> str | None:
    if query.startswith("file://"):
        path = uri_to_path(query)
        if path is None:
            raise TrackNotFound(f"{query} names no local file (only file:///path or file://localhost/path): give "
                                "the path of a file in your library")
        return path
    if _names_a_file(query):
        return os.path.abspath(os.path.expanduser(query))
    return None


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: bytes of another encoding (os.fsdecode)
        return False
    return True


def resolve_query(lib: LibraryVectors, query: str) -> int:
    """The row of the track TRACK names: a track key as recsys prints it (``path``, or ``path@80.000`` for a CUE
    track), a path or file:// URI, else 'artist - title' text (loose)."""
    if "@" in query:
        rows = lib.rows_with("key", {query, os.path.abspath(os.path.expanduser(query))})
        if len(rows) == 1:
            return rows[0]
    path = _as_path(query)
    if path is not None:
        real = os.path.realpath(path)
        # realpath() of every row costs ~30 us each (3 s at 100k tracks): only when no path matches as given
        rows = (lib.rows_with("path", {path, real})
                or [i for i, p in enumerate(lib.values("path")) if os.path.realpath(p) == real])
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:  # several tracks cut from one file (CUE): the user must pick one by name
            return _choose(lib, rows, query)
        if os.path.isdir(path):
            raise TrackNotFound(f"{path} is a folder, not a track: give one of its files, or 'artist - title'")
        if query.startswith("file://") or os.path.exists(path):
            if not path.isascii() and not _utf8(path):
                raise TrackNotFound(f"{path} is not in the index: its name is not valid UTF-8, which the index cannot "
                                    "hold (`recsys embed` lists such files): rename it in UTF-8")
            raise TrackNotFound(f"{path} is not in the index: run `recsys embed` (is it in your library?)")
    # a query with a '/' may still be text ('AC/DC - Back in Black'): a missing path is said only if no name matches
    return _by_text(lib, query, missing=path if path is not None else None)


def _labels(lib: LibraryVectors) -> pa.ChunkedArray:
    """Every row's :func:`search_label`, as the snapshot stores it (computed here for snapshots that predate it)."""
    if SEARCH_COLUMN in lib.column_names:  # computed when the snapshot was built
        return lib.column(SEARCH_COLUMN)
    return pa.chunked_array([arrow_strings([search_label(a, t, p, s or 0.0) for a, t, p, s in zip(
        lib.values("artist"), lib.values("title"), lib.values("path"), lib.values("start_s"), strict=True)])])


def _with_word(labels: pa.ChunkedArray, word: str) -> pa.ChunkedArray:
    """Which labels hold ``word`` as one of their words: ``word in label.split()``, for labels that
    :func:`search_key` made (words of word characters, one space between them, none at either end)."""
    import pyarrow.compute as pc

    return pc.or_(pc.or_(pc.equal(labels, arrow_strings([word])[0]), pc.starts_with(labels, pattern=word + " ")),
                  pc.or_(pc.ends_with(labels, pattern=" " + word), pc.match_substring(labels, pattern=f" {word} ")))


def _by_text(lib: LibraryVectors, query: str, missing: str | None = None) -> int:
    """The one row whose label matches ``query`` by the first rule that finds any (the label itself, every word,
    a substring, close spellings). Matched in the label column's Arrow buffers: a Python string per row costs more
    than the whole query may take at a million tracks; only close spellings, the last resort, need them."""
    import pyarrow.compute as pc

    wanted = search_key(query)
    if not wanted:
        raise TrackNotFound(f"'{query}' names no track: give a path, a file:// URI or 'artist - title'")
    labels = _labels(lib)
    exact = row_numbers(pc.equal(labels, arrow_strings([wanted])[0]))
    if len(exact) == 1:
        return exact[0]
    rows = exact
    if not rows:
        every = None
        for token in dict.fromkeys(wanted.split()):
            has = _with_word(labels, token)
            every = has if every is None else pc.and_(every, has)
        rows = row_numbers(every)
    if not rows:
        rows = row_numbers(pc.match_substring(labels, pattern=wanted))
    if not rows:
        texts = labels.to_pylist()
        close = difflib.get_close_matches(wanted, texts, n=5, cutoff=0.6)
        rows = sorted({i for i, label in enumerate(texts) if label in close})
    if not rows and missing is not None:
        raise TrackNotFound(f"{missing} does not exist, and no embedded track's name matches '{query}': check the "
                            "path, or give 'artist - title'")
    if not rows:
        raise TrackNotFound(f"no embedded track matches '{query}': try 'artist - title' or a file path")
    if len(rows) == 1:
        return rows[0]
    return _choose(lib, rows, query)


def _choose(lib: LibraryVectors, rows: list[int], query: str) -> int:
    shown = "; ".join(f"{hit(lib, i, 0).label} [{lib.row(i)['key']}]" for i in rows[:8])
    more = f" and {len(rows) - 8} more" if len(rows) > 8 else ""
    raise AmbiguousQuery(f"'{query}' matches {len(rows)} tracks: {shown}{more}. Give one of the keys in brackets, "
                         "or more words")
