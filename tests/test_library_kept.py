"""The player library kept between runs (recsys.library.kept): a read through it is the fresh taste read, step after
step of a library that changes; it is used when only the history changed; it never holds the history; a garbled,
foreign or unwritable kept file costs a full read, never a wrong result or a traceback."""

from __future__ import annotations

import os
import pickle
import sqlite3
import threading

import pytest

from recsys.app.taste import kept_library_folder
from recsys.guard import Inputs, refusal
from recsys.home.claim import claim_home
from recsys.library import kept
from recsys.library.sources import clementine, load_taste_library
from recsys.library.sources.clementine import read_player_db
from recsys.synth.player_db import SynthSong, file_uri, write_clementine_db, write_strawberry_db

WRITERS = {"clementine": write_clementine_db, "strawberry": write_strawberry_db}
LOCATION = {"clementine": "filename", "strawberry": "url"}
NS = 10**9


def _songs() -> list[SynthSong]:
    songs = [SynthSong(path=f"/m/Ünïcödé #{i}/q{i}.flac", title=f"quiet {i}", album=f"Album {i % 3}",
                       albumartist="Various" if i % 3 == 0 else "", artist=f"Artist {i % 4}", genre="Rock",
                       year=1990 + i, track=i, length_ns=(180 + i) * NS) for i in range(10)]
    return songs + [
        SynthSong(path="/m/rated.flac", title="rated", album="R", artist="A", rating=0.8, playcount=3, lastplayed=7),
        SynthSong(path="/m/played.flac", title="played", album="R", artist="A", playcount=2, lastplayed=5),
        SynthSong(path="/m/skipped.flac", title="skipped", skipcount=4),
        SynthSong(path="/m/zero.flac", title="zero", rating=0.0),  # no stars: a rating in Strawberry only
        SynthSong(path="/m/one-cue.flac", title="cue", cue_path="/m/one-cue.cue", beginning_ns=30 * NS, rating=0.6),
        SynthSong(path="/m/early.flac", title="early", beginning_ns=-5 * NS),  # rejected: starts before the file
        SynthSong(path="/m/gone.flac", title="gone", unavailable=1, rating=1.0),
        SynthSong(path="", url="http://radio.example/stream", title="stream", rating=0.4),
        SynthSong(path="", url="https://radio.example/other", title="other stream"),  # no history: a quiet row
    ]


@pytest.fixture
def full_reads(monkeypatch):
    """How many times the database was read in full (the taste read of every row) rather than through the kept
    library."""
    calls: list[int] = []
    real = clementine._read_taste

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(clementine, "_read_taste", counting)
    return calls


