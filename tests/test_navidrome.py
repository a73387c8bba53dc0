"""The Navidrome reader on databases shaped by Navidrome's migrations: paths, ratings and loves, users, read-only."""

from __future__ import annotations

import pytest

from recsys.library.sources.clementine import PlayerDBError
from recsys.library.sources.navidrome import read_navidrome_db
from recsys.synth.navidrome_db import Annotation, NavidromeSong, write_navidrome_db
from recsys.synth.player_db import SynthSong, write_clementine_db

SONGS = [
    NavidromeSong("Artist/Album/01 rated.flac", title="Rated", artist="A", album="Al", album_artist="AA",
                  genres=("Rock", "Pop"), year=1999, track_number=1, duration=201.5,
                  annotations=[Annotation("admin", rating=2, play_count=7, play_date="2024-05-01 12:00:00+00:00"),
                               Annotation("bob", rating=5)]),
    NavidromeSong("Artist/Album/02 loved.flac", title="Loved", annotations=[Annotation("admin", starred=True)]),
    NavidromeSong("Artist/Album/03 both.flac", title="Both", annotations=[Annotation("admin", rating=1, starred=True)]),
    NavidromeSong("Artist/Album/04 plain.ogg", title="Plain"),
    NavidromeSong("Artist/Album/05 gone.mp3", title="Gone", missing=True),
]


@pytest.fixture
def music(tmp_path):
    (tmp_path / "music").mkdir()
    return str(tmp_path / "music")


def _db(tmp_path, music, users=None, songs=SONGS, name="navidrome.db", **kw):
    return write_navidrome_db(tmp_path / name, songs, users=users or {"admin": True, "bob": False},
                              libraries={1: music}, **kw)


def test_tracks_ratings_loves_and_plays(tmp_path, music):
    lib = read_navidrome_db(_db(tmp_path, music))
    assert lib.kind == "navidrome" and lib.user == "admin"
    by_title = {t.title: t for t in lib.tracks}
    assert sorted(by_title) == ["Both", "Loved", "Plain", "Rated"] and lib.skipped_unavailable == 1
    rated = by_title["Rated"]
    assert rated.path == f"{music}/Artist/Album/01 rated.flac" and rated.key == rated.path
    assert (rated.artist, rated.album, rated.albumartist, rated.genre) == ("A", "Al", "AA", "Rock; Pop")
    assert (rated.year, rated.track_number, rated.length_s) == (1999, 1, 201.5)
    assert rated.stars == pytest.approx(2.0) and rated.playcount == 7 and rated.lastplayed == 1714564800
    assert by_title["Loved"].stars == pytest.approx(4.0)  # loved and unrated: 4 stars
    assert by_title["Both"].stars == pytest.approx(1.0)  # rated and loved: the stars win
    assert by_title["Plain"].rating is None and by_title["Plain"].year is None
    assert read_navidrome_db(_db(tmp_path, music, name="b.db"), loved_stars=5).tracks[1].stars == pytest.approx(5.0)


def test_users(tmp_path, music):
    db = _db(tmp_path, music)
    bob = read_navidrome_db(db, user="Bob")
    assert bob.user == "bob" and {t.title: t.stars for t in bob.tracks}["Rated"] == pytest.approx(5.0)
    with pytest.raises(PlayerDBError, match=r"has no user 'carol' \(users: admin \(admin\), bob\): set navidrome.user"):
        read_navidrome_db(db, user="carol")
    two_admins = _db(tmp_path, music, users={"admin": True, "bob": True}, name="two.db")
    with pytest.raises(PlayerDBError, match=r"several users \(admin \(admin\), bob \(admin\)\): say whose"):
        read_navidrome_db(two_admins)


def test_path_map_and_missing_music_folder(tmp_path, music):
    db = write_navidrome_db(tmp_path / "navidrome.db", SONGS[:1], users={"admin": True, "bob": False},
                            libraries={1: "/music-absent-here"})
    with pytest.raises(PlayerDBError, match=r"music folder /music-absent-here .* does not exist on this machine: .*"
                                            r"navidrome.path_map") as err:
        read_navidrome_db(db)
    assert "\n" not in str(err.value)
    lib = read_navidrome_db(db, path_map={"/music-absent-here/": music})
    assert [t.path for t in lib.tracks] == [f"{music}/Artist/Album/01 rated.flac"]


def test_legacy_absolute_paths(tmp_path, music):
    songs = [NavidromeSong(f"{music}/x/a.flac", title="A", annotations=[Annotation("admin", rating=4)])]
    lib = read_navidrome_db(_db(tmp_path, music, users={"admin": True}, songs=songs, legacy=True))
    assert [(t.path, t.stars) for t in lib.tracks] == [(f"{music}/x/a.flac", pytest.approx(4.0))]


