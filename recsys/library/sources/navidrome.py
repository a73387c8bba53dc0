"""Read-only reader for a Navidrome database: the server's tracks and one user's ratings, loves and plays.

Navidrome (navidrome.org) keeps its library in one SQLite file (``navidrome.db`` in its data folder,
``/var/lib/navidrome`` for its Linux packages), in WAL mode while the server runs. It is read through
:func:`recsys.library.sources.clementine.read_consistent`, like the Clementine and Strawberry databases: one read
transaction, never a write, no side file left behind. ``--db`` recognises it by its tables, whatever its name.

The schema followed is that of Navidrome's own migrations (``db/migrations/`` in its repository) up to
``20260819204637`` (v0.63, August 2026), with what changed on the way:

- ``media_file`` (one row per audio file): ``path``, ``title``, ``artist``, ``album``, ``album_artist``, ``genre``,
  ``year`` (0 = unknown), ``track_number``, ``duration`` (seconds, a float since 20200220143731), ``missing``
  (20241026183640: the file was not found at the last scan) and ``tags`` (JSON, every genre of a multi-genre file).
  Since 20241026183640 (Navidrome 0.55) ``path`` is relative to its library's folder, ``library.path`` (the table of
  20240511220020, joined on ``media_file.library_id``); before, it was absolute. Both are read.
- ``annotation`` (20200130083147, reshaped by 20240629152843 and 20250701010102): per ``user_id`` and ``item_id`` with
  ``item_type = 'media_file'``: ``rating`` (stars 1-5, 0 = unrated), ``starred`` (loved, the heart of Subsonic
  clients), ``play_count``, ``play_date``.
- ``user``: ``user_name``, ``is_admin``.

**Which user's taste**: the ``user`` given (a Navidrome user name); when none is given, the only user, else the only
admin; several admins and no name given is an error that lists the users.

**Loved means 4 stars** (``loved_stars``): a heart says "I like this", which recsys counts from 4 stars up, but it says
less than an explicit 5. A track that is both rated and loved keeps its stars.

**Paths**: Navidrome may run in a container that sees the music at another folder (``/music`` for ``~/Music``).
``path_map`` maps Navidrome's folder prefixes to this machine's (longest prefix first); when no library folder of the
database exists here, the error says to set it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from recsys.library.sources.base import PlayerLibrary
from recsys.library.sources.clementine import PlayerDBError, read_consistent, select_tolerant
from recsys.library.track import Track

# The packages' DataFolder (release/linux/navidrome.toml); Docker's /data is inside the container.
USUAL_PATHS = (Path("/var/lib/navidrome/navidrome.db"),)
SCHEMA_VERSION = 20260819204637  # the newest Navidrome migration this reader was written against
RELATIVE_PATHS_SINCE = 20241026183640  # media_file.path relative to library.path from this migration on
KIND = "navidrome"
WHAT = "a Navidrome database (navidrome.db in its data folder)"
_TABLES = ("media_file", "annotation", "user")
_MEDIA_COLUMNS = ("path", "title", "artist", "album", "album_artist", "genre", "year", "track_number", "duration",
                  "missing", "tags", "library_id")


def is_navidrome_db(conn: sqlite3.Connection) -> bool:
    """Whether an open database has Navidrome's tables (how a ``--db`` file is told apart from a player's)."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return all(t in names for t in _TABLES)


def read_navidrome_db(path: str | Path, user: str | None = None, path_map: Mapping[str, str] | None = None,
                      loved_stars: float = 4.0, timeout_s: float = 5.0) -> PlayerLibrary:
    """Every track of a Navidrome database with ``user``'s ratings and plays, without ever writing to it."""
    def read(conn: sqlite3.Connection, shown: Path) -> tuple[str, list[tuple], dict[int, str]]:
        return _read(conn, shown, user)

    db, (user_name, rows, libraries) = read_consistent(path, read, timeout_s, WHAT)
    mapping = sorted(((k.rstrip("/") or "/", v.rstrip("/") or "/") for k, v in (path_map or {}).items()),
                     key=lambda kv: -len(kv[0]))
    library = _build(db, rows, libraries, mapping, loved_stars)
    library.user = user_name or None
    _check_roots(db, libraries, mapping, rows)
    return library