def _sql(db, *steps) -> None:
    """Run ``statement, params, statement, params ...`` in one transaction."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            for statement, params in zip(steps[::2], steps[1::2], strict=True):
                conn.execute(statement, params)
    finally:
        conn.close()


def _read(db, where, full_reads) -> bool:
    """Read through the kept library, check it is the fresh read, and say whether the database was read in full."""
    before = len(full_reads)
    got = read_player_db(db, taste_only=True, kept=where)
    used_full = len(full_reads) > before
    fresh = read_player_db(db, taste_only=True)
    assert got == fresh  # path, kind, every Track, the catalogue's five columns, the counts, the rejected rows
    assert [t.key for t in got.tracks] == [t.key for t in fresh.tracks]
    return used_full


@pytest.mark.parametrize("kind", WRITERS)
def test_the_kept_read_is_the_fresh_read_as_the_library_changes(tmp_path, kind, full_reads):
    db = WRITERS[kind](tmp_path / f"{kind}.db", _songs())
    where = tmp_path / "home" / "cache" / "library"
    loc = LOCATION[kind]
    value = (lambda path: file_uri(path).encode()) if kind == "clementine" else file_uri
    copy_of = "INSERT INTO songs SELECT * FROM songs WHERE title = ?"
    last = "(SELECT max(rowid) FROM songs)"
    history_only = [  # (what changed, SQL, params): the kept library is used, no location decoded
        ("a rating given", "UPDATE songs SET rating = 0.4 WHERE title = 'quiet 1'", ()),
        ("a rating taken back", "UPDATE songs SET rating = -1 WHERE title = 'rated'", ()),
        ("plays and skips", "UPDATE songs SET playcount = playcount + 1, skipcount = 2 WHERE title = 'quiet 2'", ()),
        ("a last play", "UPDATE songs SET lastplayed = 1700000123 WHERE title = 'played'", ()),
        ("a stream rated", "UPDATE songs SET rating = 1.0 WHERE title = 'stream'", ()),
        ("values no player writes", "UPDATE songs SET playcount = 'x7', rating = 'five' WHERE title = 'quiet 3'", (),
         "UPDATE songs SET skipcount = 0.0, rating = 0.0 WHERE title = 'skipped'", ()),
    ]
    structural = [  # the kept library no longer describes the database: read in full, and kept again
        ("a new row", copy_of, ("quiet 3",),  # a copy of a row, then its own location: one write
         f"UPDATE songs SET {loc} = ?, title = 'new' WHERE rowid = {last}", (value("/m/new.flac"),)),
        ("a row deleted", "DELETE FROM songs WHERE title = 'quiet 4'", ()),
        # moved: a location of the same length, the file's ctime new (its mtime is the file's, unchanged)
        ("a file moved", f"UPDATE songs SET {loc} = ?, ctime = ctime + 1 WHERE title = 'quiet 5'",
         (value("/m/Ünïcödé #5/q9.flac"),)),
        ("a tag edited", "UPDATE songs SET title = 'QUIET 6', mtime = mtime + 60 WHERE title = 'quiet 6'", ()),
        ("a file gone", "UPDATE songs SET unavailable = 1 WHERE title = 'quiet 7'", ()),
        ("a tag not UTF-8", "UPDATE songs SET title = CAST(X'4c6174696ee9' AS TEXT), mtime = mtime + 1 "
                            "WHERE title = 'quiet 8'", ()),
    ]
    assert _read(db, where, full_reads)  # nothing kept yet
    assert len(list(where.iterdir())) == 1
    assert not _read(db, where, full_reads)
    for what, *steps in history_only:
        _sql(db, *steps)
        assert not _read(db, where, full_reads), what
    for what, *steps in structural:
        _sql(db, *steps)
        assert _read(db, where, full_reads), what
        _sql(db, "UPDATE songs SET playcount = playcount + 1 WHERE title = 'quiet 9'", ())
        assert not _read(db, where, full_reads), f"history after {what}"
    _sql(db, "UPDATE songs SET rating = 0.2 WHERE title = 'Latin\ufffd'", ())  # the row of the tag that is not UTF-8
    assert not _read(db, where, full_reads)
    # rows that compare (a CUE sheet's segments, a duplicate): read in full every time, as without the kept library
    for what, statement, params in [
        ("a CUE sheet", copy_of, ("played",)),
        ("its second segment", f"UPDATE songs SET beginning = {100 * NS}, title = 'two' WHERE rowid = {last}", ()),
        ("a duplicate row", copy_of, ("rated",)),
    ]:
        _sql(db, statement, params)
        assert _read(db, where, full_reads), what
        _sql(db, "UPDATE songs SET rating = 0.6 WHERE title = 'quiet 9'", ())
        assert _read(db, where, full_reads), f"history after {what}"
    _sql(db, "DELETE FROM songs WHERE rowid IN (SELECT rowid FROM songs WHERE title IN ('two', 'rated') "
             "ORDER BY rowid DESC LIMIT 2)", ())
    assert not _read(db, where, full_reads)  # the structure kept before the CUE sheet is the database's again


@pytest.mark.parametrize("kind", WRITERS)
def test_the_kept_file_holds_no_history(tmp_path, kind, full_reads):
    """Ratings, plays, skips and last plays are read live every run: the kept file has no field for them, and is the
    same whatever they are."""
    db = tmp_path / f"{kind}.db"
    where = tmp_path / "kept"
    kept_files = []
    for history in ((-1.0, 0, 0, -1), (0.8, 5, 2, 1_700_000_000)):
        songs = _songs()
        for song in songs[:12]:
            song.rating, song.playcount, song.skipcount, song.lastplayed = history
        WRITERS[kind](db, songs)
        kept.kept_file(where, db.absolute()).unlink(missing_ok=True)
        assert _read(db, where, full_reads)
        data = kept.load(where, db.absolute())
        kept_files.append({**data, "excluded": sorted(data["excluded"], key=repr)})
    assert set(kept_files[0]) == {
        "format", "db", "kind", "signature", "keys", "paths", "albums", "albumartists", "artists", "genres", "titles",
        "locations", "begins", "lengths", "segments", "years", "numbers", "excluded", "counts", "rejected"}
    assert kept_files[0] == kept_files[1]
    assert len(kept_files[0]["keys"]) == len(kept_files[0]["titles"]) == 15  # every track, not only the rated


@pytest.mark.parametrize("garbage", [
    b"", b"not a pickle", pickle.dumps({"format": kept.FORMAT})[:-3],  # torn
    pickle.dumps({"format": kept.FORMAT + 1, "db": "", "kind": "clementine", "signature": ()}),
    pickle.dumps({"code": os.getcwd}),  # a class or function named in the file: refused, never called
])
def test_a_garbled_kept_file_is_read_around_and_replaced(tmp_path, full_reads, garbage):
    db = write_clementine_db(tmp_path / "c.db", _songs())
    where = tmp_path / "kept"
    where.mkdir()
    kept.kept_file(where, db.absolute()).write_bytes(garbage)
    assert _read(db, where, full_reads)
    assert not _read(db, where, full_reads)  # replaced by a good one


def test_a_kept_file_of_lists_that_do_not_fit_is_read_around(tmp_path, full_reads):
    db = write_clementine_db(tmp_path / "c.db", _songs())
    where = tmp_path / "kept"
    _read(db, where, full_reads)
    data = kept.load(where, db.absolute())
    kept.store(where, db.absolute(), {**data, "titles": data["titles"][:-1]})
    assert _read(db, where, full_reads)


def test_a_kept_file_of_another_database_is_not_used(tmp_path, full_reads):
    """The same rows in another file (a backup, a copy): its own kept file, never the other's."""
    first = write_clementine_db(tmp_path / "a" / "c.db", _songs())
    second = write_clementine_db(tmp_path / "b" / "c.db", _songs())
    where = tmp_path / "kept"
    _read(first, where, full_reads)
    kept.kept_file(where, second.absolute()).write_bytes(kept.kept_file(where, first.absolute()).read_bytes())
    _sql(second, "UPDATE songs SET rating = 0.2 WHERE title = 'quiet 0'", ())
    assert _read(second, where, full_reads)
    assert not _read(second, where, full_reads) and not _read(first, where, full_reads)
    assert len(list(where.iterdir())) == 2


