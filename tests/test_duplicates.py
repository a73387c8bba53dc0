"""`recsys duplicates`: real files (a quieter copy, a shortened copy in another format, a byte copy) embedded into a
real table and judged by the acoustic fingerprint; nothing in the music folder changes."""

from __future__ import annotations

import json
import shutil

import numpy as np

from recsys.embedder.fingerprint import SAMPLE_RATE, fingerprint_samples, match
from recsys.library.groups import SAME_RECORDING_AGREEMENT, same_recording
from recsys.synth.audio import synth_track, write_audio

SR = 22050


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_duplicates_groups_copies_and_only_them(small_library, tmp_path):
    music = tmp_path / "dupes"
    music.mkdir()
    song = synth_track("bright_arpeggio", 30.0, sample_rate=SR, seed=7)
    write_audio(music / "song.flac", song, SR, "flac")
    write_audio(music / "song quiet.ogg", song * 0.3, SR, "ogg")  # 10 dB quieter, lossy
    write_audio(music / "song cut.mp3", song[5 * SR:25 * SR], SR, "mp3")  # 5 s cut at each end, lossy
    shutil.copy(music / "song.flac", music / "song copy.flac")  # byte-identical
    for seed, style in enumerate(("bright_arpeggio", "drum_loop", "ambient_pad")):  # same style, other music
        write_audio(music / f"other {style}.flac", synth_track(style, 30.0, sample_rate=SR, seed=100 + seed), SR,
                    "flac")
    before = _snapshot(music)
    r = small_library.run("embed", "--library", str(music), "--workers", "1", "-q", "--encoder", "dsp")
    assert r.exit_code == 0, r.output
    r = small_library.run("duplicates", "--json", "--min-cosine", "-1")  # every neighbour pair is fingerprinted
    assert r.exit_code == 0, r.output
    groups = json.loads(r.stdout)
    assert [sorted(p.rsplit("/", 1)[1] for p in g["paths"]) for g in groups] == [
        ["song copy.flac", "song cut.mp3", "song quiet.ogg", "song.flac"]]
    evidence = groups[0]["evidence"]
    assert any(e["same_file"] and e["agreement"] is None for e in evidence)
    cut = [e for e in evidence if (e["a"] + e["b"]).count("song cut.mp3") and e["agreement"] is not None]
    assert cut and all(e["agreement"] > SAME_RECORDING_AGREEMENT and 15 < e["overlap_s"] < 25 for e in cut)
    assert _snapshot(music) == before  # nothing was deleted, moved or written

    r = small_library.run("duplicates")
    assert r.exit_code == 0, r.output
    assert "recording 1: 4 files" in r.stdout and "song cut.mp3" in r.stdout
    assert "nothing was changed" in r.stderr


def test_fingerprint_ignores_gain_and_tells_music_apart():
    song = synth_track("bass_groove", 20.0, sample_rate=SAMPLE_RATE, seed=1).mean(axis=1)
    other = synth_track("bass_groove", 20.0, sample_rate=SAMPLE_RATE, seed=2).mean(axis=1)
    a = fingerprint_samples(song)
    agreement, offset, overlap = match(a, fingerprint_samples(song[SAMPLE_RATE * 3:] * 0.1))
    assert agreement > 0.9 and abs(offset - 3.0) < 0.1  # 3 s is not a whole number of hops and overlap > 16
    assert same_recording(0.0, agreement)
    unrelated, _, _ = match(a, fingerprint_samples(other))
    assert unrelated < SAME_RECORDING_AGREEMENT and not same_recording(1.0, unrelated)
    assert match(a, fingerprint_samples(song[: SAMPLE_RATE * 5])) == (0.0, 0.0, 0.0)  # too short to compare
    assert np.array_equal(a, fingerprint_samples(song))