def _read(conn: sqlite3.Connection, db: Path, wanted: str | None) -> tuple[str, list[tuple], dict[int, str]]:
    if not is_navidrome_db(conn):
        raise PlayerDBError(f"{db} is not a Navidrome database (no tables {', '.join(_TABLES)}): give {WHAT} to --db")
    user_id, user_name = _user(conn, db, wanted)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(media_file)")}
    wanted_columns = ", ".join(f"m.{c}" if c in columns else f"NULL AS {c}" for c in _MEDIA_COLUMNS)
    rows = select_tolerant(conn, f"""
        SELECT {wanted_columns}, a.rating, a.starred, a.play_count, a.play_date
        FROM media_file m LEFT JOIN annotation a
          ON a.item_id = m.id AND a.item_type = 'media_file' AND a.user_id = ?""", (user_id,))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    libraries = dict(conn.execute("SELECT id, path FROM library").fetchall()) if "library" in tables else {}
    return user_name, rows, libraries


def _user(conn: sqlite3.Connection, db: Path, wanted: str | None) -> tuple[str, str]:
    """(id, user name) of the user whose taste is read: the one named, the only one, or the only admin."""
    users = conn.execute("SELECT id, user_name, is_admin FROM user ORDER BY created_at, user_name").fetchall()
    listed = ", ".join(f"{name} (admin)" if admin else name for _, name, admin in users) or "none"
    if wanted is not None:
        for user_id, name, _ in users:
            if name == wanted or name.casefold() == wanted.casefold():
                return user_id, name
        raise PlayerDBError(f"Navidrome database {db} has no user {wanted!r} (users: {listed}): set "
                            "navidrome.user to one of them")
    admins = [u for u in users if u[2]]
    if len(users) == 1 or len(admins) == 1:
        user_id, name, _ = users[0] if len(users) == 1 else admins[0]
        return user_id, name
    if not users:
        return "", ""
    raise PlayerDBError(f"Navidrome database {db} has several users ({listed}): say whose ratings to read with "
                        "navidrome.user (or RECSYS_NAVIDROME__USER=name)")


def _build(db: Path, rows: list[tuple], libraries: dict[int, str], mapping: list[tuple[str, str]],
           loved_stars: float) -> PlayerLibrary:
    library = PlayerLibrary(db, KIND, [], skipped_urls=0, skipped_unavailable=0)
    by_key: dict[str, Track] = {}
    for (path, title, artist, album, album_artist, genre, year, number, duration, missing, tags, library_id,
         rating, starred, plays, play_date) in rows:
        absolute = _absolute(path, libraries.get(library_id))
        if absolute is None:
            library.skipped_urls += 1
            continue
        if missing:
            library.skipped_unavailable += 1
            continue
        track = Track(
            path=_mapped(absolute, mapping),
            length_s=float(duration) if isinstance(duration, (int, float)) and duration > 0 else None,
            title=title or "", artist=artist or "", album=album or "", albumartist=album_artist or "",
            genre=_genres(tags) or genre or "",
            year=year if isinstance(year, int) and year > 0 else None,
            track_number=number if isinstance(number, int) and number > 0 else None,
            rating=_rating(rating, starred, loved_stars),
            playcount=plays if isinstance(plays, int) and plays > 0 else 0,
            lastplayed=_epoch(play_date),
        )
        previous = by_key.get(track.key)
        if previous is not None and (previous.rating is not None or track.rating is None):
            continue  # two libraries holding one folder: the row with the rating wins
        by_key[track.key] = track
    library.tracks = sorted(by_key.values(), key=lambda t: t.key)
    return library


def _absolute(path: object, library_path: str | None) -> str | None:
    """The file as Navidrome sees it: ``path`` itself before 0.55 (absolute), else under its library's folder."""
    if not isinstance(path, str) or not path:
        return None
    if path.startswith("/"):
        return os.path.normpath(path)
    if not library_path:
        return None
    return os.path.normpath(os.path.join(library_path, path))


