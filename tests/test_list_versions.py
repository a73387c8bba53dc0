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
