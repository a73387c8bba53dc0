"""The beets reader on beets-shaped libraries: byte paths, the music directory from beets' config, flexible fields,
rating scales, --db recognition, taste_only, read-only. The real beets program is in test_beets_real.py."""

from __future__ import annotations

import hashlib
import os

import pytest

from recsys.config import load_settings
from recsys.library.sources import load_taste_library, read_source_db, recognising_source
from recsys.library.sources.beets import read_beets_db
from recsys.library.sources.clementine import PlayerDBError
from recsys.synth.beets_db import BeetsItem, write_beets_config, write_beets_db

ITEMS = [
    BeetsItem(b"Artist/Album/01 rated.flac", title="Rated", artist="A", album="Al", albumartist="AA",
              genres=("Rock", "Pop"), year=1999, track=1, length=201.5,
              flexible={"rating": 0.8, "play_count": 7, "skip_count": 2, "last_played": 1714564800.25}),
    BeetsItem(b"Artist/Album/02 played.ogg", title="Played", artist="A", album="Al", flexible={"play_count": "3"}),
    BeetsItem(b"Artist/Album/03 plain.mp3", title="Plain", artist="B", album="Bl", albumartist="BB"),
    BeetsItem(b"/elsewhere/04 outside.flac", title="Outside", flexible={"rating": "0.0", "comment_x": "hi"}),
]


@pytest.fixture
def music(tmp_path):
    (tmp_path / "music").mkdir()
    return tmp_path / "music"


def _library(tmp_path, music, items=ITEMS, config=True, **kw):
    beetsdir = tmp_path / "beetsdir"
    db = write_beets_db(beetsdir / "library.db", items, **kw)
    if config:
        write_beets_config(beetsdir, music, db)
    return db


def test_paths_tags_and_flexible_fields(tmp_path, music):
    lib = read_beets_db(_library(tmp_path, music))
    assert lib.kind == "beets" and lib.skipped_urls == 0
    by_title = {t.title: t for t in lib.tracks}
    rated = by_title["Rated"]
    assert rated.path == str(music / "Artist/Album/01 rated.flac") == rated.key  # relative: under `directory`
    assert (rated.rating, rated.playcount, rated.skipcount, rated.lastplayed) == (0.8, 7, 2, 1714564800)
    assert (rated.genre, rated.year, rated.track_number, rated.length_s) == ("Rock; Pop", 1999, 1, 201.5)
    assert (rated.artist, rated.album, rated.albumartist) == ("A", "Al", "AA")
    assert by_title["Played"].playcount == 3 and by_title["Played"].rating is None
    plain = by_title["Plain"]
    assert (plain.rating, plain.playcount, plain.year, plain.track_number, plain.length_s) == (None, 0, None, None,
                                                                                               None)
    assert by_title["Outside"].path == "/elsewhere/04 outside.flac"  # absolute: outside the directory
    assert by_title["Outside"].rating == 0.0  # a rating of 0 is a real rating (no stars), not "unrated"


def test_directory_from_beetsdir_the_setting_or_beside_the_db(tmp_path, music, monkeypatch):
    db = _library(tmp_path, music, items=ITEMS[:1], config=False)
    elsewhere = tmp_path / "cfg"
    write_beets_config(elsewhere, music)
    monkeypatch.setenv("BEETSDIR", str(elsewhere))
    assert read_beets_db(db).tracks[0].path.startswith(str(music) + "/")
    monkeypatch.delenv("BEETSDIR")
    other = tmp_path / "other"
    other.mkdir()
    assert read_beets_db(db, directory=str(other)).tracks[0].path.startswith(str(other) + "/")
    assert read_beets_db(db, config=str(elsewhere / "config.yaml")).tracks[0].path.startswith(str(music) + "/")


def test_relative_paths_without_a_config_are_one_clear_line(tmp_path, music):
    db = _library(tmp_path, music, config=False)
    with pytest.raises(PlayerDBError, match=r"relative to beets' music directory.*set beets.config"):
        read_beets_db(db)
    write_beets_config(db.parent, tmp_path / "not-here")
    with pytest.raises(PlayerDBError, match=r"not-here \(from 'directory' in .*config.yaml\) does not exist.*"
                                            "beets.directory"):
        read_beets_db(db)
    (db.parent / "config.yaml").write_text("directory: [unclosed\n")
    with pytest.raises(PlayerDBError, match="is not valid YAML"):
        read_beets_db(db)


def test_a_name_that_is_not_utf8_keeps_the_file_systems_key(tmp_path, music):
    raw = os.fsencode(music) + b"/caf\xe9 latin-1.flac"
    with open(raw, "wb") as f:
        f.write(b"x")
    lib = read_beets_db(_library(tmp_path, music, items=[BeetsItem(b"caf\xe9 latin-1.flac", title="Latin")]))
    listed = [os.path.join(str(music), name) for name in os.listdir(str(music))]
    assert lib.tracks[0].key in listed


@pytest.mark.parametrize(("values", "scale", "expected"), [
    (["0.8", "1", "0.2"], 0, [0.8, 1.0, 0.2]),  # beets' own 0-1
    (["4", "5", "1"], 0, [0.8, 1.0, 0.2]),  # stars, read from the library
    (["8", "10", "2"], 0, [0.8, 1.0, 0.2]),  # tenths
    (["1", "1", "1"], 5, [0.2, 0.2, 0.2]),  # one star each: only the setting can tell
    (["0.8", "7", "not a number"], 1, [0.8, None, None]),  # outside the scale, or text: unrated
])
def test_rating_scales(tmp_path, music, values, scale, expected):
    items = [BeetsItem(f"{i}.flac".encode(), title=str(i), flexible={"rating": v}) for i, v in enumerate(values)]
    lib = read_beets_db(_library(tmp_path, music, items=items), rating_scale=scale)
    assert [t.rating for t in sorted(lib.tracks, key=lambda t: t.title)] == pytest.approx(expected)


