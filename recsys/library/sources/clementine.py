"""Read-only reader for Clementine and Strawberry databases: the tracks of the library and the owner's ratings.

The database belongs to the music player, which may be running and writing while we read. We open it read-only,
read everything inside one read transaction (one consistent snapshot), and never write, not even the side files
(``-wal``/``-shm``) that SQLite would otherwise leave behind (see ``_open_mode``).
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import compress
from operator import eq, itemgetter
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from recsys.errors import RecsysError
from recsys.library import kept as kept_library
from recsys.library.catalogue import Catalogue
from recsys.library.sources.base import PlayerLibrary
from recsys.library.track import Track, make_key, track_from_values
from recsys.library.uri import uri_to_path, uri_to_paths


class PlayerDBError(RecsysError):
    """The player database cannot be read; the message names the file and what to do."""


# Usual places, relative to the home folder; the first that exists wins (Clementine before Strawberry).
CLEMENTINE_PATHS: tuple[Path, ...] = (
    Path(".config/Clementine/clementine.db"),
    Path(".var/app/org.clementine_player.Clementine/config/Clementine/clementine.db"),
)
STRAWBERRY_PATHS: tuple[Path, ...] = (
    Path(".local/share/strawberry/strawberry/strawberry.db"),
    Path(".var/app/org.strawberrymusicplayer.strawberry/data/strawberry/strawberry/strawberry.db"),
)

_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_VERSION = 2  # header bytes 18/19 (read/write format version): 1 = rollback journal, 2 = WAL
_COLUMNS = ("rating", "playcount", "skipcount", "lastplayed", "title", "artist", "album", "albumartist", "genre",
            "year", "track", "length", "beginning", "cue_path", "unavailable")
_SNAPSHOT_TRIES = 3
_NUMBER = (float, int)


def find_player_db(home: Path | None = None) -> Path | None:
    """The first player database that exists at its usual place under ``home`` (default: the user's home)."""
    base = Path.home() if home is None else Path(home)
    for relative in (*CLEMENTINE_PATHS, *STRAWBERRY_PATHS):
        if (base / relative).is_file():
            return base / relative
    return None


def read_player_db(path: str | Path, timeout_s: float = 5.0, taste_only: bool = False,
                   kept: Path | None = None) -> PlayerLibrary:
    """Read every local-file track of a Clementine or Strawberry database, without ever writing to it.

    ``timeout_s`` is how long to wait for a player that holds the database locked before giving up; ``taste_only``
    (see ``Source.read``): Tracks of the rated, played or skipped rows only, every track in the catalogue. ``kept``
    (with ``taste_only``): the folder of the libraries kept between runs (:mod:`recsys.library.kept`): the same
    result, from the kept library and the live history when the database's structure has not changed since.
    """
    if taste_only and kept is not None:
        return _read_kept(path, Path(kept), timeout_s)
    if taste_only:
        db, (kind, quiet, rows) = read_consistent(path, _read_taste, timeout_s)
        if quiet is not None:
            return _build_taste(db, kind, quiet, rows)
        return _build(db, kind, rows, taste_only)
    db, (kind, rows) = read_consistent(path, _read_songs, timeout_s)
    return _build(db, kind, rows, taste_only)


T = TypeVar("T")


def read_consistent(path: str | Path, read: Callable[[sqlite3.Connection, Path], T], timeout_s: float = 5.0,
                    what: str = "a Clementine or Strawberry database") -> tuple[Path, T]:
    """``read(connection, shown_path)`` inside one read transaction of the database at ``path``, never writing to it
    nor beside it (see ``_open_mode``), redone when the files changed during the read; returns (absolute path, result).

    Every player database reader goes through here (Clementine, Strawberry, Navidrome). ``what`` names the kind of
    file expected, for the messages of a file that is not one.
    """
    db = Path(path).expanduser().absolute()
    is_wal = _check_file(db, what)
    for _ in range(_SNAPSHOT_TRIES):
        how = _open_mode(db, is_wal)
        before = _fingerprint(db)
        if how == "copy":
            with tempfile.TemporaryDirectory(prefix="recsys-playerdb-") as tmp:
                copy = Path(tmp) / db.name
                shutil.copyfile(db, copy)
                shutil.copyfile(_sidecar(db, "-wal"), _sidecar(copy, "-wal"))
                result = _read_in_transaction(copy, "", timeout_s, read, what, shown=db)
        else:
            result = _read_in_transaction(db, "?mode=ro" + ("&immutable=1" if how == "immutable" else ""), timeout_s,
                                          read, what)
        if how == "ro" or _fingerprint(db) == before:
            return db, result
    raise PlayerDBError(f"player database {db} kept changing while it was read: wait for the player to finish "
                        "scanning, then retry")


def _check_file(db: Path, what: str) -> bool:
    """Fail early, in one line, on the usual mistakes; returns whether the database is in WAL mode."""
    try:
        with open(db, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        raise PlayerDBError(f"player database {db} does not exist: check --db (or the player's settings)") from None
    except IsADirectoryError:
        raise PlayerDBError(f"player database {db} is a folder, not a file: give the .db file to --db") from None
    except PermissionError:
        raise PlayerDBError(f"player database {db} cannot be read (permission denied): make it readable by this "
                            "user") from None
    except OSError as exc:
        raise PlayerDBError(f"player database {db} cannot be read ({exc.strerror}): check the file") from None
    if not header.startswith(_SQLITE_MAGIC):
        raise PlayerDBError(f"{db} is not a SQLite database: give {what} to --db")
    return len(header) > 19 and header[18] == _WAL_VERSION


def _sidecar(db: Path, suffix: str) -> Path:
    return db.with_name(db.name + suffix)


def _open_mode(db: Path, is_wal: bool) -> str:
    """How to open the database: ``ro`` (read-only, with locking), ``immutable`` (no locking, no side files) or
    ``copy`` (read a private copy of the database and its ``-wal``).

    A WAL database opened ``mode=ro`` needs its ``-shm`` and ``-wal`` files: SQLite creates them when they are
    missing and leaves them behind after a read-only connection closes, and cannot create them in a read-only folder
    (the open then fails). Without a ``-wal`` file no connection has the database open, so no player is writing it
    and all its pages are in the main file: ``immutable=1`` reads it without creating anything. ``immutable`` would
    ignore a ``-wal`` file, though; one left without its ``-shm`` (a player that crashed) is read through a private
    copy, whether the folder is writable or not: ``mode=ro`` would create the ``-shm`` beside the user's database (or
    fail in a read-only folder). In both cases no writer can be active (a live WAL connection always has its
    ``-shm``), and ``read_player_db`` still checks that the files did not change during the read. Everything else (a
    rollback journal, a live WAL with its side files) is read with normal locking, so a player writing at the same
    time is handled by SQLite's own rules.
    """
    if not is_wal:
        return "ro"
    if not _sidecar(db, "-wal").exists():
        return "immutable"
    if not _sidecar(db, "-shm").exists():
        return "copy"
    return "ro"


def _fingerprint(db: Path) -> tuple[tuple[int, int] | None, ...]:
    """Size and mtime of the database and its ``-wal`` (None where absent): a read that saw them change is redone."""
    facts = []
    for path in (db, _sidecar(db, "-wal")):
        try:
            st = path.stat()
            facts.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            facts.append(None)
    return tuple(facts)


def _read_in_transaction(db: Path, query: str, timeout_s: float, read: Callable[[sqlite3.Connection, Path], T],
                         what: str, shown: Path | None = None) -> T:
    """``read`` in one read transaction (one snapshot); SQLite's errors become one line naming ``shown``."""
    uri = f"file:{quote(str(db))}{query}"
    db = shown or db
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise PlayerDBError(f"player database {db} cannot be opened ({exc}): check that it is readable") from None
    try:
        conn.execute("BEGIN")  # deferred: the first SELECT takes the read snapshot, held until the end
        result = read(conn, db)
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise PlayerDBError(f"player database {db} is locked by another program (the player?) for more than "
                                f"{timeout_s:g} s: close the player or wait for it to finish, then retry") from None
        raise PlayerDBError(f"player database {db} cannot be read ({exc}): check the file") from None
    except sqlite3.DatabaseError as exc:
        raise PlayerDBError(f"player database {db} is damaged or not a database ({exc}): give {what} to --db") \
            from None
    finally:
        conn.close()
    return result


def select_tolerant(conn: sqlite3.Connection, select: str, params: Sequence[object] = ()) -> list[tuple]:
    """Every row of ``select``; one tag written in Latin-1 by an old tagger must not make the whole library unreadable:
    on a decoding error the rows are read again (same snapshot) with bytes that are not UTF-8 as U+FFFD. Only then: a
    Python text factory triples the read time. Clementine's locations are BLOBs, untouched; Strawberry's are
    percent-encoded ASCII."""
    try:
        return conn.execute(select, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
        conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
        return conn.execute(select, params).fetchall()


def _read_songs(conn: sqlite3.Connection, db: Path) -> tuple[str, list[tuple]]:
    """Schema check and every row of ``songs``: (kind, rows)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(songs)")}
    kind, location = _shape(db, conn, columns)
    # every row is (location, *_COLUMNS), NULL where this database lacks the column: unpacked positionally
    wanted = ", ".join(c if c in columns else f"NULL AS {c}" for c in _COLUMNS)
    return kind, select_tolerant(conn, f"SELECT {location} AS location, {wanted} FROM songs")


def _no_history(kind: str) -> list[str]:
    """SQL conditions that together hold for a row with no rating, plays or skips, exactly where
    ``_may_have_history`` reads those columns as none too (see ``_quiet_rows``)."""
    unrated = "rating IN (-1, 0)" if kind == "clementine" else "rating = -1"  # Strawberry's 0 is a rating
    return [f"(rating IS NULL OR {unrated})", *(f"({c} IS NULL OR {c} = 0)" for c in ("playcount", "skipcount"))]


def _quiet_rows(kind: str, location: str) -> str:
    """SQL that holds for a row whose every rule below is the usual one: a location (BLOB or text), no rating, plays
    or skips (what ``_may_have_history`` reads as none), available, no CUE sheet, starting at 0, text tags. Such a
    row is a catalogue entry keyed by its path and nothing more; it never needs the other columns. Every condition
    holds only where the rule it stands for gives that answer too: SQL compares a number to 0 or -1 as Python does,
    and a text such as '0' (kept as text only in a column without a numeric type) equals no number in either, so
    its row is read in full. A row left out is only read in full, never misread. ``typeof`` only where a
    comparison would not say the same: the test is evaluated for every row of the library."""
    return " AND ".join([
        f"typeof({location}) IN ('blob', 'text')", *_no_history(kind),
        *(f"({c} IS NULL OR {c} = 0)" for c in ("unavailable", "beginning")),
        "(cue_path IS NULL OR cue_path = '')",
        *(f"typeof({c}) IN ('text', 'null')" for c in ("album", "albumartist", "artist")),
    ])


_Quiet = tuple[list[str | None], list[list[str]], list[str | None]]  # quiet paths, their three tags, the others' paths


def _read_taste(conn: sqlite3.Connection, db: Path, extra: Sequence[str] = ()
                ) -> tuple[str, _Quiet | None, list[tuple]]:
    """What ``taste_only`` needs: (kind, the quiet rows, every other row in full), where the quiet rows (see
    ``_quiet_rows``: most of a large library) are read as four columns -- their paths decoded in bulk, their album,
    album artist and artist tags -- instead of sixteen (and the other rows' paths, decoded with them). When a path is
    named by two rows (a CUE sheet's segments, a duplicate) or a column is missing, (kind, None, every row in full):
    the rules that compare rows read them all. ``extra``: more columns of the quiet rows, after their three tags."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(songs)")}
    kind, location = _shape(db, conn, columns)
    if not {*_COLUMNS} <= columns:
        return kind, None, _read_songs(conn, db)[1]
    quiet = _quiet_rows(kind, location)
    wanted = ", ".join(_COLUMNS)
    rows = select_tolerant(conn, f"SELECT {location} AS location, {wanted} FROM songs WHERE NOT ({quiet})")
    more = "".join(f", {c}" for c in extra)
    lean = select_tolerant(conn, f"SELECT {location}, IFNULL(album, ''), IFNULL(albumartist, ''), IFNULL(artist, '')"
                                 f"{more} FROM songs WHERE {quiet}")
    if not lean:
        return kind, ([], [[] for _ in range(3 + len(extra))], location_paths([row[0] for row in rows])), rows
    locations, *tags = (list(column) for column in zip(*lean, strict=True))
    paths = location_paths(locations)
    rest = location_paths([row[0] for row in rows])
    named = [p for p in paths if p is not None] + [p for p in rest if p is not None]
    if len(set(named)) < len(named):
        return kind, None, _read_songs(conn, db)[1]
    return kind, (paths, tags, rest), rows


def _shape(db: Path, conn: sqlite3.Connection, columns: set[str]) -> tuple[str, str]:
    if not columns:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        found = ", ".join(tables[:8]) + (" ..." if len(tables) > 8 else "") if tables else "no tables"
        raise PlayerDBError(f"{db} has no 'songs' table (found: {found}): give a Clementine or Strawberry database")
    if "filename" in columns:
        return "clementine", "filename"
    if "url" in columns:
        return "strawberry", "url"
    raise PlayerDBError(f"{db}: table 'songs' has neither 'filename' (Clementine) nor 'url' (Strawberry) "
                        f"(found: {', '.join(sorted(columns))}): give a Clementine or Strawberry database")


def location_path(value: str | bytes | None) -> str | None:
    """The absolute path a row's location names (``recsys.library.uri.uri_to_path``); None for anything that is not
    a local file.

    Clementine stores a BLOB, Strawberry TEXT; both percent-encode (UTF-8 bytes as ``%C3%9C``), and very old databases
    wrote bare paths.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.startswith("/"):
        return value  # a bare path, as very old databases wrote them
    if isinstance(value, bytes) and value.startswith(b"/"):
        return os.fsdecode(value)
    return uri_to_path(value)


def location_paths(values: Sequence[str | bytes | None]) -> list[str | None]:
    """``[location_path(v) for v in values]``, the URIs decoded in bulk (``recsys.library.uri.uri_to_paths``)."""
    out = uri_to_paths(values)
    if out.count(None) > values.count(None):  # bare paths (no URI: None) among them, as very old databases wrote
        for i, path in enumerate(out):
            if path is None and values[i] is not None:
                out[i] = location_path(values[i])
    return out


def _rating(value: object, kind: str) -> float | None:
    """0.2 per star; -1 is unrated, and so is 0 in Clementine (which writes 0 for "never rated").

    Strawberry writes -1 for unrated, so its 0 is a real rating of no stars. Values outside [0, 1] are not ratings.
    """
    try:
        rating = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if rating < 0 or rating > 1 or (kind == "clementine" and rating == 0):
        return None
    return rating


def _int(value: object) -> int | None:
    """An integer column's value; None when NULL or not a number (SQLite columns hold whatever was written)."""
    if type(value) is int:
        return value
    try:
        return None if value is None else int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _positive(value: object) -> int | None:
    number = _int(value)
    return number if number is not None and number > 0 else None


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _build(db: Path, kind: str, rows: list[tuple], taste_only: bool = False,
           paths: list[str | None] | None = None, entered: tuple | None = None) -> PlayerLibrary:
    """Tracks from the rows; ``taste_only``: Tracks only of the rows that may carry a rating, plays or skips, and
    every track in the catalogue (see :mod:`recsys.library.catalogue`). ``paths``: the rows' locations, decoded;
    ``entered``: what ``_entries`` gave for them, when already known."""
    entries, built, skipped_urls, skipped_unavailable, duplicates, rejected = entered or _entries(kind, rows, paths)
    ordered = sorted(entries)
    if not taste_only:
        tracks = [built.get(key) or _track(*entries[key], kind) for key in ordered]
        return PlayerLibrary(db, kind, tracks, skipped_urls, skipped_unavailable, duplicates, rejected=rejected)
    tracks = [built.get(key) or _track(*entries[key], kind) for key in ordered
              if key in built or _may_have_history(entries[key][3], kind)]
    chosen = [entries[key] for key in ordered]
    tags = [entry[3] for entry in chosen]
    columns = [[row[at] if type(row[at]) is str else _text(row[at]) for row in tags]
               for at in (_ALBUM_AT, _ALBUMARTIST_AT, _ARTIST_AT)]
    catalogue = Catalogue(ordered, [entry[0] for entry in chosen], *columns)
    return PlayerLibrary(db, kind, tracks, skipped_urls, skipped_unavailable, duplicates, catalogue=catalogue,
                         rejected=rejected)


_Entries = dict[str, tuple[str, int, bool, tuple]]  # key -> (path, start in ns, segment, row)


def _entries(kind: str, rows: list[tuple], paths: list[str | None] | None = None
             ) -> tuple[_Entries, dict[str, Track], int, int, int, list[tuple[str, str]]]:
    """The rows as one entry per track key (the row that knows more of the owner's taste where two name one key),
    and what was left out: (entries, the Tracks built to compare two rows of a key, rows naming no local file,
    unavailable rows, rows naming a key listed already, rejected rows with why)."""
    skipped_urls = skipped_unavailable = 0
    kept: list[tuple[str, int, tuple]] = []  # (path, start in ns, row)
    unavailable_at = 1 + _COLUMNS.index("unavailable")
    beginning_at = 1 + _COLUMNS.index("beginning")
    cue_at = 1 + _COLUMNS.index("cue_path")
    # A file is cut into several tracks (a CUE sheet) when rows name it with different start offsets.
    first_beginning: dict[str, int] = {}
    cut: set[str] = set()
    rejected: list[tuple[str, str]] = []
    paths = location_paths([row[0] for row in rows]) if paths is None else paths
    for row, path in zip(rows, paths, strict=True):
        if path is None:
            skipped_urls += 1
        elif row[unavailable_at] == 1 or (type(row[unavailable_at]) is not int and _int(row[unavailable_at]) == 1):
            skipped_unavailable += 1
        else:
            begin = row[beginning_at]
            begin = (begin if type(begin) is int else _int(begin)) or 0
            if begin < 0:  # a CUE sheet's start before the file's: no segment of it can be played or embedded
                rejected.append((make_key(path, begin / 1e9, True), f"the CUE segment starts at {begin / 1e9:g} s, "
                                 "before the file begins: fix the CUE sheet and rescan it in the player"))
                continue
            if first_beginning.setdefault(path, begin) != begin:
                cut.add(path)
            kept.append((path, begin, row))
    # one entry per key: the row that knows more about the owner's taste, the first among equals
    entries: _Entries = {}
    built: dict[str, Track] = {}  # the Track of a key listed twice, built to compare the rows
    duplicates = 0
    for path, begin_ns, row in kept:
        segment = bool(row[cue_at]) or path in cut
        key = make_key(path, begin_ns / 1e9, True) if segment else path
        entry = (path, begin_ns, segment, row)
        previous = entries.setdefault(key, entry)
        if previous is entry:
            continue
        duplicates += 1
        old, new = built.get(key) or _track(*previous, kind), _track(*entry, kind)
        if _richness(old) >= _richness(new):
            built[key] = old
        else:
            entries[key], built[key] = entry, new
    return entries, built, skipped_urls, skipped_unavailable, duplicates, rejected


def _build_taste(db: Path, kind: str, quiet: _Quiet, rows: list[tuple], entered: tuple | None = None,
                 layout: list | None = None) -> PlayerLibrary:
    """``_build(taste_only=True)`` of every row, from the quiet rows' paths and tags (no path of them named twice:
    each is one catalogue entry keyed by its path, no Track) and the other ``rows`` in full. ``entered``: what
    ``_entries`` gave for ``rows``, when known; ``layout``: a list that gets how the catalogue was put together
    (which quiet rows it holds, None for all; the other rows' keys in their order; the order of the whole)."""
    paths, tags, rest_paths = quiet
    tags = tags[:3]  # album, album artist, artist (what follows: ``extra`` columns of ``_read_taste``)
    rest = _build(db, kind, rows, taste_only=True, paths=rest_paths, entered=entered)
    skipped = paths.count(None)
    keep = None
    if skipped:  # rows that name no local file
        keep = [p is not None for p in paths]
        paths = [p for p in paths if p is not None]
        tags = [[v for v, k in zip(column, keep, strict=True) if k] for column in tags]
    other = rest.catalogue
    keys = paths + other.keys
    order = sorted(range(len(keys)), key=keys.__getitem__)
    columns = [paths + other.paths, *(mine + theirs for mine, theirs in zip(tags, (other.albums, other.albumartists,
                                                                                  other.artists), strict=True))]
    catalogue = Catalogue([keys[i] for i in order], *([column[i] for i in order] for column in columns))
    if layout is not None:
        layout += [keep, other.keys, order]
    return PlayerLibrary(db, kind, rest.tracks, rest.skipped_urls + skipped, rest.skipped_unavailable,
                         rest.duplicates, catalogue=catalogue, rejected=rest.rejected)


_ALBUM_AT, _ALBUMARTIST_AT, _ARTIST_AT = (1 + _COLUMNS.index(c) for c in ("album", "albumartist", "artist"))


def _may_have_history(row: tuple, kind: str) -> bool:
    """False only for a row that surely has no rating, plays or skips (the usual unrated values; anything unusual is
    left to the Track's own reading): what ``Track.has_history`` says, without building the Track."""
    rating, playcount, skipcount = row[1], row[2], row[3]
    unrated = rating is None or rating == -1 or (rating == 0 and kind == "clementine")
    return not (unrated and (playcount is None or playcount == 0) and (skipcount is None or skipcount == 0))


def _track(path: str, begin_ns: int, segment: bool, row: tuple, kind: str) -> Track:
    """The Track of one row: its tags (:func:`_tags`) and its history (:func:`_history`)."""
    (_, rating, playcount, skipcount, lastplayed, title, artist, album, albumartist, genre, year, number, length,
     _beginning, _cue_path, _unavailable) = row
    return track_from_values(_tags(path, begin_ns, segment, title, artist, album, albumartist, genre, year, number,
                                   length) + _history(rating, playcount, skipcount, lastplayed, kind))


def _tags(path: str, begin_ns: int, segment: bool, title: object, artist: object, album: object,
          albumartist: object, genre: object, year: object, number: object, length: object) -> tuple:
    """The first eleven values of a row's Track (``track_from_values``), all but its history: what the library kept
    between runs holds of it. The usual values (an int, a str, NULL) are taken inline, anything else goes through
    the helpers above: a helper call per value cost seconds on a 100,000-track library."""
    length_ns = (length if type(length) is int else _int(length)) or 0
    return (
        path,
        begin_ns / 1e9 if segment else 0.0,
        length_ns / 1e9 if length_ns > 0 else None,
        segment,
        title if type(title) is str else _text(title),
        artist if type(artist) is str else _text(artist),
        album if type(album) is str else _text(album),
        albumartist if type(albumartist) is str else _text(albumartist),
        genre if type(genre) is str else _text(genre),
        (year if year > 0 else None) if type(year) is int else None if year is None else _positive(year),
        (number if number > 0 else None) if type(number) is int else _positive(number),
    )


def _history(rating: object, playcount: object, skipcount: object, lastplayed: object, kind: str) -> tuple:
    """The last four values of a row's Track: rating, plays, skips, last play (read live on every run)."""
    return (
        None if type(rating) in _NUMBER and (rating < 0 or rating > 1) else _rating(rating, kind),  # unrated: -1
        (playcount if playcount > 0 else 0) if type(playcount) is int else _positive(playcount) or 0,
        (skipcount if skipcount > 0 else 0) if type(skipcount) is int else _positive(skipcount) or 0,
        (lastplayed if lastplayed > 0 else None) if type(lastplayed) is int else _positive(lastplayed),
    )


def _richness(track: Track) -> tuple[bool, int, int]:
    """Of two rows for one track, keep the one that knows more about the owner's taste."""
    return track.rating is not None, track.playcount, track.lastplayed or 0


# What the library kept between runs (recsys.library.kept) holds of a database, and how it knows the database as
# it was: every column a row's catalogue entry or Track tags are made of (all but its history), summed.
_KEPT_TAGS = ("title", "genre", "year", "track", "length")  # the quiet rows' columns it needs beyond the catalogue's
_SIGNATURE_TEXT = ("title", "artist", "album", "albumartist", "genre", "cue_path")
_SIGNATURE_NUMBERS = ("year", "track", "length", "beginning", "unavailable", "mtime", "ctime", "filesize")
_TEXT = (str, type(None))
_NUMBERS = (int, float, type(None))


def _signature(conn: sqlite3.Connection, kind: str, location: str, info: list[tuple]) -> tuple:
    """The database's structure as one value: its kind, the columns of ``songs``, the number of rows and, summed over
    every row, the lengths of the location and text tags and the values of the number tags, CUE offsets,
    availability, and the file's mtime, ctime and size as the player recorded them: one aggregate scan, a fraction
    of the cost of reading the rows themselves. (Not the database file's own size and mtime: every play changes
    them.)

    What it notices: a row added or removed, a file moved or renamed (a new location, a new ctime), retagged or
    rewritten (the player records its new mtime), turned unavailable, cut by a CUE sheet. What it cannot: an edit by
    another program than the player that keeps every sum equal (a tag rewritten to another of the same length,
    with the file's mtime kept) -- until the next change that does move a sum. The history columns are not in it:
    they are read live."""
    names = {row[1] for row in info}
    sums = [f"total(length({c}))" for c in (location, *_SIGNATURE_TEXT) if c in names]
    sums += [f"total({c})" for c in _SIGNATURE_NUMBERS if c in names]
    totals = conn.execute(f"SELECT count(*), {', '.join(sums)} FROM songs").fetchone()
    return kind, tuple(tuple(row) for row in info), tuple(totals)


def _read_kept(path: str | Path, where: Path, timeout_s: float) -> PlayerLibrary:
    """``read_player_db(path, taste_only=True)`` through the library kept under ``where``: in one read transaction,
    the signature and, when it is the kept library's, only the rows with history (five columns) -- no location
    decoded, no tag read; otherwise the full taste read, whose result is kept for the next run when it can be (see
    ``_kept_data``)."""
    with _no_cycle_collection():
        return _read_kept_now(path, where, timeout_s)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector off for the block: the read makes a million objects, none of them in a cycle (they
    are freed as usual when no longer used), and the collector's passes over them cost more than the read itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_kept_now(path: str | Path, where: Path, timeout_s: float) -> PlayerLibrary:
    db = Path(path).expanduser().absolute()
    previous = kept_library.load(where, db)

    def read(conn: sqlite3.Connection, shown: Path) -> tuple[tuple, bool, object]:
        info = conn.execute("PRAGMA table_info(songs)").fetchall()
        kind, location = _shape(shown, conn, {row[1] for row in info})
        signature = _signature(conn, kind, location, info)
        if previous is not None and previous["signature"] == signature:
            history = select_tolerant(conn, f"SELECT {location}, rating, playcount, skipcount, lastplayed FROM songs "
                                            f"WHERE NOT ({' AND '.join(_no_history(kind))})")
            return signature, True, history
        return signature, False, _read_taste(conn, shown, (*_KEPT_TAGS, location))

    db, (signature, same, result) = read_consistent(db, read, timeout_s)
    if same:
        library = _from_kept(db, previous, result)
        if library is not None:
            return library
        previous = None  # the kept library does not describe this database after all: read it in full
        db, (signature, same, result) = read_consistent(db, read, timeout_s)
    kind, quiet, rows = result
    if quiet is None:
        return _build(db, kind, rows, taste_only=True)
    entered, layout = _entries(kind, rows, quiet[2]), []
    library = _build_taste(db, kind, quiet, rows, entered, layout)
    data = _kept_data(quiet, rows, entered[0], library, layout)
    if data is not None:
        kept_library.store(where, db, {**data, "kind": kind, "signature": signature})
    return library


def _kept_data(quiet: _Quiet, rows: list[tuple], entries: _Entries, library: PlayerLibrary, layout: list
               ) -> dict | None:
    """What the library kept between runs holds of this read (its catalogue; for each entry its location, start,
    segment flag and the raw values of the tags its Track needs besides the catalogue's, which ``_tags`` reads when
    the entry has history; the locations of the rows that are no track; the counts), or None when it is better read
    in full every time: rows that compare (a duplicate key), values of unusual types (a text year, a number for a
    title: the signature's sums would not see every change of them). ``entries``: those of ``rows``; ``layout``:
    what ``_build_taste`` said of the catalogue's order."""
    paths, tags, _ = quiet
    _albums, _albumartists, _artists, titles, genres, years, numbers, lengths, locations = tags
    catalogue = library.catalogue
    if library.duplicates or catalogue is None or any(map(eq, catalogue.keys, catalogue.keys[1:])):
        return None
    if not (set(map(type, titles)) | set(map(type, genres))) <= {*_TEXT}:
        return None
    if not (set(map(type, years)) | set(map(type, numbers)) | set(map(type, lengths))) <= {*_NUMBERS}:
        return None
    text_at = [1 + _COLUMNS.index(c) for c in _SIGNATURE_TEXT]
    number_at = [1 + _COLUMNS.index(c) for c in _SIGNATURE_NUMBERS if c in _COLUMNS]
    if not set(map(type, map(itemgetter(0), rows))) <= {bytes, *_TEXT} \
            or not set().union(*(map(type, map(itemgetter(at), rows)) for at in text_at)) <= {*_TEXT} \
            or not set().union(*(map(type, map(itemgetter(at), rows)) for at in number_at)) <= {*_NUMBERS}:
        return None
    keep, rest_keys, order = layout
    excluded = [location for location, path in zip(locations, paths, strict=True) if path is None]
    mine = [locations, titles, genres, years, numbers, lengths]
    if keep is not None:
        mine = [list(compress(column, keep)) for column in mine]
    chosen = [entries[key] for key in rest_keys]  # (path, start in ns, segment, row)
    theirs = [[entry[3][at] for entry in chosen] for at in (0, *(1 + _COLUMNS.index(c) for c in _KEPT_TAGS))]
    # the catalogue's order: the quiet rows' entries (start 0, no segment), then the others', sorted by key
    locations, titles, genres, years, numbers, lengths, begins, segments = (
        [column[i] for i in order] for column in (*(a + b for a, b in zip(mine, theirs, strict=True)),
                                                 [0] * len(mine[0]) + [entry[1] for entry in chosen],
                                                 [False] * len(mine[0]) + [entry[2] for entry in chosen]))
    listed = {id(entry[3]) for entry in chosen}
    excluded += [row[0] for row in rows if id(row) not in listed]
    same = {v: v for column in (catalogue.albums, catalogue.albumartists, catalogue.artists, genres) for v in column}
    try:
        return {  # one object per distinct tag (``same``): the file stores a repeated one once
            "keys": catalogue.keys, "paths": catalogue.paths,
            **{name: list(map(same.__getitem__, column)) for name, column in (
                ("albums", catalogue.albums), ("albumartists", catalogue.albumartists),
                ("artists", catalogue.artists), ("genres", genres))},
            "titles": titles, "locations": locations, "years": years, "numbers": numbers, "lengths": lengths,
            "begins": array("q", begins).tobytes(), "segments": bytes(segments), "excluded": excluded,
            "counts": [library.skipped_urls, library.skipped_unavailable, library.duplicates],
            "rejected": [list(item) for item in library.rejected],
        }
    except OverflowError:  # a start past 64 bits
        return None


def _from_kept(db: Path, data: dict, history: list[tuple]) -> PlayerLibrary | None:
    """The taste read of the database from its kept library and the live ``history`` rows (location, rating, plays,
    skips, last play); None when they do not fit (a location the kept library does not know, a garbled file)."""
    try:
        kind = data["kind"]
        columns = [data[name] for name in ("keys", "paths", "albums", "albumartists", "artists", "titles", "genres",
                                            "years", "numbers", "lengths", "locations")]
        keys, paths, albums, albumartists, artists, titles, genres, years, numbers, lengths, locations = columns
        begins, segments = array("q", data["begins"]), data["segments"]
        if len({len(column) for column in (*columns, begins, segments)}) != 1 \
                or not all(isinstance(column, list) for column in columns):
            return None
        skipped_urls, skipped_unavailable, duplicates = data["counts"]
        rejected = [(key, why) for key, why in data["rejected"]]
        # ``history`` is what ``_may_have_history`` keeps: the SQL rule of ``_no_history`` says "none" exactly where it
        # does (a number equal to 0 or -1 or NULL; a text or blob is never equal to a number in either)
        at = dict(zip(locations, range(len(locations)), strict=True)).get
        picked = [(i, row) for row in history if (i := at(row[0])) is not None]
        if len(picked) < len(history):  # the rows that are no track, or a location the kept library does not know
            known = set(data["excluded"])
            if any(at(row[0]) is None and row[0] not in known for row in history):
                return None
        picked.sort(key=itemgetter(0))
        tracks = [track_from_values(
            _tags(paths[i], begins[i], segments[i] == 1, titles[i], artists[i], albums[i], albumartists[i], genres[i],
                  years[i], numbers[i], lengths[i]) + _history(rating, playcount, skipcount, lastplayed, kind))
            for i, (_, rating, playcount, skipcount, lastplayed) in picked]
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return PlayerLibrary(db, kind, tracks, skipped_urls, skipped_unavailable, duplicates,
                         catalogue=Catalogue(keys, paths, albums, albumartists, artists), rejected=rejected)


class _ClementineSource:
    """Clementine and Strawberry (one schema family) as a :class:`recsys.library.sources.Source`."""

    name = "clementine"

    def find(self) -> Path | None:
        return find_player_db()

    def recognises(self, path: Path) -> bool:
        return path.suffix == ".db" and path.name in {p.name for p in (*CLEMENTINE_PATHS, *STRAWBERRY_PATHS)}

    def read(self, path: Path, section: object = None, taste_only: bool = False,
             kept: Path | None = None) -> PlayerLibrary:
        """The player has no settings section: ``section`` is None."""
        return read_player_db(path, taste_only=taste_only, kept=kept)


SOURCE = _ClementineSource()
