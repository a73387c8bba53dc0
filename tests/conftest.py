"""Shared test data: small synthesised libraries with a Clementine-shaped database, made fresh for each test."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from recsys.cli import main
from recsys.synth.audio import FORMATS, STYLES, synth_track, write_audio
from recsys.synth.player_db import SynthSong, write_clementine_db

SR = 22050


@dataclass
class SmallLibrary:
    root: Path
    music: Path
    db: Path
    home: Path
    songs: list[SynthSong]

    def rewrite_db(self) -> None:
        self.db.unlink()
        write_clementine_db(self.db, self.songs)

    def split_first_into_cue_parts(self) -> str:
        """Make the first file two tracks of a CUE sheet (0-4 s and 4-8 s) in the database; returns its path."""
        whole = self.songs[0].path
        self.songs = [
            SynthSong(path=whole, title="part one", beginning_ns=0, length_ns=4 * 10**9, cue_path=whole + ".cue"),
            SynthSong(path=whole, title="part two", beginning_ns=4 * 10**9, length_ns=4 * 10**9,
                      cue_path=whole + ".cue"),
        ] + self.songs[1:]
        self.rewrite_db()
        return whole

    def run(self, *args: str, input: str | None = None):
        """Run the real CLI in-process; returns click's Result (exit_code, output)."""
        runner = CliRunner()
        return runner.invoke(main, ["--home", str(self.home), *args], input=input, catch_exceptions=False)


def fingerprint(*roots: Path) -> dict[str, tuple]:
    """Bytes, mode and mtime of every file and folder under ``roots`` (folders: their listing; FIFOs and links as
    such, never opened): what must be the same after any recsys command, for the user's music and databases."""
    seen: dict[str, tuple] = {}
    for root in roots:
        for path in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            st = path.lstat()
            if path.is_symlink():
                content: object = os.readlink(path)
            elif path.is_dir():
                content = sorted(os.listdir(path))
            elif path.is_file():
                content = path.read_bytes()
            else:
                content = None
            seen[str(path)] = (content, st.st_mode, st.st_mtime_ns)
    return seen


_CACHE: dict[tuple, Path] = {}


def _audio_set(tmp_factory, n: int, seconds: float) -> Path:
    """Synthesised once per session, copied per test (synthesis and lossy encoding are the slow part)."""
    key = (n, seconds)
    if key not in _CACHE:
        folder = tmp_factory.mktemp(f"audio{n}")
        formats = list(FORMATS)
        for i in range(n):
            style = STYLES[i % len(STYLES)]
            fmt = formats[i % len(formats)]
            samples = synth_track(style, seconds, sample_rate=SR, seed=i)
            write_audio(folder / f"{i:02d} {style} #{i} & 100%.{FORMATS[fmt]}", samples, SR, fmt)
        _CACHE[key] = folder
    return _CACHE[key]


@pytest.fixture
def small_library(tmp_path, tmp_path_factory) -> SmallLibrary:
    """A dozen tracks of several styles, one per format in turn, listed in a Clementine database."""
    source = _audio_set(tmp_path_factory, 12, 8.0)
    music = tmp_path / "music"
    shutil.copytree(source, music)
    songs = []
    for i, path in enumerate(sorted(music.iterdir())):
        style = STYLES[i % len(STYLES)]
        songs.append(SynthSong(path=str(path), title=f"{style} {i}", artist=f"artist {style}",
                               album=f"album {style} {i % 2}", track=i + 1, rating=(0.2 * (i % 6)) or -1.0,
                               length_ns=8 * 10**9))
    db = tmp_path / "clementine.db"
    write_clementine_db(db, songs)
    return SmallLibrary(tmp_path, music, db, tmp_path / "home", songs)


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch, tmp_path):
    """Tests never see the developer's own player database, home or RECSYS_* settings."""
    for name in list(os.environ):
        if name.startswith("RECSYS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)  # the user config file: ~/.config/recsys/config.yaml
    monkeypatch.delenv("BEETSDIR", raising=False)  # nor the developer's beets library (found at its usual place)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user-home" / ".local" / "share"))
