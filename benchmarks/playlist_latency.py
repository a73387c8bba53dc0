"""Playlist and similar latency on a large synthetic library, end to end (process start to file written).

A 100,000-track table (clustered random vectors at the dsp dimension, tags, one empty file per track so the
"exists on disk" check is real) with a Clementine database holding 5,000 ratings that follow the clusters. Measures,
in one run: `recsys train-classifier` (wall time, and the training itself), `recsys playlist --top-n 100` (fresh
process, median of --repeat runs) and `recsys similar` (fresh process). Goals: playlist < 2 s, similar < 1 s.

    python benchmarks/playlist_latency.py [--tracks 100000] [--ratings 5000] [--dir /tmp/recsys-bench-playlist]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _synthetic_home import build_home

DIM = 90  # the dsp encoder's dimension
ENCODER_ID = "bench-clustered"
CLUSTERS = 200


def library(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``CLUSTERS`` centres, and each track's cluster (its 'style')."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    cluster = rng.integers(0, CLUSTERS, n)
    vectors = centres[cluster] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, cluster


def build(root: Path, n: int, n_ratings: int) -> Path:
    """The table, the snapshot, the files and the database under ``root``; returns the database path."""
    vectors, cluster = library(n)
    liked_clusters = set(range(0, CLUSTERS, 10))
    rng = np.random.default_rng(1)
    rated = set(rng.choice(n, n_ratings, replace=False).tolist())
    stars = {i: 5 if cluster[i] in liked_clusters else int(rng.integers(1, 4)) for i in sorted(rated)}
    return build_home(root, vectors, ENCODER_ID, artists=20000, stars=lambda i: stars.get(i, 0))


def timed(args: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "recsys.cli", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--ratings", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/recsys-bench-playlist"))
    a = parser.parse_args()
    root = a.dir / f"{a.tracks}-{a.ratings}"
    if not (root / "clementine.db").is_file():
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        build(root, a.tracks, a.ratings)
        print(f"built {a.tracks} tracks with {a.ratings} ratings in {time.perf_counter() - started:.0f} s")
    base = ["--home", str(root / "home")]
    db = ["--db", str(root / "clementine.db")]
    wall, out = timed([*base, "train-classifier", *db])
    trained = out.strip().splitlines()[-1]
    print(f"train-classifier: {wall:.2f} s wall ({trained})")
    playlist = []
    for n in range(a.repeat):
        seconds, _ = timed([*base, "playlist", *db, "--top-n", "100", "--out", str(root / f"p{n}.xspf"), "--force"])
        playlist.append(seconds)
    similar = [timed([*base, "similar", "artist 12345 - title 12345", "-k", "10"])[0] for _ in range(a.repeat)]
    print(f"playlist --top-n 100: median {statistics.median(playlist):.2f} s, max {max(playlist):.2f} s "
          f"(goal < 2 s) over {a.repeat} fresh processes")
    print(f"similar -k 10: median {statistics.median(similar):.2f} s, max {max(similar):.2f} s (goal < 1 s)")


if __name__ == "__main__":
    main()
