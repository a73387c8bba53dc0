"""The rough edges a new user meets on a real library (issue 14): long tracks, left-out tracks, permissions,
telemetry, pipes, untagged tracks, messages, help."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from recsys.synth.player_db import SynthSong


def _embed(lib, *extra):
    return lib.run("embed", "--db", str(lib.db), "--workers", "1", "-q", *extra)


def test_long_tracks_are_embedded_and_left_out_tracks_are_named(small_library):
    lib = small_library
    long_path = lib.music / "dj mix.wav"
    rate, minutes = 4000, 16
    t = np.arange(rate * 60 * minutes, dtype=np.float32) / rate
    sf.write(long_path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
    lib.songs.append(SynthSong(path=str(long_path), title="mix", artist="dj", length_ns=minutes * 60 * 10**9))
    podcast = lib.songs[1]
    podcast.genre = "News; Podcast"
    lib.rewrite_db()
    config = lib.root / "my.yaml"
    config.write_text("library:\n  exclude_genres: [podcast, Audiobook]\n")

    r = lib.run("--config", str(config), "embed", "--db", str(lib.db), "--workers", "1", "-q")
    assert r.exit_code == 0, r.output
    assert "embedded 12," in r.output, r.output  # 11 short + the 16-minute mix; the podcast is left out
    assert f"{podcast.path}: genre 'News; Podcast' is excluded (library.exclude_genres)" in r.output

    r = lib.run("--config", str(config), "status", "--db", str(lib.db))
    assert r.exit_code == 0, r.output
    assert "embedded: 12 current, 0 stale" in r.output and "0 not yet" in r.output
    assert "left out by your settings: 1" in r.output and podcast.path in r.output
    assert "run `recsys embed`" not in r.output
    st = json.loads(lib.run("--config", str(config), "status", "--db", str(lib.db), "--json").output)
    assert st["left_out"] == [{"key": podcast.path, "reason": "genre 'News; Podcast' is excluded "
                                                              "(library.exclude_genres)"}]

    # a length limit is the user's choice, and named too
    config.write_text("audio:\n  max_track_minutes: 15\n")
    st = json.loads(lib.run("--config", str(config), "status", "--db", str(lib.db), "--json").output)
    assert [t["key"] for t in st["left_out"]] == [str(long_path)]
    assert "16.0 min is longer than audio.max_track_minutes = 15" in st["left_out"][0]["reason"]
