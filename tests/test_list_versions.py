"""No list recsys writes holds two versions of one recording: a copy made quieter, cut at both ends, re-encoded
lossy and tagged as another song sits at cosine ~0.96 from its original (as far as another piece of an album), so
only the files' fingerprints tell it apart; `similar`, `path`, `radio`'s ranking (a seeded playlist) and a taste
`playlist` each list one of the two. Real files, a real Clementine database, a real table and snapshot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recsys.cli import main
from recsys.config import IndexSettings
from recsys.index.ann import current_snapshot
from recsys.library.groups import DUPLICATE_CANDIDATE_COS, SAME_RECORDING_COS
from recsys.synth.audio import STYLES, synth_track, write_audio
from recsys.synth.player_db import SynthSong, write_clementine_db

SR = 22050


class Versions:
    def __init__(self, root: Path) -> None:
        self.root, self.music, self.home, self.db = root, root / "music", root / "home", root / "clementine.db"
        self.prepared: set[str] = set()

    def run(self, *args: str):
        return CliRunner().invoke(main, ["--home", str(self.home), *args], catch_exceptions=False)

    def path(self, name: str) -> str:
        return str(self.music / name)


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> Versions:
    """An original, its quieter cut copy (other title, artist and album), and 12 other 30 s tracks, 2 rated 5 stars
    (the original's style, so its neighbourhood is what the taste asks for)."""
    lib = Versions(tmp_path_factory.mktemp("versions"))
    lib.music.mkdir()
    song = synth_track("bright_arpeggio", 30.0, sample_rate=SR, seed=7)
    write_audio(lib.music / "song.flac", song, SR, "flac")
    write_audio(lib.music / "song copy.ogg", song[4 * SR:27 * SR] * 0.35, SR, "ogg")  # 9 dB quieter, 7 s cut
    songs = [SynthSong(path=lib.path("song.flac"), title="Morning", artist="The Originals", album="First",
                       length_ns=30 * 10**9),
             SynthSong(path=lib.path("song copy.ogg"), title="Track 2", artist="Unknown", album="Rip",
                       length_ns=23 * 10**9)]
    for i in range(12):
        style = STYLES[i % len(STYLES)]
        name = f"other {i:02d} {style}.flac"
        write_audio(lib.music / name, synth_track(style, 30.0, sample_rate=SR, seed=100 + i), SR, "flac")
        songs.append(SynthSong(path=lib.path(name), title=f"piece {i}", artist=f"artist {i}", album=f"album {i}",
                               rating=1.0 if i in (2, 7) else -1.0, length_ns=30 * 10**9))
    write_clementine_db(lib.db, songs)
    with pytest.MonkeyPatch.context() as env:  # as tests/conftest.py's _no_user_config, for the module
        for name in list(os.environ):
            if name.startswith("RECSYS_"):
                env.delenv(name)
        env.setenv("HOME", str(lib.root / "user-home"))
        env.delenv("XDG_CONFIG_HOME", raising=False)
        r = lib.run("embed", "--db", str(lib.db), "--workers", "1", "-q", "--encoder", "dsp")
    assert r.exit_code == 0, r.output
    lib.prepared = _cached(lib.home)  # what the embed fingerprinted, before any query ran
    snap = current_snapshot(lib.home, IndexSettings())
    vectors, paths = np.asarray(snap.vectors), snap.values("path")
    a, b = paths.index(lib.path("song.flac")), paths.index(lib.path("song copy.ogg"))
    # the case the vectors alone miss: closer than the candidate cosine, further than "nearly identical"
    assert DUPLICATE_CANDIDATE_COS < float(vectors[a] @ vectors[b]) < SAME_RECORDING_COS
    return lib


def _both(listed: list[str], lib: Versions) -> bool:
    return {lib.path("song.flac"), lib.path("song copy.ogg")} <= set(listed)


def test_similar_lists_one_version(versions, tmp_path):
    r = versions.run("similar", versions.path("other 07 bright_arpeggio.flac"), "-k", "8", "--json")
    assert r.exit_code == 0, r.output
    listed = [n["path"] for n in json.loads(r.stdout)]
    assert len(listed) == 8 and not _both(listed, versions), listed
    assert versions.path("song.flac") in listed  # the nearer version stays
    r = versions.run("similar", versions.path("song.flac"), "-k", "8", "--json")
    assert versions.path("song copy.ogg") not in [n["path"] for n in json.loads(r.stdout)]  # the query's copy
    assert any((versions.home / "cache" / "fingerprints").iterdir())  # each file fingerprinted once, kept in the home


def test_path_takes_no_copy_of_its_end(versions, tmp_path):
    out = tmp_path / "path.m3u8"
    r = versions.run("path", versions.path("song.flac"), versions.path("other 04 noise_texture.flac"), "--steps",
                     "8", "--out", str(out))
    assert r.exit_code == 0, r.output
    listed = [line for line in out.read_text().splitlines() if line and not line.startswith("#")]
    assert len(listed) >= 6 and not _both(listed, versions), listed


def test_radio_ranking_lists_one_version(versions, tmp_path):
    """`recsys radio` ranks as `playlist --seed` does: around the playing track, rated tracks included."""
    r = versions.run("playlist", "--db", str(versions.db), "--seed", versions.path("other 07 bright_arpeggio.flac"),
                     "--top-n", "10", "--include-rated", "--json", "--out", str(tmp_path / "radio.m3u8"))
    assert r.exit_code == 0, r.output
    listed = [t["path"] for t in json.loads(r.stdout)]
    assert len(listed) >= 8 and not _both(listed, versions), listed
    r = versions.run("playlist", "--db", str(versions.db), "--seed", versions.path("song.flac"), "--top-n", "10",
                     "--include-rated", "--json", "--out", str(tmp_path / "radio2.m3u8"))
    assert versions.path("song copy.ogg") not in [t["path"] for t in json.loads(r.stdout)]  # the seed's copy


def test_taste_playlist_lists_one_version(versions, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_RECOMMEND__MIN_AUDIO_VOTES", "0")  # two ratings: let the sound alone recommend
    r = versions.run("playlist", "--db", str(versions.db), "--top-n", "10", "--json", "--out",
                     str(tmp_path / "taste.m3u8"))
    assert r.exit_code == 0, r.output
    listed = [t["path"] for t in json.loads(r.stdout)]
    assert listed and not _both(listed, versions), listed
    assert versions.path("song.flac") in listed or versions.path("song copy.ogg") in listed, listed


def test_an_unreadable_file_falls_back_to_the_vectors(tmp_path):
    """A file that cannot be decoded has no fingerprint (remembered, not decoded again): the cosine rule judges it,
    and nothing is written in a folder that is not recsys's home."""
    from recsys.embedder.fingerprint import FingerprintCache
    from recsys.library.groups import one_recording_with

    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"not audio at all" * 100)
    cache = FingerprintCache(tmp_path)  # no home marker: memory only
    assert cache.get("cid-bad", str(bad), 30.0) is None and cache.get("cid-bad", str(bad), 30.0) is None
    assert cache.decoded == 1 and len(cache.failures) == 1 and "broken.mp3" in cache.failures[0][0]
    assert not (tmp_path / "cache").exists()
    vectors = np.array([[1.0, 0.0], [0.96, 0.28], [0.999, 0.0447]], dtype=np.float32)
    unknown = lambda i, j: None  # noqa: E731
    assert not one_recording_with(vectors, 1, [0], unknown)  # 0.96: not nearly identical
    assert one_recording_with(vectors, 2, [0], unknown)  # 0.999: nearly identical
    assert one_recording_with(vectors, 1, [0], lambda i, j: 0.9)  # the fingerprints agree
    assert not one_recording_with(vectors, 2, [0], lambda i, j: 0.5)  # they disagree: the fingerprint decides


# `recsys embed` prepares the fingerprints (recsys.pipeline.fingerprints): the lists never decode at query time.

def _no_decoding(monkeypatch) -> None:
    import recsys.embedder.fingerprint as fingerprint

    def refuse(*args, **kwargs):
        raise AssertionError(f"decoded at query time: {args}")

    monkeypatch.setattr(fingerprint, "fingerprint_file", refuse)


def _cached(home: Path) -> set[str]:
    folder = home / "cache" / "fingerprints"
    return {p.name for p in folder.glob("*.npy")} if folder.is_dir() else set()


def _key_file(lib: Versions, name: str) -> str:
    import hashlib

    snap = current_snapshot(lib.home, IndexSettings())
    cid = snap.values("content_id")[snap.values("path").index(lib.path(name))]
    return hashlib.sha1(str(cid).encode()).hexdigest() + ".npy"


def test_embed_fingerprints_close_tracks_and_similar_decodes_none(versions, monkeypatch):
    """The fixture's embed fingerprinted the original and its copy; a query then reads them without decoding any
    file and still leaves the copy out (the vectors alone, at cosine < 0.995, would list both)."""
    assert {_key_file(versions, "song.flac"), _key_file(versions, "song copy.ogg")} <= versions.prepared
    _no_decoding(monkeypatch)
    r = versions.run("similar", versions.path("song.flac"), "-k", "8", "--json")
    assert r.exit_code == 0, r.output
    assert versions.path("song copy.ogg") not in [n["path"] for n in json.loads(r.stdout)]
    # a no-op embed finds the cache complete: nothing is decoded again
    r = versions.run("embed", "--db", str(versions.db), "--workers", "1", "--encoder", "dsp")
    assert r.exit_code == 0, r.output
    assert "fingerprinted" not in r.output


def test_a_pair_not_fingerprinted_falls_back_to_the_vectors_without_decoding(versions, tmp_path, monkeypatch):
    """A home whose cache lacks the pair (`embed.fingerprints: false`, or an embed stopped early): the query decodes
    nothing and judges the pair by the cosine rule."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(versions.home, home)
    shutil.rmtree(home / "cache" / "fingerprints")
    _no_decoding(monkeypatch)
    r = CliRunner().invoke(main, ["--home", str(home), "similar", versions.path("song.flac"), "-k", "8", "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == 8 and not _cached(home)


def test_fingerprints_setting_off_skips_the_phase(tmp_path, monkeypatch):
    lib = Versions(tmp_path)
    lib.music.mkdir()
    write_audio(lib.music / "a.flac", synth_track("bright_arpeggio", 20.0, sample_rate=SR, seed=1), SR, "flac")
    write_audio(lib.music / "b.ogg", synth_track("bright_arpeggio", 20.0, sample_rate=SR, seed=1) * 0.3, SR, "ogg")
    monkeypatch.setenv("RECSYS_EMBED__FINGERPRINTS", "false")
    _no_decoding(monkeypatch)
    r = lib.run("embed", "--library", str(lib.music), "--workers", "1", "-q", "--encoder", "dsp")
    assert r.exit_code == 0, r.output
    assert not (lib.home / "cache" / "fingerprints").exists() and "fingerprinted" not in r.output


def test_an_interrupted_phase_keeps_its_fingerprints_and_the_next_run_goes_on(versions, tmp_path, monkeypatch):
    """Ctrl-C in the phase keeps each fingerprint computed; the next run computes only the rest and marks the
    snapshot prepared. Worker processes compute the same fingerprints as the query process would."""
    import shutil

    import recsys.embedder.fingerprint as fingerprint
    import recsys.pipeline.fingerprints as fingerprints
    from recsys.pipeline.fingerprints import PREPARED, prepare_fingerprints

    home = tmp_path / "home"
    shutil.copytree(versions.home, home)
    shutil.rmtree(home / "cache" / "fingerprints")
    calls = []
    real = fingerprint.fingerprint_file

    def stop_at_the_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fingerprint, "fingerprint_file", stop_at_the_second)
    first = prepare_fingerprints(home, IndexSettings(), workers=1)
    assert first.interrupted and first.fingerprinted == 1 and len(_cached(home)) == 1
    assert not (home / "cache" / "fingerprints" / PREPARED).exists()
    monkeypatch.setattr(fingerprint, "fingerprint_file", real)
    monkeypatch.setattr(fingerprints, "POOL_FROM", 0)
    rest = prepare_fingerprints(home, IndexSettings(), workers=2)  # the pool: spawned workers
    assert not rest.interrupted and rest.fingerprinted >= 1 and (home / "cache" / "fingerprints" / PREPARED).exists()
    assert _cached(home) == versions.prepared  # the same files as the fixture's in-process run
    for name in _cached(home):
        assert np.array_equal(np.load(home / "cache" / "fingerprints" / name),
                              np.load(versions.home / "cache" / "fingerprints" / name))
    assert prepare_fingerprints(home, IndexSettings(), workers=2).fingerprinted == 0  # prepared: nothing to do


def test_a_fingerprint_that_hangs_its_worker_stops_at_the_decoders_deadline(monkeypatch):
    import signal
    import time

    import recsys.embedder.fingerprint as fingerprint
    from recsys.embedder.decoding import fingerprint_with_deadline

    monkeypatch.setattr(fingerprint, "fingerprint_file", lambda *a, **k: time.sleep(5))
    previous = signal.getsignal(signal.SIGALRM)
    t0 = time.monotonic()
    bits, why = fingerprint_with_deadline("/music/hangs.mp3", 30.0, 0.0, 1.0)
    assert len(bits) == 0 and "audio.decode_timeout_s" in why and time.monotonic() - t0 < 3
    assert signal.getsignal(signal.SIGALRM) is previous and signal.alarm(0) == 0  # nothing left armed
