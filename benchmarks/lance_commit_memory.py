"""Resident memory of one process writing a LanceDB table the way `recsys embed` does: batches of 64 rows (200-d
vectors, 50 tags), one merge_insert commit each, through :class:`recsys.index.store.TrackStore`.

    python benchmarks/lance_commit_memory.py [--commits 320] [--compact-every 0] [--dir /tmp/recsys-commit-mem]

Isolates what the table's commits cost from the encoder and the decoders: RSS every 50 commits.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from recsys.index.store import TrackRow, TrackStore


def rss_mb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=320)
    ap.add_argument("--compact-every", type=int, default=0, help="compact every N commits (0: never)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-commit-mem")
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    store = TrackStore.open(args.dir)
    rng = np.random.default_rng(0)
    names = [f"tag{i}" for i in range(50)]
    started = time.perf_counter()
    for c in range(args.commits):
        rows = []
        for i in range(c * 64, (c + 1) * 64):
            v = rng.standard_normal(200).astype(np.float32)
            rows.append(TrackRow(key=f"/m/{i:07d}.flac", path=f"/m/{i:07d}.flac", start_s=0.0, content_id=f"c{i}",
                                 size=i, mtime_ns=i, duration_s=10.0, artist="a", album="b", title=str(i), genre="",
                                 year=None, track_number=None, encoder_id="e", vector=v / np.linalg.norm(v),
                                 embedded_at=datetime.now(timezone.utc), tags=rng.random(50).astype(np.float32)))
        store.upsert(rows, names)
        if args.compact_every and (c + 1) % args.compact_every == 0:
            store.compact()
        if c % 50 == 0 or c == args.commits - 1:
            seconds = time.perf_counter() - started
            print(f"commit {c + 1:5d}  rows {(c + 1) * 64:7d}  RSS {rss_mb():5d} MB  {seconds:5.0f} s", flush=True)


if __name__ == "__main__":
    main()
