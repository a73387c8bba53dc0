"""Through the CLI: a Navidrome database as the library (ratings of one user, paths inside a container), the M3U8 of
every playlist command in Navidrome's view, --where on playlist and similar, the library remembered in the home,
`recsys config` saying where each value came from."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from recsys.cli import main
from recsys.library.uri import path_to_uri as file_uri
from recsys.synth.audio import STYLES, synth_track, write_audio
from recsys.synth.mpris import FakePlayer, have_dbus_daemon, private_session_bus
from recsys.synth.navidrome_db import Annotation, NavidromeSong, write_navidrome_db

CONTAINER = "/music-in-container"  # where Navidrome sees the music (never exists here)
GENRES = ["Ambient", "Ambient", "Rock", "Rock", "Christmas", "Ambient"]


def _run(home, *args, env=None):
    result = CliRunner().invoke(main, ["--home", str(home), *args], env=env, catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """Six short tracks in two artists' folders, listed by a Navidrome database in a container's view, embedded."""
    root = tmp_path_factory.mktemp("navidrome-library")
    music = root / "music"
    songs = []
    for i, genre in enumerate(GENRES):
        relative = f"Artist {i % 2}/Album {i % 3}/{i:02d} {genre}.wav"
        (music / relative).parent.mkdir(parents=True, exist_ok=True)
        write_audio(music / relative, synth_track(STYLES[i % len(STYLES)], 4.0, sample_rate=22050, seed=i), 22050,
                    "wav")
        me = [Annotation("me", rating=5 if i < 2 else 1 if i == 2 else 0, play_count=i % 2)]
        songs.append(NavidromeSong(relative, title=f"t{i}", artist=f"Artist {i % 2}", album=f"Album {i % 3}",
                                   genres=(genre,), year=1990 + i, duration=4.0,
                                   annotations=me + [Annotation("other", rating=1)]))
    db = write_navidrome_db(root / "navidrome.db", songs, users={"me": True, "other": False},
                            libraries={1: CONTAINER})
    env = {"RECSYS_NAVIDROME__PATH_MAP": f"{CONTAINER}={music}"}
    home = root / "home"
    r = _run(home, "embed", "--db", str(db), "--encoder", "dsp", "--workers", "1", "-q", env=env)
    assert r.exit_code == 0, r.output
    assert "ratings of Navidrome user me" in r.output and "remembered for the next commands: --db" in r.output
    return root, music, db, home, env


@pytest.fixture
def lib(embedded, tmp_path):
    root, music, db, home, env = embedded
    copy = tmp_path / "home"
    shutil.copytree(home, copy, symlinks=True)
    return music, db, copy, env


def test_navidrome_playlist_with_where_as_m3u8_navidrome_can_import(lib, tmp_path):
    music, db, home, env = lib
    out = tmp_path / "nd.m3u8"
    r = _run(home, "playlist", "--where", "-genre:christmas", "--where", "year:1990..", "--out", str(out),
             "--top-n", "5", env=env)
    assert r.exit_code == 0, r.output
    assert "using the library remembered from an earlier command: --db" in r.output  # the embed's --db
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U" and lines[1].startswith("#PLAYLIST:recsys (taste, ")
    paths = [line for line in lines if not line.startswith("#")]
    assert paths and all(p.startswith(CONTAINER + "/Artist ") for p in paths)  # Navidrome's view of the files
    assert not any("Christmas" in p for p in paths) and not any(p.endswith(("00 Ambient.wav", "01 Ambient.wav"))
                                                                 for p in paths)  # rated: not candidates
    r = _run(home, "playlist", "--where", "genre:christmas", "--json", "--out", str(tmp_path / "x.xspf"), env=env)
    assert r.exit_code == 0, r.output
    picked = json.loads(r.stdout)
    assert [t["path"] for t in picked] == [str(music / "Artist 0/Album 1/04 Christmas.wav")]  # XSPF: local paths


def _m3u8_paths(path):
    return [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]


NAVIDROME_VIEW = "note: the M3U8 names the files as Navidrome sees them (navidrome.path_map)"


def test_path_and_similar_write_m3u8_in_navidromes_view_and_xspf_in_ours(lib, tmp_path):
    music, db, home, env = lib
    a, b = str(music / "Artist 0/Album 0/00 Ambient.wav"), str(music / "Artist 1/Album 0/03 Rock.wav")
    for command in (["path", a, b, "--steps", "4"], ["similar", a, "-k", "3"]):
        r = _run(home, *command, "--out", str(tmp_path / "nd.m3u8"), "--force", "--json", env=env)
        assert r.exit_code == 0, r.output
        printed = [t["path"] for t in json.loads(r.stdout)]  # what the command prints stays this machine's
        assert printed and all(p.startswith(f"{music}/") for p in printed)
        assert _m3u8_paths(tmp_path / "nd.m3u8") == [CONTAINER + p[len(str(music)):] for p in printed]
        assert NAVIDROME_VIEW in r.stderr, command
        r = _run(home, *command, "--out", str(tmp_path / "ours.xspf"), "--force", env=env)
        assert r.exit_code == 0, r.output
        assert str(music) in (tmp_path / "ours.xspf").read_text(encoding="utf-8") and NAVIDROME_VIEW not in r.stderr


@pytest.mark.skipif(not have_dbus_daemon(), reason="dbus-daemon is not installed")
def test_radio_m3u8_in_navidromes_view_but_ours_when_handed_to_a_local_player(lib, tmp_path, monkeypatch):
    music, db, home, env = lib
    playing = str(music / "Artist 0/Album 0/00 Ambient.wav")
    with private_session_bus() as bus:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", bus)
        with FakePlayer(bus, url=file_uri(playing)) as player:
            r = _run(home, "radio", "--out", str(tmp_path / "nd.m3u8"), "--top-n", "3", env=env)
            assert r.exit_code == 0, r.output
            assert NAVIDROME_VIEW in r.stderr
            paths = _m3u8_paths(tmp_path / "nd.m3u8")
            assert paths and all(p.startswith(CONTAINER + "/Artist ") for p in paths)
            r = _run(home, "radio", "--out", str(tmp_path / "local.m3u8"), "--top-n", "3", "--play", env=env)
            assert r.exit_code == 0, r.output
    assert ("OpenUri", (file_uri(str(tmp_path / "local.m3u8")),)) in player.calls
    assert _m3u8_paths(tmp_path / "local.m3u8") == [str(music) + p[len(CONTAINER):] for p in paths]
    assert "keeps this machine's paths for the player it is handed to (--play)" in r.stderr
    assert NAVIDROME_VIEW not in r.stderr


def test_similar_where_reads_ratings_of_the_remembered_navidrome_db(lib):
    music, db, home, env = lib
    query = str(music / "Artist 0/Album 0/00 Ambient.wav")
    r = _run(home, "similar", query, "--where", "genre:ambient", "--json", env=env)
    assert r.exit_code == 0, r.output
    assert {t["album"] for t in json.loads(r.stdout)} <= {"Album 1", "Album 2"}
    assert len(json.loads(r.stdout)) == 2  # the other two Ambient tracks, not the query itself
    r = _run(home, "similar", query, "--where", "rating:none", "--json", env=env)
    assert r.exit_code == 0, r.output
    assert sorted(t["key"].rsplit("/", 1)[1] for t in json.loads(r.stdout)) == [
        "03 Rock.wav", "04 Christmas.wav", "05 Ambient.wav"]  # unrated by 'me' ('other' rated them all)


def test_folders_given_once_are_remembered_and_config_says_so(lib, tmp_path):
    music, db, home, env = lib
    r = _run(home, "embed", "--library", str(music), "--encoder", "dsp", "--workers", "1", "-q")
    assert r.exit_code == 0, r.output
    assert f"remembered for the next commands: no database (was --db {db}), --library {music}" in r.output
    r = _run(home, "status")
    assert r.exit_code == 0, r.output
    assert f"using the library remembered from an earlier command: no database, --library {music}" in r.output
    assert f"library: 6 tracks ({music})" in r.output
    seed = str(music / "Artist 0/Album 0/00 Ambient.wav")
    r = _run(home, "playlist", "--seed", seed, "--out", str(tmp_path / "p.xspf"), "--top-n", "2")
    assert r.exit_code == 0, r.output
    shown = _run(home, "config").output
    assert f"  folders: [{music}]  # remembered in {home / 'remembered.json'}" in shown
    assert "  workers: 0  # default" in shown


@pytest.mark.parametrize("args, message", [
    (["playlist", "--where", "colour:red"], "unknown filter field 'colour' in 'colour:red': valid fields are "),
    (["similar", "x", "--where", "year:19x"], "bad value '19x' in filter 'year:19x': year takes a number or a range"),
    (["playlist", "--where", 'artist:"open'], "cannot be read (No closing quotation): close the quote"),
])
def test_bad_filters_are_one_line(lib, args, message):
    music, db, home, env = lib
    r = _run(home, *args, env=env)
    *notes, error = r.output.splitlines()
    assert r.exit_code == 1 and all(n.startswith("note: ") for n in notes), r.output
    assert error.startswith("recsys: error: ") and message in error


def test_navidrome_errors_are_one_line(lib):
    music, db, home, env = lib
    r = _run(home, "playlist", env={**env, "RECSYS_NAVIDROME__USER": "carol"})
    assert r.exit_code == 1 and r.stderr.count("\n") == 2, r.output  # the 'using remembered' note, the error
    assert f"recsys: error: Navidrome database {db} has no user 'carol' (users: me (admin), other)" in r.stderr
    r = _run(home, "status", "--db", str(db))  # no path_map: Navidrome's folder is not on this machine
    assert r.exit_code == 1 and "does not exist on this machine" in r.output and r.output.count("\n") == 1
    r = _run(home, "config", env={"RECSYS_NAVIDROME__PATH_MAP": "music=/x"})
    assert r.exit_code == 1 and "navidrome.path_map = ['music=/x'] is not allowed" in r.output
