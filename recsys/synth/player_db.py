"""Write Clementine- and Strawberry-shaped SQLite databases, for tests, the demo and benchmarks.

The ``songs`` tables carry the players' real column sets (Clementine 1.4, Strawberry 1.x) so the reader is tested
against the shape it meets in the wild, not against a reduced table that only has the columns it happens to read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

# What Qt's QUrl leaves unencoded in a file URL path: RFC 3986 unreserved characters, sub-delimiters, ':', '@' and '/'.
# Everything else (space, '#', '%', '?', '"', non-ASCII as UTF-8 bytes ...) is percent-encoded.
_URI_SAFE = "/!$&'()*+,;=:@~"

_CLEMENTINE_SONGS = """
CREATE TABLE songs (
  title TEXT NOT NULL, album TEXT NOT NULL, artist TEXT NOT NULL, albumartist TEXT NOT NULL,
  composer TEXT NOT NULL, track INTEGER NOT NULL, disc INTEGER NOT NULL, bpm REAL NOT NULL,
  year INTEGER NOT NULL, genre TEXT NOT NULL, comment TEXT NOT NULL, compilation INTEGER NOT NULL,
  length INTEGER NOT NULL, bitrate INTEGER NOT NULL, samplerate INTEGER NOT NULL,
  directory INTEGER NOT NULL, filename BLOB NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL,
  filesize INTEGER NOT NULL, sampler INTEGER NOT NULL DEFAULT 0, art_automatic TEXT, art_manual TEXT,
  filetype INTEGER NOT NULL DEFAULT 0, playcount INTEGER NOT NULL DEFAULT 0, lastplayed INTEGER, rating INTEGER,
  forced_compilation_on INTEGER NOT NULL DEFAULT 0, forced_compilation_off INTEGER NOT NULL DEFAULT 0,
  effective_compilation NOT NULL DEFAULT 0, skipcount INTEGER NOT NULL DEFAULT 0, score INTEGER NOT NULL DEFAULT 0,
  beginning INTEGER NOT NULL DEFAULT 0, cue_path TEXT, unavailable INTEGER DEFAULT 0, effective_albumartist TEXT,
  etag TEXT, performer TEXT, grouping TEXT, lyrics TEXT, originalyear INTEGER, effective_originalyear INTEGER
)"""

_CLEMENTINE_EXTRA = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "INSERT INTO schema_version (version) VALUES (61)",
    "CREATE TABLE directories (path TEXT NOT NULL, subdirs INTEGER NOT NULL)",
    "CREATE TABLE subdirectories (directory INTEGER NOT NULL, path TEXT NOT NULL, mtime INTEGER NOT NULL)",
    "CREATE INDEX idx_filename ON songs (filename)",
    "CREATE INDEX idx_comp_artist ON songs (effective_compilation, artist)",
]

_STRAWBERRY_SONGS = """
CREATE TABLE songs (
  title TEXT, album TEXT, artist TEXT, albumartist TEXT, track INTEGER NOT NULL DEFAULT -1,
  disc INTEGER NOT NULL DEFAULT -1, year INTEGER NOT NULL DEFAULT -1, originalyear INTEGER NOT NULL DEFAULT -1,
  genre TEXT, compilation INTEGER NOT NULL DEFAULT 0, composer TEXT, performer TEXT, grouping TEXT, comment TEXT,
  lyrics TEXT, artist_id TEXT, album_id TEXT, song_id TEXT, beginning INTEGER NOT NULL DEFAULT 0,
  length INTEGER NOT NULL DEFAULT 0, bitrate INTEGER NOT NULL DEFAULT -1, samplerate INTEGER NOT NULL DEFAULT -1,
  bitdepth INTEGER NOT NULL DEFAULT -1, source INTEGER NOT NULL DEFAULT 0, directory_id INTEGER NOT NULL DEFAULT -1,
  url TEXT NOT NULL, filetype INTEGER NOT NULL DEFAULT 0, filesize INTEGER NOT NULL DEFAULT -1,
  mtime INTEGER NOT NULL DEFAULT -1, ctime INTEGER NOT NULL DEFAULT -1, unavailable INTEGER DEFAULT 0,
  fingerprint TEXT, playcount INTEGER NOT NULL DEFAULT 0, skipcount INTEGER NOT NULL DEFAULT 0,
  lastplayed INTEGER NOT NULL DEFAULT -1, lastseen INTEGER NOT NULL DEFAULT -1,
  compilation_detected INTEGER DEFAULT 0, compilation_on INTEGER NOT NULL DEFAULT 0,
  compilation_off INTEGER NOT NULL DEFAULT 0, compilation_effective INTEGER NOT NULL DEFAULT 0,
  art_embedded INTEGER DEFAULT 0, art_automatic TEXT, art_manual TEXT, art_unset INTEGER DEFAULT 0,
  effective_albumartist TEXT, effective_originalyear INTEGER NOT NULL DEFAULT 0, cue_path TEXT,
  rating INTEGER DEFAULT -1
)"""

_STRAWBERRY_EXTRA = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "INSERT INTO schema_version (version) VALUES (16)",
    "CREATE TABLE directories (path TEXT NOT NULL, subdirs INTEGER NOT NULL)",
    "CREATE TABLE subdirectories (directory_id INTEGER NOT NULL, path TEXT NOT NULL, mtime INTEGER NOT NULL)",
    "CREATE INDEX idx_url ON songs (url)",
]

# Strawberry's Song::Source: 1 = local collection file, 7 = stream (anything that is not a file).
_STRAWBERRY_SOURCE_FILE = 1
_STRAWBERRY_SOURCE_STREAM = 7


@dataclass
class SynthSong:
    """One row of a synthetic player database; ``url`` overrides the file URI (e.g. ``"http://radio/stream"``)."""

    path: str
    title: str = ""
    artist: str = ""
    album: str = ""
    albumartist: str = ""
    genre: str = ""
    year: int = 0
    track: int = 0
    rating: float = -1.0
    playcount: int = 0
    skipcount: int = 0
    lastplayed: int = -1
    length_ns: int = 0
    beginning_ns: int = 0
    cue_path: str = ""
    unavailable: int = 0
    url: str | None = None

    @property
    def location(self) -> str:
        return self.url if self.url is not None else file_uri(self.path)


def file_uri(path: str) -> str:
    """The percent-encoded ``file://`` URI of an absolute path, encoded the way Qt (and so both players) writes it."""
    return "file://" + quote(path, safe=_URI_SAFE, errors="surrogateescape")


