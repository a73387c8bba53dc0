"""The source registry: a player registered by name is found, chosen for the files it recognises, and read."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from recsys.library import sources
from recsys.library.catalogue import Catalogue
from recsys.library.sources import PlayerLibrary, load_library, load_taste_library
from recsys.library.sources.clementine import PlayerDBError
from recsys.library.track import Track


class _FakePlayer:
    name = "fake"

    def __init__(self, db: Path) -> None:
        self.db = db

    def find(self) -> Path | None:
        return self.db

    def recognises(self, path: Path) -> bool:
        return path.suffix == ".fake"

    def read(self, path: Path, settings: object = None, taste_only: bool = False,
             kept: Path | None = None) -> PlayerLibrary:
        return PlayerLibrary(path, "fake", [Track(path="/music/a.flac", title="from fake", rating=0.8),
                                            Track(path="/music/b.flac", album="B")], 0, 0)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A player registered as one module plus one line, the way a new source is added."""
    db = tmp_path / "player.fake"
    db.write_bytes(b"")
    module = types.ModuleType("fake_player")
    module.SOURCE = _FakePlayer(db)
    monkeypatch.setitem(sys.modules, "fake_player", module)
    monkeypatch.setitem(sources.SOURCES, "fake", "fake_player:SOURCE")
    return db


def test_a_registered_source_reads_the_files_it_recognises(fake):
    library = load_library(fake, [])
    assert library.db_kind == "fake" and [t.title for t in library.tracks] == ["from fake", ""]


def test_the_taste_read_keeps_the_rated_tracks_and_catalogues_every_track(fake, tmp_path):
    """A source that gives every track even when asked for the taste alone (this one, Navidrome) is read right too;
    a folder's tracks join the catalogue (the player's entry wins for a file both list)."""
    music = tmp_path / "music"
    music.mkdir()
    library, catalogue = load_taste_library(fake, [music])
    assert [t.title for t in library.tracks] == ["from fake"]
    assert catalogue == Catalogue.of(load_library(fake, [music]).tracks)
    assert catalogue.keys == ["/music/a.flac", "/music/b.flac"] and catalogue.albums == ["", "B"]


def test_auto_detection_asks_every_registered_source(fake):
    library = load_library(None, [])  # no Clementine or Strawberry in the test's HOME: the fake one is found
    assert library.db_path == fake and library.db_kind == "fake"


def test_a_file_no_source_recognises_goes_to_the_first_source(fake, tmp_path):
    with pytest.raises(PlayerDBError, match="not-a-db.db"):
        load_library(tmp_path / "not-a-db.db", [])


def test_a_merged_catalogue_keeps_its_own_entry_for_a_track_both_list():
    player = Catalogue.of([Track(path="/m/b.flac", album="player's")])
    scan = Catalogue.of([Track(path="/m/a.flac"), Track(path="/m/b.flac", album="file's"), Track(path="/m/c.flac")])
    merged = player.merged(scan)
    assert merged.keys == ["/m/a.flac", "/m/b.flac", "/m/c.flac"] and merged.albums == ["", "player's", ""]
