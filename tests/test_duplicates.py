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


def _library_with_versions(lib):
    """small_library plus a WAV re-encode of track 1 (other bytes, same sound, its own title) and track 3 retitled
    as track 2's song (same artist and title, other sound)."""
    import soundfile as sf

    from recsys.synth.player_db import SynthSong

    first = lib.songs[1]
    samples, rate = sf.read(first.path)
    copy = lib.music / "copy of one.wav"
    sf.write(copy, samples, rate, subtype="PCM_24")
    lib.songs.append(SynthSong(path=str(copy), title="another name", artist="someone else", album="bootleg",
                               length_ns=first.length_ns))
    lib.songs[3].artist, lib.songs[3].title = lib.songs[2].artist, lib.songs[2].title
    lib.rewrite_db()
    r = lib.run("embed", "--db", str(lib.db), "--workers", "1", "-q", "--encoder", "dsp")
    assert r.exit_code == 0, r.output
    return {lib.songs[1].path, str(copy)}, {lib.songs[2].path, lib.songs[3].path}


def test_similar_never_lists_two_versions_of_one_recording(small_library, tmp_path):
    copies, same_song = _library_with_versions(small_library)
    query = small_library.songs[5].path
    out = tmp_path / "like.m3u8"
    r = small_library.run("similar", query, "-k", "20", "--json", "--out", str(out))
    assert r.exit_code == 0, r.output
    listed = [n["path"] for n in json.loads(r.stdout)]
    assert len(listed) == len(set(listed)) and len(listed) >= 8
    assert len(copies & set(listed)) == 1, listed  # the file or its re-encode, not both
    assert len(same_song & set(listed)) == 1, listed  # one performer's song once
    written = [line for line in out.read_text().splitlines() if line and not line.startswith("#")]
    assert len(written) == len(listed)


def test_playlist_around_a_seed_leaves_out_the_seeds_other_versions(small_library, tmp_path):
    copies, same_song = _library_with_versions(small_library)
    for seed in (small_library.songs[1].path, small_library.songs[2].path):  # radio's ranking: seeded by a track
        out = tmp_path / "around.m3u8"
        r = small_library.run("playlist", "--seed", seed, "--top-n", "12", "--json", "--out", str(out), "--force",
                              "--include-rated", "--max-per-artist", "12", "--max-per-album", "12")
        assert r.exit_code == 0, r.output
        listed = {t["path"] for t in json.loads(r.stdout)}
        assert len(listed) >= 5, r.output
        assert not listed & ((copies if seed in copies else same_song) - {seed}), listed  # the seed's other version
