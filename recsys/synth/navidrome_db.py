"""Write Navidrome-shaped SQLite databases, for tests and the demo.

The tables recsys reads (``media_file``, ``annotation``, ``user``, ``library``, ``user_library``) carry the columns
Navidrome's migrations give them up to :data:`MIGRATION` (the media_file columns are
those of ``model.MediaFile``, in the order the migrations added them), with ``goose_db_version`` recording the
migration, and the database is in WAL mode as Navidrome runs it. ``legacy=True`` writes the shape before Navidrome
0.55: absolute paths in ``media_file.path`` and no ``missing``/``tags`` columns.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MIGRATION = 20260819204637  # the newest Navidrome migration these tables follow (the reader's SCHEMA_VERSION)

_USER = """
CREATE TABLE user (
  id varchar(255) not null primary key, user_name varchar(255) default '' not null unique,
  name varchar(255) default '' not null, email varchar(255) default '' not null,
  password varchar(255) default '' not null, is_admin bool default FALSE not null, last_login_at datetime,
  last_access_at datetime, created_at datetime not null, updated_at datetime not null,
  scrobble_filter varchar default '' not null
)"""

_LIBRARY = """
CREATE TABLE library (
  id integer primary key autoincrement, name text not null unique, path text not null unique,
  remote_path text null default '', last_scan_at datetime not null default '0000-00-00 00:00:00',
  updated_at datetime not null default current_timestamp, created_at datetime not null default current_timestamp,
  last_scan_started_at datetime default '0000-00-00 00:00:00' not null, full_scan_in_progress boolean default false
  not null, total_songs integer default 0 not null, total_albums integer default 0 not null,
  total_artists integer default 0 not null, total_folders integer default 0 not null,
  total_files integer default 0 not null, total_missing_files integer default 0 not null,
  total_size integer default 0 not null, total_duration real default 0, default_new_users boolean default false
)"""

_MEDIA_FILE = """
CREATE TABLE media_file (
  id varchar(255) not null primary key, path varchar(255) default '' not null, title varchar(255) default '' not null,
  album varchar(255) default '' not null, artist varchar(255) default '' not null,
  artist_id varchar(255) default '' not null, album_artist varchar(255) default '' not null,
  album_id varchar(255) default '' not null, has_cover_art bool default FALSE not null,
  track_number integer default 0 not null, disc_number integer default 0 not null,
  year integer default 0 not null, size integer default 0 not null, suffix varchar(255) default '' not null,
  duration real default 0 not null, bit_rate integer default 0 not null, genre varchar(255) default '' not null,
  compilation bool default FALSE not null, created_at datetime, updated_at datetime,
  full_text varchar(255) default '', album_artist_id varchar(255) default '',
  order_album_name varchar(255) collate nocase, order_album_artist_name varchar(255) collate nocase,
  order_artist_name varchar(255) collate nocase, sort_album_name varchar(255) collate nocase,
  sort_artist_name varchar(255) collate nocase, sort_album_artist_name varchar(255) collate nocase,
  sort_title varchar(255) collate nocase, disc_subtitle varchar(255), mbz_recording_id varchar(255),
  mbz_album_id varchar(255), mbz_artist_id varchar(255), mbz_album_artist_id varchar(255),
  mbz_album_type varchar(255), mbz_album_comment varchar(255), catalog_num varchar(255), comment varchar,
  lyrics jsonb default '[]' not null, bpm integer, channels integer, order_title varchar(255) collate nocase,
  mbz_release_track_id varchar(255), sample_rate integer default 0 not null,
  library_id integer not null default 1 references library(id) on delete cascade,
  date varchar(255) default '' not null, original_year int default 0 not null,
  original_date varchar(255) default '' not null, release_year int default 0 not null,
  release_date varchar(255) default '' not null, explicit_status varchar default '' not null
  {new_scanner}
)"""

_NEW_SCANNER_COLUMNS = """,
  folder_id varchar default '' not null, pid varchar default '' not null, missing boolean default false not null,
  mbz_release_group_id varchar default '' not null, tags jsonb default '{}' not null,
  participants jsonb default '{}' not null, bit_depth integer, birth_time datetime default current_timestamp,
  rg_album_gain real, rg_album_peak real, rg_track_gain real, rg_track_peak real,
  average_rating real not null default 0, search_participants text not null default '',
  search_normalized text not null default '', codec varchar(255) default '' not null,
  probe_data text default '' not null"""

_ANNOTATION = """
CREATE TABLE annotation (
  user_id varchar(255) not null references user(id) on delete cascade on update cascade,
  item_id varchar(255) default '' not null, item_type varchar(255) default '' not null,
  play_count integer default 0, play_date datetime, rating integer default 0, starred bool default FALSE not null,
  starred_at datetime, rated_at datetime, unique (user_id, item_id, item_type)
)"""

_EXTRA = [
    """CREATE TABLE user_library (user_id varchar(255) not null, library_id integer not null,
       primary key (user_id, library_id), foreign key (user_id) references user(id) on delete cascade,
       foreign key (library_id) references library(id) on delete cascade)""",
    "CREATE TABLE property (id varchar(255) not null primary key, value varchar(255) default '' not null)",
    """CREATE TABLE goose_db_version (id integer primary key autoincrement, version_id integer not null,
       is_applied integer not null, tstamp timestamp default (datetime('now')))""",
    "CREATE INDEX media_file_path on media_file (path)",
    "CREATE INDEX annotation_rating on annotation (rating)",
    "CREATE INDEX annotation_starred on annotation (starred)",
]


@dataclass
class Annotation:
    """One user's marks on a track: stars 1-5 (0 = unrated), loved (``starred``), plays."""

    user: str
    rating: int = 0
    starred: bool = False
    play_count: int = 0
    play_date: str | None = None  # as Navidrome writes it: '2024-05-01 12:00:00+00:00'


