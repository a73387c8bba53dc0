"""Read-only reader for a beets library (``library.db``): the tracks beets manages and the owner's flexible fields.

beets (beets.io) keeps its library in one SQLite file, ``library.db`` in its config folder unless its config's
``library`` says otherwise. It is read through :func:`recsys.library.sources.clementine.read_consistent`, like every
player database: one read transaction, never a write, no side file left behind. ``--db`` recognises it by its tables
(``items`` with a ``path`` column, ``item_attributes``), whatever its name.

What beets stores (checked against beets 2.14):

- ``items``: one row per file. ``path`` is a BLOB holding the file name's bytes; a file inside beets' music
  ``directory`` is stored relative to it (since beets 2.4), any other absolutely. The bytes become the track key with
  :func:`os.fsdecode`, so a file name that is not UTF-8 keeps the key the file system gives it (a folder scan of the
  same file finds the same key). ``title``, ``artist``, ``album``, ``albumartist``, ``genres`` (several genres joined
  by beets' separator; ``genre`` in older versions), ``year`` and ``track`` (0 = unknown), ``length`` (seconds).
  beets has no CUE segments: one row is one whole file.
- ``item_attributes(entity_id, key, value)``: the flexible fields, as text. recsys reads ``rating``, ``play_count``,
  ``skip_count`` and ``last_played`` (seconds since 1970), which the user sets (``beet modify rating=0.8``) or the
  ``mpdstats`` plugin keeps.

**The music directory** is only in beets' config. It is the setting ``beets.directory`` when given, else the
``directory`` of beets' config file: ``beets.config``, else ``$BEETSDIR/config.yaml``, else a ``config.yaml`` beside
the database, else ``$XDG_CONFIG_HOME/beets/config.yaml`` (``~/.config/beets/config.yaml``); a config file without
``directory`` means beets' default, ``~/Music``. Relative paths that none of these resolves are an error saying what
to set, never a guess.

**Ratings**: beets' own scale (and mpdstats') is 0 to 1, 0.2 per star as inside recsys. Some users store stars
(0-5) or tenths (0-10) instead. ``beets.rating_scale`` says which value means 5 stars; 0 (the default) reads it from
the library: the largest rating decides (up to 1: 0-1, up to 5: stars, up to 10: tenths, else 0-100). A rating
outside the scale, or not a number, counts as unrated.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

from recsys.library.catalogue import Catalogue
from recsys.library.sources.base import PlayerLibrary
from recsys.library.sources.clementine import PlayerDBError, read_consistent, select_tolerant
from recsys.library.track import Track, track_from_values

KIND = "beets"
WHAT = "a beets library (library.db in beets' config folder)"
GENRE_SEPARATOR = "\\\u2400"  # beets' MULTI_VALUE_DELIMITER: a backslash and the symbol for NUL
DEFAULT_DIRECTORY = "~/Music"  # beets' config_default.yaml
SCALES = (1.0, 5.0, 10.0, 100.0)  # what rating_scale = 0 chooses from, the smallest that holds every rating
FLEXIBLE = ("rating", "play_count", "skip_count", "last_played")
_COLUMNS = ("title", "artist", "album", "albumartist", "genres", "genre", "year", "track", "length")


@dataclass(frozen=True)
class BeetsConfig:
    """What recsys needs of beets' config: the music ``directory`` and where that answer came from (for messages)."""

    directory: str | None
    origin: str


def beets_config_dir() -> Path:
    """beets' config folder: ``$BEETSDIR``, else ``$XDG_CONFIG_HOME/beets`` (``~/.config/beets``)."""
    if os.environ.get("BEETSDIR"):
        return Path(os.environ["BEETSDIR"]).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "beets"


def config_file(db: Path, setting: str | None = None) -> Path | None:
    """The beets config that goes with ``db``: the ``setting`` (``beets.config``), else the first that exists of
    ``$BEETSDIR/config.yaml``, ``config.yaml`` beside ``db``, ``~/.config/beets/config.yaml``."""
    if setting:
        return Path(setting).expanduser()
    candidates = ([Path(os.environ["BEETSDIR"]).expanduser() / "config.yaml"] if os.environ.get("BEETSDIR") else [])
    candidates += [db.parent / "config.yaml", beets_config_dir() / "config.yaml"]
    return next((c for c in candidates if c.is_file()), None)


