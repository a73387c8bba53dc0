"""The player database reader on Clementine- and Strawberry-shaped databases: decoding, ratings, CUE, read-only."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from recsys.library.catalogue import Catalogue
from recsys.library.sources import clementine as player_db
from recsys.library.sources.clementine import PlayerDBError, find_player_db, location_path, read_player_db
from recsys.synth.player_db import SynthSong, file_uri, write_clementine_db, write_strawberry_db

HOSTILE = [
    "/music/with space/a  b.flac",
    "/music/#hash/track #1.mp3",
    "/music/100% pure/50%25 off.ogg",
    "/music/Tom & Jerry/rock&roll.wav",
    "/music/quotes/it's \"quoted\".flac",
    "/music/日本語/夜の曲.flac",
    "/music/Über/Ünïcödé — Ночь.mp3",
    "/music/odd?query=1/x;y,z+w.flac",
]
WRITERS = {"clementine": write_clementine_db, "strawberry": write_strawberry_db}


def _library(tmp_path, kind, songs):
    return read_player_db(WRITERS[kind](tmp_path / f"{kind}.db", songs))


def _files(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.parametrize("kind", WRITERS)
def test_paths_round_trip_through_uris(tmp_path, kind):
    lib = _library(tmp_path, kind, [SynthSong(path=p, title=str(i)) for i, p in enumerate(HOSTILE)])
    assert lib.kind == kind
    assert sorted(t.path for t in lib.tracks) == sorted(HOSTILE)
    assert {t.title: t.path for t in lib.tracks} == {str(i): p for i, p in enumerate(HOSTILE)}
    assert all(not t.segment and t.key == t.path for t in lib.tracks)


def test_uri_decoding():
    assert file_uri("/a b/#1 100%.flac") == "file:///a%20b/%231%20100%25.flac"
    assert file_uri("/Ü") == "file:///%C3%9C"
    assert location_path(b"file:///a%20b/%231%20100%25.flac") == "/a b/#1 100%.flac"
    # a BLOB with nothing to unquote or split takes a shortcut: it must agree with the general way
    assert location_path(b"file:///m/a b.flac") == "/m/a b.flac"
    assert location_path(b"file:///m/a.flac?x=1#y") == "/m/a.flac"
    assert location_path(b"file:///m/\xe9.mp3") == os.fsdecode(b"/m/\xe9.mp3")
    assert location_path("file://localhost/m/%C3%9C.mp3") == "/m/Ü.mp3"
    assert location_path("/plain/path.mp3") == "/plain/path.mp3"
    for other in ("http://radio/stream", "https://x/y.mp3", "spotify:track:1", "tidal:1", "subsonic:2",
                  "file://server/share/a.mp3", "", None):
        assert location_path(other) is None
    raw = os.fsdecode(b"/m/latin1-\xe9.mp3")  # a file name that is not UTF-8 survives as it would from os.listdir
    assert location_path(file_uri(raw)) == raw


@pytest.mark.parametrize("kind", WRITERS)
def test_fields_are_mapped(tmp_path, kind):
    song = SynthSong(path="/m/a.flac", title="T", artist="A", album="Al", albumartist="AA", genre="G", year=1999,
                     track=7, rating=0.6, playcount=12, skipcount=3, lastplayed=1_700_000_000,
                     length_ns=183_500_000_000)
    (t,) = _library(tmp_path, kind, [song]).tracks
    assert (t.title, t.artist, t.album, t.albumartist, t.genre) == ("T", "A", "Al", "AA", "G")
    assert (t.year, t.track_number, t.playcount, t.skipcount, t.lastplayed) == (1999, 7, 12, 3, 1_700_000_000)
    assert t.rating == pytest.approx(0.6) and t.stars == pytest.approx(3.0)
    assert t.length_s == pytest.approx(183.5) and t.start_s == 0.0 and not t.segment


@pytest.mark.parametrize("kind", WRITERS)
def test_unknown_values_become_none(tmp_path, kind):
    (t,) = _library(tmp_path, kind, [SynthSong(path="/m/a.flac", year=0, track=-1, lastplayed=-1)]).tracks
    assert (t.year, t.track_number, t.lastplayed, t.length_s, t.rating) == (None, None, None, None, None)


@pytest.mark.parametrize("kind, zero", [("clementine", None), ("strawberry", 0.0)])
def test_ratings(tmp_path, kind, zero):
    ratings = {"unrated": -1.0, "zero": 0.0, "three": 0.6, "five": 1.0, "bogus": 3.0}
    songs = [SynthSong(path=f"/m/{name}.flac", title=name, rating=r) for name, r in ratings.items()]
    got = {t.title: t.rating for t in _library(tmp_path, kind, songs).tracks}
    assert got == {"unrated": None, "zero": zero, "three": pytest.approx(0.6), "five": 1.0, "bogus": None}


@pytest.mark.parametrize("kind", WRITERS)
def test_cue_rows_are_distinct_tracks(tmp_path, kind):
    ns = 10**9
    songs = [
        SynthSong(path="/m/live.flac", title="one", beginning_ns=0, length_ns=200 * ns),
        SynthSong(path="/m/live.flac", title="two", beginning_ns=200 * ns, length_ns=150 * ns),
        SynthSong(path="/m/live.flac", title="three", beginning_ns=350_500_000_000, length_ns=0),
        SynthSong(path="/m/single-cue.flac", title="only", cue_path="/m/single-cue.cue", length_ns=60 * ns),
        SynthSong(path="/m/plain.flac", title="plain", length_ns=90 * ns),
    ]
    tracks = {t.title: t for t in _library(tmp_path, kind, songs).tracks}
    assert len({t.key for t in tracks.values()}) == 5
    assert [(tracks[n].start_s, tracks[n].length_s) for n in ("one", "two", "three")] == [
        (0.0, 200.0), (200.0, 150.0), (350.5, None)]
    assert all(tracks[n].segment for n in ("one", "two", "three", "only"))
    assert tracks["two"].key == "/m/live.flac@200.000"
    assert tracks["only"].key == "/m/single-cue.flac@0.000"
    assert not tracks["plain"].segment and tracks["plain"].key == "/m/plain.flac"


def test_duplicate_rows_keep_the_one_that_knows_more(tmp_path):
    songs = [SynthSong(path="/m/a.flac", title="first"), SynthSong(path="/m/a.flac", title="rated", rating=0.8)]
    lib = _library(tmp_path, "clementine", songs)
    assert [t.title for t in lib.tracks] == ["rated"] and lib.duplicates == 1


@pytest.mark.parametrize("kind", WRITERS)
def test_streams_and_unavailable_are_skipped_and_counted(tmp_path, kind):
    songs = [
        SynthSong(path="/m/a.flac"),
        SynthSong(path="", url="http://radio.example/stream"),
        SynthSong(path="", url="https://x.example/b.mp3"),
        SynthSong(path="", url="spotify:track:4uLU6hMCjMI75M1A2tKUQC"),
        SynthSong(path="", url="tidal:12345"),
        SynthSong(path="", url="subsonic:67"),
        SynthSong(path="/m/gone.flac", unavailable=1),
    ]
    lib = _library(tmp_path, kind, songs)
    assert [t.path for t in lib.tracks] == ["/m/a.flac"]
    assert (lib.skipped_urls, lib.skipped_unavailable) == (5, 1)


def test_reading_writes_nothing(tmp_path):
    db = write_clementine_db(tmp_path / "clementine.db", [SynthSong(path=p) for p in HOSTILE])
    before = _files(tmp_path)
    assert len(read_player_db(db).tracks) == len(HOSTILE)
    assert _files(tmp_path) == before


def test_wal_database_is_read_without_leaving_side_files(tmp_path):
    db = write_strawberry_db(tmp_path / "strawberry.db", [SynthSong(path="/m/a.flac", title="x")])
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    before = _files(tmp_path)
    assert sorted(before) == ["strawberry.db"]
    assert [t.title for t in read_player_db(db).tracks] == ["x"]
    assert _files(tmp_path) == before


def test_reads_last_commit_while_a_writer_holds_a_wal_transaction(tmp_path):
    db = write_strawberry_db(tmp_path / "s.db", [SynthSong(path="/m/a.flac", title="old")])
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("UPDATE songs SET title = 'committed'")
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE songs SET title = 'uncommitted'")
        writer.execute("INSERT INTO songs (url) VALUES ('file:///m/new.flac')")
        assert [t.title for t in read_player_db(db, timeout_s=0.5).tracks] == ["committed"]
        writer.execute("COMMIT")
        assert sorted(t.title for t in read_player_db(db, timeout_s=0.5).tracks) == ["", "uncommitted"]
    finally:
        writer.close()


def test_locked_database_is_a_clear_error(tmp_path):
    db = write_clementine_db(tmp_path / "clementine.db", [SynthSong(path="/m/a.flac")])
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # a rollback-journal writer in the middle of its commit
        with pytest.raises(PlayerDBError, match="locked") as err:
            read_player_db(db, timeout_s=0.2)
    finally:
        writer.close()
    assert str(db) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("wal", [False, True])
def test_read_only_file_and_folder(tmp_path, wal):
    folder = tmp_path / "ro"
    db = write_clementine_db(folder / "clementine.db", [SynthSong(path="/m/a.flac", title="x")])
    if wal:
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        before = _files(folder)
        assert [t.title for t in read_player_db(db).tracks] == ["x"]
        assert _files(folder) == before
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)


@pytest.mark.parametrize("writable", [False, True])
def test_wal_left_by_a_crashed_player(tmp_path, writable):
    """A -wal file without its -shm (the player crashed): its commits are read, and nothing appears beside the
    database, in a folder we may write (SQLite created the -shm there) as in one we may not."""
    db = write_strawberry_db(tmp_path / "s.db", [SynthSong(path="/m/a.flac", title="old")])
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("UPDATE songs SET title = 'in the wal'")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal"):  # what a crash leaves: the database and its WAL, not checkpointed
        (crashed / f"s.db{suffix}").write_bytes((tmp_path / f"s.db{suffix}").read_bytes())
    conn.close()
    before = _files(crashed)
    if not writable:
        crashed.chmod(0o555)
    try:
        assert [t.title for t in read_player_db(crashed / "s.db").tracks] == ["in the wal"]
    finally:
        crashed.chmod(0o755)
    assert _files(crashed) == before


def test_find_player_db(tmp_path):
    assert find_player_db(tmp_path) is None
    strawberry = tmp_path / ".local/share/strawberry/strawberry/strawberry.db"
    write_strawberry_db(strawberry, [])
    assert find_player_db(tmp_path) == strawberry
    clementine = tmp_path / ".config/Clementine/clementine.db"
    write_clementine_db(clementine, [])
    assert find_player_db(tmp_path) == clementine


def _raises(db, *words):
    with pytest.raises(PlayerDBError) as err:
        read_player_db(db)
    message = str(err.value)
    assert "\n" not in message and str(db) in message
    for word in words:
        assert word in message
    return message


def test_error_missing(tmp_path):
    _raises(tmp_path / "nope.db", "does not exist", "--db")


def test_error_folder(tmp_path):
    _raises(tmp_path, "folder")


def test_error_not_sqlite(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("hello, this is not a database\n" * 20)
    _raises(text, "not a SQLite database")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    _raises(empty, "not a SQLite database")


def test_error_damaged(tmp_path):
    db = write_clementine_db(tmp_path / "c.db", [SynthSong(path=f"/m/{i}.flac") for i in range(200)])
    data = bytearray(db.read_bytes())
    data[100:] = bytes(len(data) - 100)  # keep the header, wipe every page
    db.write_bytes(bytes(data))
    _raises(db, "database")


def test_error_no_songs_table(tmp_path):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE albums (name TEXT)")
        conn.execute("CREATE TABLE artists (name TEXT)")
    conn.close()
    message = _raises(db, "'songs'")
    assert "albums, artists" in message


def test_error_songs_without_location(tmp_path):
    db = tmp_path / "odd.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE songs (title TEXT, path TEXT)")
    conn.close()
    message = _raises(db, "filename", "url")
    assert "path, title" in message


def test_error_unreadable(tmp_path, monkeypatch):
    db = write_clementine_db(tmp_path / "c.db", [SynthSong(path="/m/a.flac")])
    if os.geteuid() == 0:  # root reads any file: make the open fail as it would for a user without permission
        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(player_db, "open", denied, raising=False)
    else:
        db.chmod(0)
    try:
        _raises(db, "permission denied")
    finally:
        db.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_garbage_values_are_unknown_not_a_crash(tmp_path):
    db = write_strawberry_db(tmp_path / "s.db", [SynthSong(path="/m/a.flac", title="x")])
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE songs SET year = 'nineteen', rating = 'five', playcount = '', length = 'long'")
    conn.close()
    (t,) = read_player_db(db).tracks
    assert (t.title, t.year, t.rating, t.playcount, t.length_s) == ("x", None, None, 0, None)


def test_unlocked_read_of_a_changing_file_is_retried_then_refused(tmp_path, monkeypatch):
    db = write_strawberry_db(tmp_path / "s.db", [SynthSong(path="/m/a.flac")])
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # no -wal file afterwards: read without locking
    conn.close()
    ticks = iter(range(100))
    monkeypatch.setattr(player_db, "_fingerprint", lambda path: next(ticks))  # a file that changes under every read
    _raises(db, "kept changing")


def test_track_from_values_is_the_same_track_as_the_constructor():
    from recsys.library.track import Track, track_from_values

    for values in (("/m/a.flac", 0.0, 240.0, False, "t", "a", "al", "", "Rock", 2001, 3, 0.8, 4, 1, 17),
                   ("/m/cue.flac", 80.0, None, True, "", "", "", "", "", None, None, None, 0, 0, None)):
        fast, slow = track_from_values(values), Track(*values)
        assert fast == slow and hash(fast) == hash(slow) and fast.key == slow.key and vars(fast) == vars(slow)


@pytest.mark.parametrize("kind", WRITERS)
def test_the_taste_read_is_the_full_read_less_the_tracks_without_history(tmp_path, kind):
    """`taste_only` (playlist, train-classifier, eval --playlist) builds Tracks only for rows that may carry a rating,
    plays or skips; every track with one is there, equal, and the catalogue is the whole library's, even across
    duplicate rows (the richer wins, whichever comes first), CUE segments and unusual values."""
    ns = 10**9
    songs = [
        SynthSong(path="/m/plain.flac", title="plain", album="A", artist="X"),
        SynthSong(path="/m/rated.flac", album="A", albumartist="Various", artist="Y", rating=0.8),
        SynthSong(path="/m/zero.flac", album="B", rating=0.0),  # no stars: a rating in Strawberry, not Clementine
        SynthSong(path="/m/played.flac", album="B", playcount=2, lastplayed=5),
        SynthSong(path="/m/skipped.flac", skipcount=4),
        SynthSong(path="/m/dup.flac", title="plain first", lastplayed=9),
        SynthSong(path="/m/dup.flac", title="rated later", album="D", rating=0.2),
        SynthSong(path="/m/dup2.flac", title="played first", playcount=3),
        SynthSong(path="/m/dup2.flac", title="plain later", album="E"),
        SynthSong(path="/m/live.flac", title="one", beginning_ns=0, length_ns=200 * ns, rating=1.0),
        SynthSong(path="/m/live.flac", title="two", beginning_ns=200 * ns, album="Live"),
        SynthSong(path="/m/gone.flac", unavailable=1, rating=1.0),
    ]
    path = tmp_path / f"{kind}.db"
    WRITERS[kind](path, songs)
    full = read_player_db(path)
    taste = read_player_db(path, taste_only=True)
    with_history = [t for t in full.tracks if t.has_history]
    assert [t for t in taste.tracks if t.has_history] == with_history
    assert len(taste.tracks) < len(full.tracks) and {t.title for t in with_history} >= {"rated later", "played first"}
    assert taste.catalogue == Catalogue.of(full.tracks)
    assert (taste.duplicates, taste.skipped_unavailable) == (full.duplicates, full.skipped_unavailable) == (2, 1)
    with sqlite3.connect(path) as conn:  # a text play count: not the usual value, so its row is read in full
        conn.execute("UPDATE songs SET playcount = 'x7' WHERE title = 'plain'")
    assert len(read_player_db(path, taste_only=True).tracks) == len(taste.tracks) + 1


@pytest.mark.parametrize("kind", WRITERS)
def test_the_taste_read_of_a_usual_library_reads_its_quiet_rows_as_four_columns(tmp_path, kind):
    """With no path named twice, the taste read takes the rows without rating, plays or skips (the quiet ones: most
    of a large library) as path and tags alone, in bulk, and still gives what the full read gives: the tracks with
    history equal, the catalogue of every track, the same counts; the unusual values of a row send it to the full
    read, never misread it."""
    ns = 10**9
    songs = [
        SynthSong(path="/m/Björk/Homogenic/01 Hunter.flac", title="Hunter", album="Homogenic", artist="Björk"),
        SynthSong(path="/m/東京事変/教育/02 x #1?.flac", album="教育", albumartist="東京事変", artist="東京事変"),
        SynthSong(path="/m/VA/Hits/03 y.flac", album="Hits", albumartist="Various Artists", artist="Z", rating=0.8),
        SynthSong(path="/m/zero.flac", album="B", rating=0.0),  # no stars: a rating in Strawberry, not Clementine
        SynthSong(path="/m/played.flac", album="B", playcount=2, lastplayed=5),
        SynthSong(path="/m/skipped.flac", skipcount=4),
        SynthSong(path="/m/live.flac", title="one", beginning_ns=100 * ns, length_ns=200 * ns, cue_path="/m/l.cue"),
        SynthSong(path="/m/gone.flac", unavailable=1),
        SynthSong(path="/m/radio", url="http://radio/stream"),
        SynthSong(path="/m/odd.flac", album="C"),
        SynthSong(path="/m/text.flac", album="D"),
    ]
    path = tmp_path / f"{kind}.db"
    WRITERS[kind](path, songs)
    with sqlite3.connect(path) as conn:  # values no player writes, each judged by the rules of the full read
        conn.execute("UPDATE songs SET playcount = '0', album = 7 WHERE album = 'C'")
        conn.execute("UPDATE songs SET rating = '-1' WHERE album = 'D'")
        if kind == "strawberry":  # a quiet row without an artist (Clementine's columns are NOT NULL)
            conn.execute("UPDATE songs SET artist = NULL WHERE title = 'Hunter'")
    full = read_player_db(path)
    taste = read_player_db(path, taste_only=True)
    assert [t for t in taste.tracks if t.has_history] == [t for t in full.tracks if t.has_history]
    assert taste.catalogue == Catalogue.of(full.tracks) and len(taste.catalogue) == 9
    assert ((taste.skipped_urls, taste.skipped_unavailable, taste.duplicates)
            == (full.skipped_urls, full.skipped_unavailable, full.duplicates) == (1, 1, 0))
    kind_read, quiet, rest = player_db.read_consistent(path, player_db._read_taste)[1]
    assert quiet is not None and len(quiet[0]) + len(rest) == len(songs)
    assert {p for p in quiet[0]} >= {"/m/Björk/Homogenic/01 Hunter.flac", "/m/東京事変/教育/02 x #1?.flac"}
