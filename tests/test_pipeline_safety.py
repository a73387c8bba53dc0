"""The whole pipeline harms nothing: music files and the player database keep their bytes and mtimes through embed,
train-encoder, train-classifier, playlist and similar (with both made read-only, and the home elsewhere), and a
playlist killed while it is written never leaves a half-written file behind."""

from __future__ import annotations

import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import xspf_lib

from recsys.app import demo
from recsys.app.demo import build_library, write_demo_db


def _snapshot(paths: list[Path]) -> dict[Path, tuple[bytes, int, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns, stat.S_IMODE(p.stat().st_mode)) for p in paths}


def _cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # the encoders are not the subject: the cheapest settings that still run every stage
    env = {**os.environ, "RECSYS_TRAIN__EPOCHS": "1", "RECSYS_TRAIN__BASE": "cnn", "RECSYS_TRAIN__CHANNELS": "8:16",
           "RECSYS_EMBED__ENCODER": "dsp", "RECSYS_TRAIN__WINDOWS": "2", "RECSYS_TRAIN__WINDOW_SECONDS": "3.0"}
    return subprocess.run([sys.executable, "-m", "recsys.cli", "--home", str(home), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_whole_pipeline_never_writes_music_or_player_db(tmp_path, monkeypatch):
    """... nor anything outside the home and the playlist's folder: the user's own home (~/.config, ~/.cache) stays
    empty, with pytest's and CI's variables out of the way (MLflow turns its telemetry off by itself under them)."""
    user_home = tmp_path / "user-home"  # HOME of every test (conftest)
    user_home.mkdir(exist_ok=True)
    for name in ("PYTEST_CURRENT_TEST", "CI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        monkeypatch.delenv(name, raising=False)
    music = tmp_path / "music"
    monkeypatch.setattr(demo, "SECONDS", 12.0)  # a third of the demo's length: the clips and windows still fit
    tracks = build_library(music)  # the demo's library: enough ratings and tracks for both training stages
    db = write_demo_db(tmp_path / "library-db" / "clementine.db", tracks)
    files = sorted(p for p in music.rglob("*") if p.is_file())
    folders = sorted({p.parent for p in files} | {music, db.parent})
    for path in [*files, db]:
        path.chmod(0o444)
    for folder in folders:
        folder.chmod(0o555)
    before = _snapshot([*files, db])
    home = tmp_path / "elsewhere" / "recsys-home"  # the home on another path than the music and the database
    try:
        for args in (["embed", "--db", str(db), "-q"],
                     ["train-encoder", "--db", str(db), "--epochs", "1", "--no-activate"],
                     ["train-classifier", "--db", str(db)],
                     ["playlist", "--db", str(db), "--out", str(tmp_path / "out.xspf")],
                     ["similar", str(files[0])]):
            done = _cli(home, *args)
            assert done.returncode == 0, f"{args[0]}: {done.stderr}"
        after = _snapshot([*files, db])
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert after == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["clementine.db"]  # no -wal, -shm or journal left
    assert sorted(p for p in music.rglob("*") if p.is_file()) == files
    assert [str(p.relative_to(user_home)) for p in user_home.rglob("*")] == []


def test_killed_playlist_leaves_no_half_written_file(small_library):
    lib = small_library
    db, home = lib.db, lib.home
    assert _cli(home, "embed", "--db", str(db), "-q").returncode == 0
    rng = random.Random(7)
    out = lib.root / "lists" / "killed.xspf"
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-m", "recsys.cli", "--home", str(home), "playlist", "--db", str(db),
                                 "--out", str(out), "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():  # whatever moment it died at, the playlist is whole or absent
            assert len(xspf_lib.Playlist.parse(str(out)).trackList) > 0
    visible = [p.name for p in out.parent.iterdir() if not p.name.startswith(".")] if out.parent.exists() else []
    assert visible in ([], ["killed.xspf"])


def test_killed_train_encoder_resumes_from_its_last_checkpoint(small_library):
    """kill -9 mid-run, after at least one epoch's checkpoint: `--resume` continues from it and finishes the run."""
    lib = small_library
    env = {**os.environ, "RECSYS_TRAIN__MIN_TRACKS": "4", "RECSYS_TRAIN__CHANNELS": "8:16",
           "RECSYS_TRAIN__BASE": "cnn", "RECSYS_TRAIN__WINDOWS": "2", "RECSYS_TRAIN__WINDOW_SECONDS": "4.0",
           "RECSYS_TRAIN__BATCH_SIZE": "8"}
    base = [sys.executable, "-m", "recsys.cli", "--home", str(lib.home), "train-encoder", "--db", str(lib.db),
            "--epochs", "6", "--no-activate", "-q"]
    runs = lib.home / "models" / "runs"
    proc = subprocess.Popen(base, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(runs.glob("*/last.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # into the next epoch
    assert proc.poll() is None, "training ended before it could be killed: make the run longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (last,) = runs.glob("*/last.pt")
    done = subprocess.run([*base, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    resumed_after = int(re.search(r"resuming .* after epoch (\d+) of 6", done.stdout).group(1))
    assert 1 <= resumed_after < 6  # it went on from the killed run's checkpoint, not from scratch
    assert list(runs.glob("*/last.pt")) == [last]  # in the killed run's own folder
    import torch

    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 6  # the resumed run finished the 6 epochs the killed one was asked for