@dataclass
class NavidromeSong:
    """One ``media_file`` row; ``path`` relative to its library's folder (absolute for a legacy database)."""

    path: str
    title: str = ""
    artist: str = ""
    album: str = ""
    album_artist: str = ""
    genres: Sequence[str] = ()
    year: int = 0
    track_number: int = 0
    duration: float = 0.0
    missing: bool = False
    library_id: int = 1
    annotations: Sequence[Annotation] = field(default_factory=tuple)


def write_navidrome_db(path: Path, songs: Iterable[NavidromeSong], users: Mapping[str, bool] | None = None,
                       libraries: Mapping[int, str] | None = None, legacy: bool = False) -> Path:
    """Write a Navidrome database at ``path``: ``users`` maps user names to is_admin (default one admin, 'admin'),
    ``libraries`` ids to folders (default ``{1: '/music'}``). Returns ``path``."""
    users = {"admin": True} if users is None else users
    libraries = {1: "/music"} if libraries is None else libraries
    path = Path(path)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        for ddl in (_USER, _LIBRARY, _MEDIA_FILE.format(new_scanner="" if legacy else _NEW_SCANNER_COLUMNS),
                    _ANNOTATION, *_EXTRA):
            conn.execute(ddl)
        ids = {name: f"user-{i}" for i, name in enumerate(users)}
        for i, (name, admin) in enumerate(users.items()):
            conn.execute("INSERT INTO user (id, user_name, name, is_admin, created_at, updated_at) VALUES "
                         "(?, ?, ?, ?, ?, ?)", (ids[name], name, name.title(), admin,
                                                f"2024-01-0{1 + i % 9} 10:00:00+00:00", "2024-01-01 10:00:00+00:00"))
        for lib_id, folder in libraries.items():
            conn.execute("INSERT INTO library (id, name, path) VALUES (?, ?, ?)", (lib_id, f"Library {lib_id}", folder))
        for i, song in enumerate(songs):
            row = {"id": f"mf-{i}", "path": song.path, "title": song.title, "album": song.album,
                   "artist": song.artist, "album_artist": song.album_artist, "genre": song.genres[0] if song.genres
                   else "", "year": song.year, "track_number": song.track_number, "duration": song.duration,
                   "suffix": Path(song.path).suffix.lstrip("."), "library_id": song.library_id}
            if not legacy:
                row |= {"missing": song.missing, "pid": f"mf-{i}",
                        "tags": json.dumps({"genre": list(song.genres)} if song.genres else {})}
            conn.execute(f"INSERT INTO media_file ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         list(row.values()))
            for a in song.annotations:
                conn.execute("INSERT INTO annotation (user_id, item_id, item_type, play_count, play_date, rating, "
                             "starred) VALUES (?, ?, 'media_file', ?, ?, ?, ?)",
                             (ids[a.user], f"mf-{i}", a.play_count, a.play_date, a.rating, a.starred))
        conn.execute("INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, 1), (?, 1)",
                     (20240511220020 if legacy else MIGRATION,))
        conn.commit()
    finally:
        conn.close()
    return path
