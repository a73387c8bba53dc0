"""`recsys path`, `radio`, `map`, `similar --out` and `playlist --seed-playlist` end to end through the CLI, on a
tiny synthetic home (no audio decoded) and, for the radio, a private session bus with a player of the test's own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synth_home import make_home

from recsys.cli import main
from recsys.library.uri import path_to_uri as file_uri
from recsys.playlists.read import read_playlist
from recsys.synth.mpris import FakePlayer, have_dbus_daemon, private_session_bus
from recsys.viz.map import map_html, write_map
from recsys.viz.projection import pca


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """One home for the module: every command here only reads it (outputs go to each test's tmp_path)."""
    return make_home(tmp_path_factory.mktemp("peers"))


def run(synth, *args: str):
    result = CliRunner().invoke(main, ["--home", str(synth.home), *args], catch_exceptions=False)
    return result


def test_path_leads_from_a_to_b_and_writes_the_playlist(synth, tmp_path):
    a, b = synth.songs[0], synth.songs[1]  # two styles apart
    out = tmp_path / "path.m3u8"
    r = run(synth, "path", a.path, f"{b.artist} - {b.title}", "--steps", "6", "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    assert [h["path"] for h in (hits[0], hits[-1])] == [a.path, b.path] and len(hits) == 6
    assert len({h["path"] for h in hits}) == 6 and all(-1 <= h["score"] <= 1 for h in hits)
    assert [e.key for e in read_playlist(out).entries] == [h["key"] for h in hits]
    group = {s.path: g for s, g in zip(synth.songs, synth.styles, strict=True)}
    r = run(synth, "path", a.path, b.path, "--steps", "5", "--where", "genre:jazz", "--out", str(tmp_path / "j.xspf"),
            "--json")
    assert r.exit_code == 0, r.output
    inner = [h["path"] for h in json.loads(r.stdout)][1:-1]
    assert inner and all(group[p] == 2 for p in inner)  # style 2 is the Jazz one
    r = run(synth, "path", a.path, a.path, "--out", str(tmp_path / "same.xspf"))
    assert r.exit_code == 1 and "same track" in r.output and len(r.output.strip().splitlines()) == 1


def test_similar_out_writes_the_neighbours_as_a_playlist(synth, tmp_path):
    out = tmp_path / "near.xspf"
    r = run(synth, "similar", synth.songs[5].path, "-k", "4", "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    printed = [h["key"] for h in json.loads(r.stdout)]
    assert [e.key for e in read_playlist(out).entries] == printed and len(printed) == 4
    assert f"wrote 4 tracks to {out}" in r.stderr
    r = run(synth, "similar", synth.songs[5].path, "--out", str(out))
    assert r.exit_code == 1 and "exists: pass --force" in r.output


def test_seed_playlist_expands_a_playlist_and_leaves_its_tracks_out(synth, tmp_path):
    style = [s for s, g in zip(synth.songs, synth.styles, strict=True) if g == 2]
    seeds = tmp_path / "mine.m3u8"
    seeds.write_text("#EXTM3U\n" + "\n".join(s.path for s in style[:3]) + "\n/gone/away.flac\n", encoding="utf-8")
    r = run(synth, "playlist", "--db", str(synth.db), "--seed-playlist", str(seeds), "--top-n", "5", "--json",
            "--out", str(tmp_path / "more.xspf"))
    assert r.exit_code == 0, r.output
    got = [h["path"] for h in json.loads(r.stdout)]
    assert got and not set(got) & {s.path for s in style[:3]}
    same_style = {s.path for s in style}
    assert sum(p in same_style for p in got) >= len(got) - 1  # what the seeds sound like
    assert "1 entry of" in r.stderr and "does not exist" in r.stderr
    r = run(synth, "playlist", "--db", str(synth.db), "--seed-playlist", str(tmp_path / "nope.xspf"))
    assert r.exit_code == 1 and "cannot read playlist" in r.output


def test_map_writes_one_page_with_every_track(synth, tmp_path):
    out = tmp_path / "map.html"
    r = run(synth, "map", "--db", str(synth.db), "--out", str(out), "--colour", "genre")
    assert r.exit_code == 0, r.output
    page = out.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert len(data["x"]) == len(synth.songs) and data["colour"] == "genre"
    rated = sum(1 for s in synth.songs if s.rating >= 0)
    assert sum(r >= 0 for r in data["r"]) == rated and f"{len(synth.songs)} tracks" in r.output
    assert "neighbours layout" in r.output
    albums = {s.album for s in synth.songs} | {s.artist for s in synth.songs} | {s.genre for s in synth.songs}
    assert data["regions"] and all(r["label"].split(" (")[0] in albums for r in data["regions"])  # named by tags


def _map_data(path: Path) -> dict:
    page = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))


def test_map_where_draws_only_the_selected_tracks_laid_out_among_themselves(synth, tmp_path):
    by_label = {f"{s.artist} - {s.title}": i for i, s in enumerate(synth.songs)}
    r = run(synth, "map", "--db", str(synth.db), "--where", "genre:jazz", "--layout", "pca", "--out",
            str(tmp_path / "jazz.html"))
    assert r.exit_code == 0, r.output
    data = _map_data(tmp_path / "jazz.html")
    rows = [by_label[label] for label in data["labels"]]
    assert sorted(rows) == [i for i, g in enumerate(synth.styles) if g == 2]  # style 2 is the Jazz one
    assert "wrote a map of 12 tracks matching 'genre:jazz' (0 rated, pca layout)" in r.output
    alone = _map_data(write_map(tmp_path / "alone.html", map_html(pca(synth.vectors[rows]), data["labels"],
                                                                  [None] * 12, ["Jazz"] * 12)))
    everything = pca(synth.vectors)[rows]  # the whole library's plane, cut down: not what the map must show
    assert np.allclose(data["x"], alone["x"], atol=1) and np.allclose(data["y"], alone["y"], atol=1)
    assert not np.allclose(data["x"], _map_data(write_map(tmp_path / "cut.html", map_html(
        everything, data["labels"], [None] * 12, ["Jazz"] * 12)))["x"], atol=50)
    r = run(synth, "map", "--db", str(synth.db), "--where", "rating:4..", "--where", f"path:{synth.music}",
            "--out", str(tmp_path / "liked.html"))
    assert r.exit_code == 0, r.output
    data = _map_data(tmp_path / "liked.html")
    assert data["r"] == [10] * 12 and "neighbours layout" in r.output  # every 5-star track, and only those
    # a filter that selects nothing is that one line, in the same words for every command (by hand, `playlist`
    # blamed ratings and caps and `similar` printed "only 0 tracks match" and an empty list)
    label = f"{synth.songs[0].artist} - {synth.songs[0].title}"
    for command, out in ((["map", "--db", str(synth.db)], "none.html"), (["playlist", "--db", str(synth.db)], "n.xspf"),
                         (["similar", label], "s.xspf")):
        r = run(synth, *command, "--where", "genre:polka -year:..1990", "--out", str(tmp_path / out))
        assert r.exit_code == 1 and not (tmp_path / out).exists(), (command, r.output)
        assert r.output.strip().splitlines() == [
            "recsys: error: no embedded track matches --where 'genre:polka -year:..1990': loosen the terms "
            "(`--help` lists them; `recsys tags TRACK` the tags a track has), or embed that music first"], command
    r = run(synth, "map", "--db", str(tmp_path / "gone.db"), "--where", "rating:4..", "--out", str(tmp_path / "g.html"))
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output  # no ratings to read: not an empty map
    assert r.output.startswith("recsys: error: --where 'rating:4..' reads your ratings and plays: ")
    bad = [run(synth, command, "--db", str(synth.db), "--where", "colour:red", "--out", str(tmp_path / "x.xspf"))
           for command in ("map", "playlist")]
    assert bad[0].exit_code == bad[1].exit_code == 1 and bad[0].output == bad[1].output
    assert bad[0].output.startswith("recsys: error: unknown filter field 'colour'") and bad[0].output.count("\n") == 1


@pytest.mark.skipif(not have_dbus_daemon(), reason="dbus-daemon is not installed")
def test_radio_around_the_playing_track_and_handed_over_only_when_asked(synth, tmp_path, monkeypatch):
    playing = synth.songs[4]
    with private_session_bus() as bus:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", bus)
        r = run(synth, "radio", "--db", str(synth.db), "--out", str(tmp_path / "r.xspf"))
        assert r.exit_code == 1 and "no MPRIS player is running" in r.output
        with FakePlayer(bus, url=file_uri(playing.path), title=playing.title, artist=[playing.artist]) as player:
            r = run(synth, "radio", "--db", str(synth.db), "--out", str(tmp_path / "r.xspf"), "--top-n", "5")
            assert r.exit_code == 0, r.output
            assert not [c for c in player.calls if c[0] in ("OpenUri", "AddTrack")]  # never without --play
            r = run(synth, "radio", "--db", str(synth.db), "--out", str(tmp_path / "p.xspf"), "--top-n", "5",
                    "--play", "--json", "--where", "genre:techno")
            assert r.exit_code == 0, r.output
        got = [h["path"] for h in json.loads(r.stdout)]
        assert len(got) == 5 and playing.path not in got
        group = {s.path: g for s, g in zip(synth.songs, synth.styles, strict=True)}
        assert all(group[p] == 3 for p in got)  # style 3 is Techno, far from the seed: only the filter brings it
        assert ("OpenUri", (file_uri(str(tmp_path / "p.xspf")),)) in player.calls
        assert f"playing: {playing.artist} - {playing.title}" in r.stderr and "opened in Fake Player" in r.stderr
        stranger = tmp_path / "not embedded.ogg"
        stranger.write_bytes(b"OggS")
        with FakePlayer(bus, url=file_uri(str(stranger))):
            r = run(synth, "radio", "--db", str(synth.db), "--out", str(tmp_path / "s.xspf"))
        assert r.exit_code == 1 and "the track Fake Player plays now:" in r.output and "not in the index" in r.output
        assert len(r.output.strip().splitlines()) == 1


def test_the_new_commands_never_import_torch(synth, tmp_path):
    commands = [["path", synth.songs[0].path, synth.songs[1].path, "--steps", "4", "--out", str(tmp_path / "a.xspf")],
                ["similar", synth.songs[2].path, "--out", str(tmp_path / "b.xspf")],
                ["map", "--db", str(synth.db), "--out", str(tmp_path / "m.html")],
                ["playlist", "--db", str(synth.db), "--seed-playlist", str(tmp_path / "a.xspf"),
                 "--out", str(tmp_path / "c.xspf")]]
    code = ("import sys\nfrom recsys.cli import main\n"
            f"for args in {commands!r}:\n"
            f"    try:\n        main(['--home', {str(synth.home)!r}, *args])\n"
            "    except SystemExit as e:\n        print('EXIT', e.code)\n"
            "print('HEAVY', [m for m in ('torch', 'lancedb') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.stdout.count("EXIT 0") == 4 and "HEAVY []" in done.stdout, done.stdout + done.stderr


def test_an_empty_playlist_suggests_only_what_was_not_already_loosened(synth, tmp_path):
    """By hand: `playlist --include-rated --where ...` that left nothing said "try ... --include-rated"."""
    r = run(synth, "playlist", "--db", str(synth.db), "--where", "rating:1", "--include-rated", "--out",
            str(tmp_path / "p.xspf"))
    assert r.exit_code == 1 and r.output.startswith("recsys: error: no track is left to recommend"), r.output
    assert "--include-played" in r.output and "--include-rated" not in r.output.split("try ", 1)[1]


def test_help_says_what_the_commands_do_on_a_real_library():
    """By hand: `recsys --help` promised "100 unrated tracks" to an owner who got 35 (the evidence rule stops short),
    and `--db` named three of the four databases it reads."""
    runner = CliRunner()
    assert "up to 100 unrated tracks" in runner.invoke(main, ["--help"]).output
    for command in ("playlist", "radio"):
        shown = " ".join(runner.invoke(main, [command, "--help"]).output.split())
        assert "At most this many tracks" in shown
        # by hand a second radio the same day replaced the first's default file, as a playlist's does
        assert "replacing the day's" in shown and "never overwritten" not in shown
    for command in ("embed", "status", "playlist"):
        assert "Navidrome or beets" in " ".join(runner.invoke(main, [command, "--help"]).output.split())
    assert "Navidrome or beets" in runner.invoke(main, ["config", "--defaults"]).output
    # the `mlflow ui` line they give must not write ~/.config/mlflow/telemetry.json (by hand it did; issue 27 item 8)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for text in (readme, runner.invoke(main, ["train-encoder", "--help"]).output):
        lines = [line.strip() for line in text.splitlines() if "mlflow ui " in line]
        assert lines and all(line.startswith("MLFLOW_DISABLE_TELEMETRY=true mlflow ui ") for line in lines), lines


def test_music_folders_alone_say_they_hold_no_ratings(tmp_path):
    """By hand: after `embed --library DIR` (folders alone, remembered) `playlist` blamed the evidence rule ("rate
    more tracks"), `train-classifier` "the player database" and `eval --playlist` offered --seed: folders carry no
    ratings, and each says so in one line naming where ratings come from."""
    synth = make_home(tmp_path / "own")  # a home no other test remembered a library in
    config = tmp_path / "folders.yaml"
    config.write_text(f"library:\n  folders: [{synth.music}]\n", encoding="utf-8")
    outputs = []
    for command in (["playlist", "--out", str(tmp_path / "p.xspf")], ["train-classifier"], ["eval", "--playlist"]):
        r = run(synth, "--config", str(config), *command)
        assert r.exit_code == 1 and r.output.count("\n") == 1, (command, r.output)
        outputs.append(r.output)
        assert f"{synth.music} holds no ratings: music folders carry none" in r.output, r.output
    assert "--seed" in outputs[0] and "--seed" not in outputs[1] + outputs[2]
    r = run(synth, "--config", str(config), "playlist", "--seed", synth.songs[0].path, "--out",
            str(tmp_path / "s.xspf"))
    assert r.exit_code == 0, r.output  # seeds need no ratings