def _create(db_path: Path, schema: list[str], insert: str, rows: list[tuple]) -> Path:
    db_path = Path(db_path)
    for stale in (db_path, *(db_path.with_name(db_path.name + s) for s in ("-wal", "-shm", "-journal"))):
        stale.unlink(missing_ok=True)  # written fresh: rows from an earlier run never linger
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path)
    try:
        with conn:  # one transaction for the schema and every row
            for statement in schema:
                conn.execute(statement)
            conn.executemany(insert, rows)
    finally:
        conn.close()
    return db_path


def write_clementine_db(db_path: Path, songs: Iterable[SynthSong]) -> Path:
    """A Clementine 1.4-shaped database: the file URI as a BLOB in ``filename``, 0 or -1 for unrated."""
    rows = []
    for s in songs:
        rows.append((
            s.title, s.album, s.artist, s.albumartist, "", s.track, 0, -1.0, s.year, s.genre, "", 0,
            s.length_ns, -1, -1, 1, s.location.encode("utf-8", "surrogateescape"), 0, 0, 0,
            s.playcount, s.lastplayed, s.rating, s.skipcount, s.beginning_ns, s.cue_path, s.unavailable,
            s.albumartist or s.artist,
        ))
    insert = (
        "INSERT INTO songs (title, album, artist, albumartist, composer, track, disc, bpm, year, genre, comment,"
        " compilation, length, bitrate, samplerate, directory, filename, mtime, ctime, filesize, playcount,"
        " lastplayed, rating, skipcount, beginning, cue_path, unavailable, effective_albumartist)"
        " VALUES (" + ", ".join("?" * 28) + ")"
    )
    return _create(db_path, [_CLEMENTINE_SONGS, *_CLEMENTINE_EXTRA], insert, rows)


def write_strawberry_db(db_path: Path, songs: Iterable[SynthSong]) -> Path:
    """A Strawberry-shaped database: the file URI as TEXT in ``url``, -1 for unrated (0 is a rating of no stars)."""
    rows = []
    for s in songs:
        source = _STRAWBERRY_SOURCE_STREAM if s.url is not None else _STRAWBERRY_SOURCE_FILE
        rows.append((
            s.title, s.album, s.artist, s.albumartist, s.track, s.year, s.genre, s.beginning_ns, s.length_ns,
            source, s.location, s.unavailable, s.playcount, s.skipcount, s.lastplayed, s.rating, s.cue_path,
            s.albumartist or s.artist,
        ))
    insert = (
        "INSERT INTO songs (title, album, artist, albumartist, track, year, genre, beginning, length, source, url,"
        " unavailable, playcount, skipcount, lastplayed, rating, cue_path, effective_albumartist)"
        " VALUES (" + ", ".join("?" * 18) + ")"
    )
    return _create(db_path, [_STRAWBERRY_SONGS, *_STRAWBERRY_EXTRA], insert, rows)