def test_older_genre_column(tmp_path, music):
    lib = read_beets_db(_library(tmp_path, music, items=ITEMS[:1], old_genre_column=True))
    assert lib.tracks[0].genre == "Rock"


def test_db_recognised_and_read_with_the_settings(tmp_path, music, monkeypatch):
    db = _library(tmp_path, music, config=False)
    assert recognising_source(db).name == "beets"
    monkeypatch.setenv("RECSYS_BEETS__DIRECTORY", str(music))
    monkeypatch.setenv("RECSYS_BEETS__RATING_SCALE", "1")
    lib = read_source_db(db, load_settings())
    assert lib.kind == "beets" and len(lib.tracks) == 4


def test_found_at_its_usual_place(tmp_path, music, monkeypatch):
    from recsys.library.sources import load_library
    from recsys.library.sources.beets import SOURCE

    assert SOURCE.find() is None  # the tests' empty HOME: no beets library
    db = _library(tmp_path, music)  # beetsdir/config.yaml names beetsdir/library.db
    monkeypatch.setenv("BEETSDIR", str(db.parent))
    assert SOURCE.find() == db
    lib = load_library(None, [])
    assert lib.db_kind == "beets" and lib.db_path == db and len(lib.tracks) == 4


def test_taste_only_catalogue_has_every_track(tmp_path, music):
    db = _library(tmp_path, music)
    whole = read_beets_db(db)
    lib = read_beets_db(db, taste_only=True)
    assert sorted(t.title for t in lib.tracks) == ["Outside", "Played", "Rated"]
    assert lib.catalogue.keys == [t.key for t in whole.tracks] == lib.catalogue.paths
    assert lib.catalogue.albums == [t.album for t in whole.tracks]
    assert lib.catalogue.albumartists == [t.albumartist for t in whole.tracks]
    assert lib.catalogue.artists == [t.artist for t in whole.tracks]
    library, catalogue = load_taste_library(db, [])
    assert library.db_kind == "beets" and len(catalogue) == 4 and len(library.tracks) == 3


def test_never_written(tmp_path, music):
    db = _library(tmp_path, music)
    def state():  # the bytes, the mtime, and every file beside it (a journal or side file left behind would show)
        return hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns, sorted(os.listdir(db.parent))

    before = state()
    read_beets_db(db)
    read_beets_db(db, taste_only=True)
    assert state() == before


@pytest.fixture(scope="module")
def synth_home(tmp_path_factory):
    from synth_home import make_home

    return make_home(tmp_path_factory.mktemp("home"))


def test_similar_to_several_tracks_and_those_not_embedded(synth_home):
    """What `beet similar` calls: the neighbours of several tracks together, the tracks themselves left out."""
    from recsys.app.settings import command_settings
    from recsys.app.similar import find_similar, find_similar_to_tracks
    from recsys.errors import RecsysError

    h = synth_home
    settings = command_settings(None, str(h.home))
    group = [s.path for s, g in zip(h.songs, h.styles, strict=True) if g == 0][:3]
    result = find_similar_to_tracks(settings, [*group, "/not/embedded.flac"], k=5)
    assert [q.path for q in result.queries] == group and len(result.neighbours) == 5
    assert not {n.path for n in result.neighbours} & set(group)
    assert all(h.styles[[s.path for s in h.songs].index(n.path)] == 0 for n in result.neighbours)
    assert result.notes == ["1 of the 4 tracks are not in the index (not embedded yet?): left out"]
    one = find_similar_to_tracks(settings, group[:1], k=5)
    assert [n.key for n in one.neighbours] == [n.key for n in find_similar(settings, group[0], k=5).neighbours]
    with pytest.raises(RecsysError, match="none of the 1 tracks .* run `recsys embed`"):
        find_similar_to_tracks(settings, ["/not/embedded.flac"])


def test_playlist_seeded_by_tracks_leaves_out_those_not_embedded(synth_home, tmp_path):
    """What `beet recplay` calls: seeds given as track keys; one not in the index is a note, not a failure."""
    from recsys.app.playlist import PlaylistRequest, make_playlist
    from recsys.app.settings import command_settings
    from recsys.errors import RecsysError

    h = synth_home
    settings = command_settings(None, str(h.home), db=str(h.db))
    seeds = [s.path for s, g in zip(h.songs, h.styles, strict=True) if g == 1][:2]
    result = make_playlist(settings, PlaylistRequest(top_n=4, out=str(tmp_path / "p.xspf"),
                                                     seed_tracks=[*seeds, "/not/embedded.flac"]))
    assert result.tracks and not {t.path for t in result.tracks} & set(seeds)
    assert "1 of the 3 seed tracks are not in the index (not embedded yet?): left out" in result.notes
    with pytest.raises(RecsysError, match="none of the 1 seed tracks is in the index"):
        make_playlist(settings, PlaylistRequest(out=str(tmp_path / "q.xspf"), seed_tracks=["/not/embedded.flac"]))


def test_a_row_without_a_path_is_that_rows_failure(tmp_path, music):
    lib = read_beets_db(_library(tmp_path, music, items=[BeetsItem(b"", title="no file"), *ITEMS[3:]], config=False))
    assert lib.skipped_urls == 1 and [t.title for t in lib.tracks] == ["Outside"]  # no config needed: none relative
