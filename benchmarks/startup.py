"""Start-up a user feels: a no-op `recsys embed` and `recsys status`, fresh processes, next to a bare interpreter.

A library of --tracks files (empty files: nothing is decoded when everything is up to date, so only their stat is
real) listed in a Clementine database, and a table in which every track is already embedded with the current encoder
(the default one, vectors random), plus its index snapshot. One warm-up `recsys embed` (it remembers the facts, as a
user's first real run does), then the median of --repeat fresh processes of each command. Goal (issue 14): each under
1.5 s at 250 tracks and under 3 s at 100,000.

Then the first of each right after an embed that did work (issue 26): one more file gets a byte appended, so the next
embed plans it, tries to decode it and records its failure (a write to the table); the `recsys status` and the no-op
`recsys embed` that follow it are timed, --repeat times, a different file each time.

    python benchmarks/startup.py [--tracks 250] [--repeat 5] [--dir /tmp/recsys-bench-startup]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _synthetic_home import build_home

from recsys.config import load_settings
from recsys.embedder.active import resolve_encoder
from recsys.embedder.decoding import decode_spec


def build(root: Path, n: int) -> Path:
    """Files, database, table (all current for the encoder a plain `recsys embed` uses) and snapshot under ``root``;
    returns the database path."""
    resolved = resolve_encoder("auto", root / "home", "cpu")
    spec = decode_spec(load_settings(environ={}).audio, resolved.encoder.sample_rate)
    vectors = np.random.default_rng(0).standard_normal((n, resolved.encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return build_home(root, vectors, spec.vector_id(resolved.encoder_id))


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "RECSYS_DEBUG": "1"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return seconds, done.stdout


def median_of(command: list[str], repeat: int) -> tuple[float, str]:
    runs = [timed(command) for _ in range(repeat)]
    return statistics.median(s for s, _ in runs), runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/recsys-bench-startup"))
    a = parser.parse_args()
    root = a.dir / str(a.tracks)
    if not (root / "clementine.db").is_file():
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        build(root, a.tracks)
        print(f"built {a.tracks} embedded tracks in {time.perf_counter() - started:.0f} s")
    recsys = [sys.executable, "-m", "recsys.cli", "--home", str(root / "home")]
    db = ["--db", str(root / "clementine.db")]
    _, warm = timed([*recsys, "embed", *db, "-q"])
    assert f"up to date {a.tracks}" in warm, warm
    bare, _ = median_of([sys.executable, "-c", "pass"], a.repeat)
    imported, _ = median_of([sys.executable, "-c", "import recsys.cli"], a.repeat)
    embed, out = median_of([*recsys, "embed", *db, "-q"], a.repeat)
    assert f"up to date {a.tracks}" in out and "embedded 0," in out, out
    status, out = median_of([*recsys, "status", *db], a.repeat)
    assert f"embedded: {a.tracks} current" in out, out
    goal = 1.5 if a.tracks <= 250 else 3.0
    print(f"{a.tracks} tracks, median of {a.repeat} fresh processes, {os.cpu_count()} CPU cores, load average "
          f"{os.getloadavg()[0]:.1f}:")
    print(f"  bare interpreter (python -c pass): {bare:.2f} s; import recsys.cli: {imported:.2f} s")
    print(f"  no-op recsys embed: {embed:.2f} s (goal < {goal:g} s)")
    print(f"  recsys status:      {status:.2f} s (goal < {goal:g} s)")
    firsts = [after_work(recsys, db, root / "music", i) for i in range(a.repeat)]
    print(f"  right after an embed that did work, first recsys status: "
          f"{statistics.median(s for s, _ in firsts):.2f} s, first no-op recsys embed: "
          f"{statistics.median(e for _, e in firsts):.2f} s (load average {os.getloadavg()[0]:.1f})")


def after_work(recsys: list[str], db: list[str], music: Path, i: int) -> tuple[float, float]:
    """(status, no-op embed) seconds, each the first run after an embed that recorded track i's failure."""
    with open(music / f"{i // 1000:03d}" / f"{i:06d}.flac", "ab") as f:
        f.write(b"x")
    _, out = timed([*recsys, "embed", *db, "-q"])
    assert "failed 1" in out or "1 failed" in out, out
    status, _ = timed([*recsys, "status", *db])
    embed, out = timed([*recsys, "embed", *db, "-q"])
    assert "embedded 0," in out, out
    return status, embed


if __name__ == "__main__":
    main()