def _mapped(path: str, mapping: list[tuple[str, str]]) -> str:
    """``path`` under the first (longest) folder of ``mapping`` that holds it, moved to that folder's counterpart."""
    for theirs, ours in mapping:
        if theirs == "/" or path == theirs or path.startswith(theirs + "/"):
            rest = path[len(theirs):].lstrip("/")
            return os.path.join(ours, rest) if rest else ours
    return path


def to_navidrome_path(path: str, path_map: Mapping[str, str]) -> str:
    """A file of this machine as Navidrome sees it: ``path_map`` ({Navidrome's folder: ours}) backwards, so an M3U8
    written here is imported by Navidrome (it resolves absolute paths inside its own library folders)."""
    backwards = sorted(((ours.rstrip("/") or "/", theirs.rstrip("/") or "/") for theirs, ours in path_map.items()),
                       key=lambda kv: -len(kv[0]))
    return _mapped(path, backwards)


def _rating(stars: object, starred: object, loved_stars: float) -> float | None:
    """0.2 per star; 0 (or NULL) is unrated in Navidrome; a loved, unrated track counts ``loved_stars``."""
    if isinstance(stars, (int, float)) and 1 <= stars <= 5:
        return float(stars) / 5.0
    if starred:
        return loved_stars / 5.0
    return None


def _genres(tags: object) -> str:
    """Every genre of the file ('Rock; Pop') from the ``tags`` JSON of Navidrome 0.55 and later; '' when absent."""
    if not isinstance(tags, str) or "genre" not in tags:
        return ""
    try:
        values = json.loads(tags).get("genre") or []
    except (ValueError, AttributeError):
        return ""
    return "; ".join(v for v in values if isinstance(v, str) and v)


def _epoch(value: object) -> int | None:
    """Seconds since 1970 of Navidrome's timestamps ('2024-05-01 12:00:00.123+00:00', older ones with a 'T')."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = int(moment.timestamp())
    return seconds if seconds > 0 else None


def _check_roots(db: Path, libraries: dict[int, str], mapping: list[tuple[str, str]], rows: list[tuple]) -> None:
    """One line when none of Navidrome's music folders exists here: the paths need ``navidrome.path_map``."""
    roots = sorted(libraries.values())
    if not rows or not roots or any(os.path.isdir(_mapped(os.path.normpath(r), mapping)) for r in roots):
        return
    shown = ", ".join(roots[:3])
    raise PlayerDBError(f"Navidrome's music folder {shown} (in {db}) does not exist on this machine: if Navidrome runs "
                        "in a container, map it to your folder with navidrome.path_map, e.g. "
                        f"{{'{roots[0]}': '{Path.home() / 'Music'}'}}")


class NavidromeSection(Protocol):
    """What the reader takes of the settings: their ``navidrome`` section (``recsys.config.NavidromeSettings``)."""

    user: str | None
    loved_stars: float

    def mapping(self) -> dict[str, str]:
        """``path_map`` as {Navidrome's folder: this machine's folder}."""


class _NavidromeSource:
    """Navidrome as a :class:`recsys.library.sources.Source`: settings ``navidrome.user``, ``path_map``,
    ``loved_stars``."""

    name = KIND

    def find(self) -> Path | None:
        return next((p for p in USUAL_PATHS if p.is_file() and os.access(p, os.R_OK)), None)

    def recognises(self, path: Path) -> bool:
        """By its tables (a backup may have any name); a file that cannot be read is left to the first source."""
        try:
            return read_consistent(path, lambda conn, _: is_navidrome_db(conn), what=WHAT)[1]
        except PlayerDBError:
            return False

    def read(self, path: Path, nd: NavidromeSection, taste_only: bool = False,
             kept: Path | None = None) -> PlayerLibrary:
        """Every track, whether ``taste_only`` or not (a Track per row: not yet made lean like Clementine's); nothing
        kept between runs (``kept`` is ignored)."""
        return read_navidrome_db(path, user=nd.user, path_map=nd.mapping(), loved_stars=nd.loved_stars)


SOURCE = _NavidromeSource()
