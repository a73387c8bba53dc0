"""Read-only reader for Clementine and Strawberry databases: the tracks of the library and the owner's ratings.

The database belongs to the music player, which may be running and writing while we read. We open it read-only,
read everything inside one read transaction (one consistent snapshot), and never write, not even the side files
(``-wal``/``-shm``) that SQLite would otherwise leave behind (see ``_open_mode``).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote, urlsplit

from recsys.errors import RecsysError
from recsys.library.sources import PlayerLibrary
from recsys.library.track import Track, track_from_values


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


def find_player_db(home: Path | None = None) -> Path | None:
    """The first player database that exists at its usual place under ``home`` (default: the user's home)."""
    base = Path.home() if home is None else Path(home)
    for relative in (*CLEMENTINE_PATHS, *STRAWBERRY_PATHS):
        if (base / relative).is_file():
            return base / relative
    return None


def read_player_db(path: str | Path, timeout_s: float = 5.0) -> PlayerLibrary:
    """Read every local-file track of a Clementine or Strawberry database, without ever writing to it.

    ``timeout_s`` is how long to wait for a player that holds the database locked before giving up.
    """
    db, (kind, rows) = read_consistent(path, _read_songs, timeout_s)
    return _build(db, kind, rows)


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


def uri_to_path(value: str | bytes | None) -> str | None:
    """The absolute POSIX path of a ``file://`` URI as the players store it; None for anything that is not a file.

    Clementine stores a BLOB, Strawberry TEXT; both percent-encode (UTF-8 bytes as ``%C3%9C``). Bytes that are not
    valid UTF-8 survive as surrogate escapes, like ``os.fsdecode`` would give for the same file name.
    """
    if value is None:
        return None
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
    if text.startswith("/"):
        return text  # a bare path, as very old databases wrote them
    if text.startswith("file:///") and "?" not in text and "#" not in text:  # the usual case, without urlsplit
        return unquote(text[7:], errors="surrogateescape")
    parts = urlsplit(text)
    if parts.scheme.lower() != "file" or parts.netloc.lower() not in ("", "localhost"):
        return None
    path = unquote(parts.path, errors="surrogateescape")
    return path if path.startswith("/") else None


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


def _build(db: Path, kind: str, rows: list[tuple]) -> PlayerLibrary:
    """Tracks from the rows. Every value goes through the helpers above but the usual ones (an int, a str, NULL),
    taken as they are inline: a helper call per value cost seconds on a 100,000-track library."""
    skipped_urls = skipped_unavailable = 0
    kept: list[tuple[str, tuple]] = []
    unavailable_at = 1 + _COLUMNS.index("unavailable")
    for row in rows:
        path = uri_to_path(row[0])
        if path is None:
            skipped_urls += 1
        elif row[unavailable_at] == 1 or (type(row[unavailable_at]) is not int and _int(row[unavailable_at]) == 1):
            skipped_unavailable += 1
        else:
            kept.append((path, row))
    # A file is cut into several tracks (a CUE sheet) when rows name it with different start offsets.
    beginning_at = 1 + _COLUMNS.index("beginning")
    first_beginning: dict[str, int] = {}
    cut: set[str] = set()
    for path, row in kept:
        begin = row[beginning_at]
        begin = (begin if type(begin) is int else _int(begin)) or 0
        if first_beginning.setdefault(path, begin) != begin:
            cut.add(path)
    by_key: dict[str, Track] = {}
    duplicates = 0
    for path, (_, rating, playcount, skipcount, lastplayed, title, artist, album, albumartist, genre, year, number,
               length, beginning, cue_path, _unavailable) in kept:
        begin_ns = (beginning if type(beginning) is int else _int(beginning)) or 0
        length_ns = (length if type(length) is int else _int(length)) or 0
        segment = bool(cue_path) or path in cut
        # the usual values inline (an int, NULL), anything else through the helpers: a call per value costs seconds
        year = (year if year > 0 else None) if type(year) is int else None if year is None else _positive(year)
        number = (number if number > 0 else None) if type(number) is int else _positive(number)
        lastplayed = (lastplayed if lastplayed > 0 else None) if type(lastplayed) is int else _positive(lastplayed)
        playcount = (playcount if playcount > 0 else 0) if type(playcount) is int else _positive(playcount) or 0
        skipcount = (skipcount if skipcount > 0 else 0) if type(skipcount) is int else _positive(skipcount) or 0
        track = track_from_values((
            path,
            begin_ns / 1e9 if segment else 0.0,
            length_ns / 1e9 if length_ns > 0 else None,
            segment,
            title if type(title) is str else _text(title),
            artist if type(artist) is str else _text(artist),
            album if type(album) is str else _text(album),
            albumartist if type(albumartist) is str else _text(albumartist),
            genre if type(genre) is str else _text(genre),
            year,
            number,
            _rating(rating, kind),
            playcount,
            skipcount,
            lastplayed,
        ))
        previous = by_key.get(track.key)
        if previous is not None:
            duplicates += 1
            if _richness(previous) >= _richness(track):
                continue
        by_key[track.key] = track
    tracks = [by_key[key] for key in sorted(by_key)]
    return PlayerLibrary(db, kind, tracks, skipped_urls, skipped_unavailable, duplicates)


def _richness(track: Track) -> tuple[bool, int, int]:
    """Of two rows for one track, keep the one that knows more about the owner's taste."""
    return track.rating is not None, track.playcount, track.lastplayed or 0


class _ClementineSource:
    """Clementine and Strawberry (one schema family) as a :class:`recsys.library.sources.Source`."""

    name = "clementine"

    def find(self) -> Path | None:
        return find_player_db()

    def recognises(self, path: Path) -> bool:
        return path.suffix == ".db" and path.name in {p.name for p in (*CLEMENTINE_PATHS, *STRAWBERRY_PATHS)}

    def read(self, path: Path, settings: object = None) -> PlayerLibrary:
        return read_player_db(path)


SOURCE = _ClementineSource()
