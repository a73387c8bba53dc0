"""Tags from the sound: the tag head's probabilities stored beside the vector, `recsys tags`, `--where tag:`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import SmallLibrary, _audio_set

from recsys.index.store import TrackRow, TrackStore
from recsys.library.filters import FilterError, TagScores, parse
from recsys.synth.audio import STYLES
from recsys.synth.player_db import SynthSong, write_clementine_db


def _row(i: int, tags: np.ndarray | None = None) -> TrackRow:
    v = np.zeros(4, np.float32)
    v[i % 4] = 1.0
    return TrackRow(key=f"/m/{i}.flac", path=f"/m/{i}.flac", start_s=0.0, content_id=f"c{i}", size=1, mtime_ns=1,
                    duration_s=1.0, artist="a", album="b", title=f"t{i}", genre="", year=None, track_number=None,
                    encoder_id="e", vector=v, tags=tags)


def test_tags_column_added_to_an_older_table_and_read_back(tmp_path):
    store = TrackStore.open(tmp_path)
    store.upsert([_row(0)])  # a table written before tags: no column
    assert store.n_tags is None and store.tag_names is None
    probs = np.array([0.9, 0.1, 0.5], np.float32)
    store.upsert([_row(1, probs)], tag_names=["rock", "chill", "sad"])
    store = TrackStore.open(tmp_path)
    assert store.n_tags == 3 and store.tag_names == ["rock", "chill", "sad"]
    got = store.tags_of(["/m/0.flac", "/m/1.flac"])
    assert got["/m/0.flac"] is None  # the older row: null until embedded again
    np.testing.assert_array_equal(got["/m/1.flac"], probs)
    meta, vectors = store.read_all()
    assert "tags" in meta.column_names and len(vectors) == 2
    store.upsert([_row(2)], tag_names=["rock", "chill", "sad"])  # a row without tags in a table with the column
    assert store.tags_of(["/m/2.flac"])["/m/2.flac"] is None
    # a moved file (same content id) keeps its tags with its vector
    np.testing.assert_array_equal(store.tags_by_content_id(["c1", "c0"], "e")["c1"], probs)
    assert "c0" not in store.tags_by_content_id(["c0"], "e")


def test_where_tag_selects_by_the_librarys_threshold():
    # 20 tracks: "chill" rises with the index; "metal" is low everywhere (no metal in this library)
    chill = np.linspace(0.0, 0.4, 20, dtype=np.float32)
    metal = np.full(20, 0.02, np.float32)
    probs = np.stack([chill, metal], axis=1)
    probs[5] = np.nan  # a track stored without tags
    scores = TagScores(["chill", "heavy metal"], probs)
    mask = parse("tag:chill").mask({"tags": scores})
    assert mask.sum() == 2 and mask[-2:].all()  # the library's top 10 % (above the 0.1 floor)
    assert not parse("tag:heavy_metal").mask({"tags": scores}).any()  # the floor: 10 % of a library is not metal
    keep = parse("-tag:chill").mask({"tags": scores})
    assert keep.sum() == 18 and keep[5]  # a track without tags never has one
    with pytest.raises(FilterError, match="unknown tag"):
        parse("tag:polka").mask({"tags": scores})
    with pytest.raises(FilterError, match="holds none"):
        parse("tag:chill").mask({"artist": ["x"] * 20})


@pytest.fixture(scope="module")
def tagged_library(tmp_path_factory):
    """The small synthetic library embedded once with musicnn (its tag head), shared by the CLI tests below."""
    root = tmp_path_factory.mktemp("tagged")
    music = root / "music"
    shutil.copytree(_audio_set(tmp_path_factory, 12, 8.0), music)
    songs = [SynthSong(path=str(p), title=f"{STYLES[i % len(STYLES)]} {i}", artist=f"artist {i}", album="x",
                       track=i + 1, rating=(0.2 * (i % 6)) or -1.0,
                       length_ns=8 * 10**9) for i, p in enumerate(sorted(music.iterdir()))]
    write_clementine_db(root / "clementine.db", songs)
    lib = SmallLibrary(root, music, root / "clementine.db", root / "home", songs)
    r = lib.run("embed", "--db", str(lib.db), "--encoder", "musicnn", "--workers", "1", "-q")
    assert r.exit_code == 0, r.output
    return lib


def test_recsys_tags_with_musicnn(tagged_library, monkeypatch):
    lib = tagged_library
    monkeypatch.setenv("HOME", str(lib.root / "user-home"))
    track = str(lib.songs[0].path)
    r = lib.run("tags", track, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["key"] == track and len(data["tags"]) == 50
    probs = [t["probability"] for t in data["tags"]]
    assert probs == sorted(probs, reverse=True) and all(0.0 <= p <= 1.0 for p in probs)
    assert {t["tag"] for t in data["tags"]} >= {"rock", "chill", "electronic", "sad", "happy"}
    r = lib.run("tags", track, "-n", "3")
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 4
    # --where tag: on a command that takes --where: similar keeps only the tracks with the tag
    strongest = data["tags"][0]["tag"]
    r = lib.run("similar", track, "-k", "11", "--json", "--where", f"tag:{strongest.replace(' ', '_')}")
    assert r.exit_code == 0, r.output
    kept = {h["key"] for h in json.loads(r.stdout)}
    r_not = lib.run("similar", track, "-k", "11", "--json", "--where", f"-tag:{strongest.replace(' ', '_')}")
    assert r_not.exit_code == 0, r_not.output
    dropped = {h["key"] for h in json.loads(r_not.stdout)}
    assert kept and dropped and not kept & dropped and len(kept | dropped) == 11


def test_an_encoder_without_a_tag_head_says_so(small_library):
    lib = small_library
    r = lib.run("embed", "--db", str(lib.db), "--encoder", "dsp", "--workers", "1", "-q")
    assert r.exit_code == 0, r.output
    r = lib.run("tags", str(lib.songs[0].path))
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "no tag head" in lines[0]
    r = lib.run("similar", str(lib.songs[0].path), "--where", "tag:chill")
    assert r.exit_code != 0 and "holds none" in r.output
    r = lib.run("map", "--db", str(lib.db), "--tag", "chill", "--out", str(lib.root / "map.html"))
    lines = r.output.strip().splitlines()
    assert r.exit_code != 0 and len(lines) == 1 and "no tag head" in lines[0], r.output


def test_map_colours_by_a_tag_and_shows_the_strongest(tagged_library, monkeypatch):
    import re

    lib = tagged_library
    monkeypatch.setenv("HOME", str(lib.root / "user-home"))
    out = lib.root / "chill.html"
    r = lib.run("map", "--db", str(lib.db), "--tag", "chill", "--out", str(out), "--force")
    assert r.exit_code == 0, r.output
    page = out.read_text()
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert data["colour"] == "tag" and data["tag"]["name"] == "chill"
    for song in lib.songs:
        tags = {t["tag"]: t for t in json.loads(lib.run("tags", song.path, "--json").stdout)["tags"]}
        i = data["labels"].index(f"{song.artist} - {song.title}")
        assert data["t"][i] == round(tags["chill"]["probability"] * 1000)  # the point carries its value
        assert abs(data["tag"]["threshold"] - tags["chill"]["threshold"]) < 1e-3  # the rule of --where tag:
        shown = [data["tagNames"][j] for j in data["top"][i]]
        assert shown == [t for t, v in tags.items() if v["has"]][:3]  # its strongest tags, on hover
    r = lib.run("map", "--db", str(lib.db), "--tag", "no_such_tag", "--out", str(out), "--force")
    assert r.exit_code != 0 and "unknown tag" in r.output


def test_playlist_tag_keeps_the_tracks_with_the_tag(tagged_library, monkeypatch):
    lib = tagged_library
    monkeypatch.setenv("HOME", str(lib.root / "user-home"))
    has: dict[str, set[str]] = {}
    for song in lib.songs:
        data = json.loads(lib.run("tags", song.path, "--json").stdout)
        for t in data["tags"]:
            if t["has"]:
                has.setdefault(t["tag"], set()).add(song.path)
    tag = max(has, key=lambda t: len(has[t]))  # the tag most tracks of this library carry
    seed = sorted(has[tag])[0]  # around a seed: the synthetic ratings vouch for too few tracks of one tag
    r = lib.run("playlist", "--db", str(lib.db), "--tag", tag, "--seed", seed, "--include-rated", "--json",
                "--top-n", "5", "--out", str(lib.root / "tagged.xspf"), "--force")
    assert r.exit_code == 0, r.output
    keys = [t["key"] for t in json.loads(r.stdout)]
    assert keys and set(keys) <= has[tag] - {seed}
    r = lib.run("playlist", "--db", str(lib.db), "--tag", "polka", "--out", str(lib.root / "x.xspf"))
    assert r.exit_code != 0 and "unknown tag" in r.output
