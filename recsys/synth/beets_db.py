"""Write beets-shaped libraries (``library.db``, and its ``config.yaml``), for fast tests.

The tables are those beets 2.14 creates, cut to the columns recsys reads plus a few others (``items``: ``path`` a
BLOB, relative to the music directory inside it; ``item_attributes``: the flexible fields as text), in beets' own
journal mode (a rollback journal). The integration tests use the real ``beet`` program; this writer is for the
reader's unit tests and the cases beets itself would not produce (old ``genre`` column, odd flexible values).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

GENRE_SEPARATOR = "\\\u2400"  # beets' MULTI_VALUE_DELIMITER

_ITEMS = """
CREATE TABLE items (id INTEGER PRIMARY KEY, path BLOB, album_id INTEGER, title TEXT, artist TEXT, album TEXT,
  albumartist TEXT, {genre} TEXT, year INTEGER, track INTEGER, disc INTEGER, length REAL, format TEXT, mtime REAL,
  added REAL)"""
_ITEM_ATTRIBUTES = """
CREATE TABLE item_attributes (id INTEGER PRIMARY KEY, entity_id INTEGER, key TEXT, value TEXT,
  UNIQUE(entity_id, key) ON CONFLICT REPLACE)"""
_ALBUMS = "CREATE TABLE albums (id INTEGER PRIMARY KEY, album TEXT, albumartist TEXT, year INTEGER)"
_MIGRATIONS = "CREATE TABLE migrations (name TEXT NOT NULL, table_name TEXT NOT NULL, PRIMARY KEY(name, table_name))"


@dataclass
class BeetsItem:
    """One row of ``items``; ``path`` as beets stores it (bytes, relative inside the music directory);
    ``flexible``: the ``item_attributes`` of the item, written as text as beets writes them."""

    path: bytes | str
    title: str = ""
    artist: str = ""
    album: str = ""
    albumartist: str = ""
    genres: tuple[str, ...] = ()
    year: int = 0
    track: int = 0
    length: float = 0.0
    flexible: Mapping[str, object] = field(default_factory=dict)


def write_beets_db(path: Path, items: Iterable[BeetsItem], old_genre_column: bool = False) -> Path:
    """A beets ``library.db`` at ``path`` holding ``items`` (``old_genre_column``: the single ``genre`` column of
    beets before 2.13 instead of ``genres``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute(_ITEMS.format(genre="genre" if old_genre_column else "genres"))
        for ddl in (_ITEM_ATTRIBUTES, _ALBUMS, _MIGRATIONS):
            conn.execute(ddl)
        conn.execute("INSERT INTO migrations VALUES ('relative_path', 'items')")
        for i, item in enumerate(items, 1):
            raw = os.fsencode(item.path) if isinstance(item.path, str) else item.path
            genres = (item.genres[0] if item.genres else "") if old_genre_column else GENRE_SEPARATOR.join(item.genres)
            conn.execute("INSERT INTO items (id, path, album_id, title, artist, album, albumartist, "
                         f"{'genre' if old_genre_column else 'genres'}, year, track, disc, length, format, mtime, "
                         "added) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, 0, ?, '', 0, 0)",
                         (i, sqlite3.Binary(raw), item.title, item.artist, item.album, item.albumartist, genres,
                          item.year, item.track, item.length))
            conn.executemany("INSERT INTO item_attributes (entity_id, key, value) VALUES (?, ?, ?)",
                             [(i, k, str(v)) for k, v in item.flexible.items()])
        conn.commit()
    finally:
        conn.close()
    return path


def write_beets_config(folder: Path, directory: str | Path, library: str | Path | None = None) -> Path:
    """A beets ``config.yaml`` in ``folder`` naming the music ``directory`` (and the ``library`` file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"directory: {_quoted(directory)}"] + ([f"library: {_quoted(library)}"] if library else [])
    config = folder / "config.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def _quoted(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"