def read_beets_config(path: Path) -> dict:
    """beets' config file as a mapping; one line naming the file when it cannot be read."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlayerDBError(f"beets config {path} does not exist: check beets.config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlayerDBError(f"beets config {path} cannot be read ({exc}): check the file") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise PlayerDBError(f"beets config {path} is not valid YAML{line}: fix it (beets cannot read it either)") \
            from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise PlayerDBError(f"beets config {path} is not a mapping of settings: check the file")
    return loaded


def music_directory(db: Path, directory: str | None = None, config: str | None = None) -> BeetsConfig:
    """beets' music directory for ``db``: ``directory`` (the setting) when given, else its config's (see the module
    docstring); ``BeetsConfig(None, why)`` when no config file is found."""
    if directory:
        return BeetsConfig(str(Path(directory).expanduser().absolute()), "the setting beets.directory")
    found = config_file(db, config)
    if found is None:
        return BeetsConfig(None, f"no beets config found ($BEETSDIR, beside {db}, {beets_config_dir()})")
    value = read_beets_config(found).get("directory", DEFAULT_DIRECTORY)
    if not isinstance(value, str) or not value.strip():
        raise PlayerDBError(f"beets config {found}: 'directory' is {value!r}, not a folder: fix it or set "
                            "beets.directory")
    folder = Path(value).expanduser()
    # confuse (beets' config library) reads a relative file name relative to the config file's folder
    folder = folder if folder.is_absolute() else found.parent / folder
    return BeetsConfig(os.path.normpath(folder.absolute()), f"'directory' in {found}")


def is_beets_db(conn: sqlite3.Connection) -> bool:
    """Whether an open database has beets' tables: ``items`` with a ``path`` and ``item_attributes``."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"items", "item_attributes"} <= tables:
        return False
    return "path" in {r[1] for r in conn.execute("PRAGMA table_info(items)")}


def _read(conn: sqlite3.Connection, db: Path) -> tuple[list[tuple], list[tuple]]:
    if not is_beets_db(conn):
        raise PlayerDBError(f"{db} is not a beets library (no tables items, item_attributes): give {WHAT} to --db")
    columns = {r[1] for r in conn.execute("PRAGMA table_info(items)")}
    wanted = ", ".join(c if c in columns else f"NULL AS {c}" for c in _COLUMNS)
    rows = select_tolerant(conn, f"SELECT id, path, {wanted} FROM items")
    marks = ", ".join("?" * len(FLEXIBLE))
    flexible = select_tolerant(conn, f"SELECT entity_id, key, value FROM item_attributes WHERE key IN ({marks})",
                               FLEXIBLE)
    return rows, flexible


def read_beets_db(path: str | Path, directory: str | None = None, config: str | None = None,
                  rating_scale: float = 0.0, taste_only: bool = False, timeout_s: float = 5.0) -> PlayerLibrary:
    """Every track of a beets library with the owner's ratings and plays, without ever writing to it.

    ``directory``/``config``: the settings ``beets.directory``/``beets.config`` (see the module docstring);
    ``rating_scale``: the value of 5 stars, 0 to read it from the library; ``taste_only`` (see ``Source.read``):
    Tracks only of the rated, played or skipped rows, every track in the catalogue.
    """
    db, (rows, flexible) = read_consistent(path, _read, timeout_s, WHAT)
    fields = _flexible(flexible)
    scale = rating_scale or _scale(r["rating"] for r in fields.values() if "rating" in r)
    root = None
    if any(row[1][:1] not in (b"/", b"") if type(row[1]) is bytes else _is_relative(row[1]) for row in rows):
        found = music_directory(db, directory, config)
        if found.directory is None:
            raise PlayerDBError(f"beets library {db} holds paths relative to beets' music directory, which only "
                                f"beets' config names ({found.origin}): set beets.config to beets' config.yaml, or "
                                "beets.directory to the music folder")
        if not os.path.isdir(found.directory):
            raise PlayerDBError(f"beets' music directory {found.directory} (from {found.origin}) does not exist on "
                                f"this machine, so the paths in {db} cannot be found: set beets.directory to where "
                                "the music is")
        root = found.directory
    return _build(db, rows, fields, root, scale, taste_only)


def _is_relative(path: object) -> bool:
    return isinstance(path, (bytes, str)) and bool(path) and not os.path.isabs(path)


def _flexible(rows: Iterable[tuple]) -> dict[int, dict[str, float]]:
    """{item id: {field: value}} of the numeric flexible fields; text that is no number is left out."""
    out: dict[int, dict[str, float]] = {}
    for entity, key, value in rows:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number == number:  # not NaN
            out.setdefault(entity, {})[key] = number
    return out


def _scale(ratings: Iterable[float]) -> float:
    """The smallest of :data:`SCALES` that holds every rating (1 when there is none)."""
    top = max((r for r in ratings if 0 <= r <= SCALES[-1]), default=0.0)
    return next(s for s in SCALES if top <= s)