def test_a_home_that_cannot_be_written_reads_in_full(tmp_path, full_reads):
    db = write_clementine_db(tmp_path / "c.db", _songs())
    blocked = tmp_path / "home"
    blocked.write_text("a file where the cache folder's parent should be")
    where = blocked / "cache" / "library"
    assert _read(db, where, full_reads) and _read(db, where, full_reads)
    if os.geteuid() != 0:  # a read-only folder (root writes anyway)
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        assert _read(db, ro, full_reads) and _read(db, ro, full_reads)


def test_two_reads_at_once_leave_a_whole_file(tmp_path):
    db = write_clementine_db(tmp_path / "c.db", _songs())
    where = tmp_path / "kept"
    fresh = read_player_db(db, taste_only=True)
    results, errors = [], []

    def one() -> None:
        try:
            results.append(read_player_db(db, taste_only=True, kept=where))
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [fresh] * 4
    assert kept.load(where, db.absolute()) is not None and len(list(where.iterdir())) == 1


def test_only_a_home_recsys_made_keeps_the_library_and_the_guard_accepts_it(tmp_path, full_reads):
    db = write_clementine_db(tmp_path / "player" / "clementine.db", _songs())
    music = tmp_path / "music"
    music.mkdir()
    assert kept_library_folder(tmp_path / "someone's folder") is None
    home = claim_home(tmp_path / "home", Inputs(db=db, folders=[music]))
    where = kept_library_folder(home)
    assert where == home / "cache" / "library"
    assert refusal(kept.kept_file(where, db.absolute()), Inputs(db=db, folders=[music])) is None
    library, catalogue = load_taste_library(db, [], keep=where)
    assert len(full_reads) == 1 and len(list(where.iterdir())) == 1
    again, same = load_taste_library(db, [], keep=where)
    assert len(full_reads) == 1 and (again.tracks, same) == (library.tracks, catalogue)