def test_the_synthetic_database_follows_the_schema_the_reader_follows(tmp_path, music):
    import sqlite3

    from recsys.library.sources.navidrome import SCHEMA_VERSION
    from recsys.synth.navidrome_db import MIGRATION

    conn = sqlite3.connect(_db(tmp_path, music))
    assert MIGRATION == SCHEMA_VERSION == conn.execute("SELECT max(version_id) FROM goose_db_version").fetchone()[0]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # as Navidrome runs it
    conn.close()


def test_read_only_and_wrong_file(tmp_path, music):
    db = _db(tmp_path, music)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    read_navidrome_db(db)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # no -wal/-shm left
    clementine = write_clementine_db(tmp_path / "clementine.db", [SynthSong(path="/m/a.flac")])
    with pytest.raises(PlayerDBError, match="is not a Navidrome database"):
        read_navidrome_db(clementine)


def test_registered_source_recognises_it_by_its_tables_and_reads_with_the_settings(tmp_path, music):
    from recsys.config import load_settings
    from recsys.library.sources import load_library

    db = _db(tmp_path, music, name="backup-2024.db")
    library = load_library(db, [], settings=load_settings(environ={"RECSYS_NAVIDROME__USER": "bob"}))
    assert library.db_kind == "navidrome" and library.db_user == "bob"
    assert {t.title: t.stars for t in library.tracks}["Rated"] == pytest.approx(5.0)
    assert library.source() == f"{db} (ratings of Navidrome user bob)"
    with pytest.raises(PlayerDBError, match="several users"):  # no user set: two users, two admins
        load_library(_db(tmp_path, music, users={"a": True, "b": True}, songs=[], name="two.db"), [])


def test_paths_map_to_navidrome_and_back():
    from recsys.library.sources.navidrome import _mapped, to_navidrome_path

    path_map = {"/music": "/home/me/Music", "/music/classical": "/mnt/nas/classical"}
    forwards = sorted(path_map.items(), key=lambda kv: -len(kv[0]))
    for theirs in ("/music/a/b.flac", "/music/classical/x.flac", "/music", "/other/c.flac"):
        assert to_navidrome_path(_mapped(theirs, forwards), path_map) == theirs
    assert _mapped("/music/classical/x.flac", forwards) == "/mnt/nas/classical/x.flac"
    assert _mapped("/musicals/y.flac", forwards) == "/musicals/y.flac"  # a folder boundary, not a prefix


def test_an_m3u8_names_the_files_in_navidromes_view_only_for_navidrome_with_a_path_map(tmp_path, music):
    from recsys.app.output import as_written
    from recsys.config import load_settings
    from recsys.playlists import PlaylistEntry

    tracks = [PlaylistEntry(key=k, path=k, start_s=0.0, artist="", title="", album="", track_number=None,
                            duration_s=None) for k in (f"{music}/a/1.flac", "/elsewhere/2.flac")]
    clementine = write_clementine_db(tmp_path / "clementine.db", [SynthSong(path="/m/a.flac")])

    def written(db, fmt="m3u8", path_map=(f"/music={music}",), **kw):
        settings = load_settings(overrides={"library": {"db": str(db), "folders": []},
                                            "navidrome": {"path_map": list(path_map)}}, environ={}, remembered=False)
        got, note = as_written(tracks, fmt, settings, **kw)
        return [t.path for t in got], note

    paths, note = written(_db(tmp_path, music))  # the database recognised by its tables, as path and similar need
    assert paths == ["/music/a/1.flac", "/elsewhere/2.flac"] and "as Navidrome sees them" in note
    assert written(_db(tmp_path, music, name="b.db"), db_kind="navidrome")[0] == paths  # the caller read it
    ours = ([t.path for t in tracks], None)
    assert written(_db(tmp_path, music, name="c.db"), fmt="xspf") == ours  # XSPF: this machine's paths
    assert written(_db(tmp_path, music, name="d.db"), path_map=()) == ours  # Navidrome sees the music where we do
    assert written(clementine) == ours and written(tmp_path / "absent.db") == ours  # not Navidrome's database
    assert written(_db(tmp_path, music, name="e.db"), db_kind=None) == ours  # the caller read music folders alone
    paths, note = written(_db(tmp_path, music, name="f.db"), local_player=True)  # radio --play: a player here
    assert paths == ours[0] and "keeps this machine's paths" in note