def _path(value: object, root: str | None) -> str | None:
    """The absolute file name of a row, as the file system gives it (``os.fsdecode``); None for an empty path."""
    if isinstance(value, memoryview):
        value = bytes(value)
    if not isinstance(value, (bytes, str)) or not value:
        return None
    path = os.fsdecode(value)
    if not os.path.isabs(path):
        path = os.path.join(root or "", path)
    return os.path.normpath(path)


def _count(fields: dict[str, float], name: str) -> int:
    value = fields.get(name, 0.0)
    return int(value) if 0 < value < 2**62 else 0


def _positive(value: object) -> int | None:
    return value if type(value) is int and value > 0 else None


def _build(db: Path, rows: list[tuple], fields: dict[int, dict[str, float]], root: str | None, scale: float,
           taste_only: bool) -> PlayerLibrary:
    library = PlayerLibrary(db, KIND, [], skipped_urls=0, skipped_unavailable=0)
    by_key: dict[str, tuple[tuple, dict[str, float]]] = {}
    prefix = root.rstrip("/") + "/" if root else ""
    no_fields: dict[str, float] = {}
    for row in rows:
        raw = row[1]
        # the usual row inline (bytes beets wrote normalised, relative or absolute), anything else through _path:
        # a call per row cost a second on a 100,000-track library
        path = (os.fsdecode(raw) if raw[:1] == b"/" else prefix + os.fsdecode(raw)) if type(raw) is bytes and raw \
            else _path(raw, root)
        if path is None:
            library.skipped_urls += 1
            continue
        entry = (row, fields.get(row[0], no_fields))
        previous = by_key.setdefault(path, entry)
        if previous is not entry:
            library.duplicates += 1
            if "rating" in entry[1] and "rating" not in previous[1]:
                by_key[path] = entry  # the row that knows the owner's rating wins
    keys = sorted(by_key)
    if taste_only:
        columns = ([v if type(v) is str else _text(v) for v in (by_key[k][0][at] for k in keys)] for at in (4, 5, 3))
        library.catalogue = Catalogue(keys, list(keys), *columns)
        keys = [k for k in keys if by_key[k][1]]
    tracks = (_track(k, *by_key[k], scale) for k in keys)
    library.tracks = [t for t in tracks if not taste_only or t.has_history]
    return library


def _text(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _genres(genres: object, genre: object) -> str:
    """Every genre of the item joined by '; ' (the form recsys's filters split), from ``genres`` or the older
    ``genre``."""
    text = _text(genres)
    return "; ".join(g for g in text.split(GENRE_SEPARATOR) if g) if text else _text(genre)


def _track(path: str, row: tuple, fields: dict[str, float], scale: float) -> Track:
    (_, _, title, artist, album, albumartist, genres, genre, year, number, length) = row
    rating = fields.get("rating")
    last = fields.get("last_played", 0.0)
    return track_from_values((
        path, 0.0,
        float(length) if isinstance(length, (int, float)) and length > 0 else None,
        False,
        _text(title), _text(artist), _text(album), _text(albumartist), _genres(genres, genre),
        _positive(year), _positive(number),
        rating / scale if rating is not None and 0 <= rating <= scale else None,
        _count(fields, "play_count"), _count(fields, "skip_count"),
        int(last) if 0 < last < 2**62 else None,
    ))


class BeetsSection(Protocol):
    """What the reader takes of the settings: their ``beets`` section (``recsys.config.BeetsSettings``)."""

    config: str | None
    directory: str | None
    rating_scale: float


class _BeetsSource:
    """beets as a :class:`recsys.library.sources.Source`: settings ``beets.config``, ``directory``, ``rating_scale``."""

    name = KIND

    def find(self) -> Path | None:
        """beets' library at its usual place: the config's ``library``, else ``library.db`` in the config folder."""
        folder = beets_config_dir()
        db = folder / "library.db"
        config = folder / "config.yaml"
        if config.is_file():
            try:
                value = read_beets_config(config).get("library")
            except PlayerDBError:
                value = None
            if isinstance(value, str) and value.strip():
                named = Path(value).expanduser()
                db = named if named.is_absolute() else folder / named
        return db if db.is_file() and os.access(db, os.R_OK) else None

    def recognises(self, path: Path) -> bool:
        """By its tables (a backup may have any name); a file that cannot be read is left to the first source."""
        try:
            return read_consistent(path, lambda conn, _: is_beets_db(conn), what=WHAT)[1]
        except PlayerDBError:
            return False

    def read(self, path: Path, b: BeetsSection, taste_only: bool = False, kept: Path | None = None) -> PlayerLibrary:
        """Read afresh every time: nothing kept between runs (``kept`` is ignored)."""
        return read_beets_db(path, directory=b.directory, config=b.config, rating_scale=b.rating_scale,
                             taste_only=taste_only)


SOURCE = _BeetsSource()
