"""The index at library scale (issue 5 goal: recall@10 >= 0.95 with p50 < 1 ms per query; `recsys similar` < 1 s).

A synthetic table of N clustered, L2-normalised vectors (clusters so that neighbours exist and recall means something)
is written through TrackStore, snapshotted by build_snapshot (HNSW above index.exact_max_tracks), and queried:

- table write time (TrackStore.upsert in batches of --write-batch rows) and size on disk, before and after compact();
- snapshot build time (read the table + FAISS HNSW build) and its size on disk;
- single-threaded query latency p50/p99 over --queries library tracks, recall@10 against exact search;
- peak RSS of this process; `recsys similar PATH` end-to-end wall time in a fresh process (median of 3).

    python benchmarks/index_scale.py [--n 1000000] [--dim 90] [--queries 1000] [--dir /tmp/recsys-index-bench]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from recsys.config import IndexSettings
from recsys.index.ann import Searcher, build_snapshot, load_snapshot
from recsys.index.store import TrackRow, TrackStore

ENCODER_ID = "bench"
POINTS_PER_CLUSTER = 50


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """n unit vectors around n / 50 random centres (spread 0.35 per dimension of a unit centre): tracks of a style
    cluster, and each track has close and far neighbours, as a real library's embeddings do."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // POINTS_PER_CLUSTER), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, len(centres), n)]
    x += rng.standard_normal((n, dim), dtype=np.float32) * np.float32(0.35 / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def path_of(i: int) -> str:
    return f"/music/artist {i // 120:05d}/album {i // 12:06d}/{i % 12 + 1:02d} track {i:07d}.flac"


def rows(vectors: np.ndarray, start: int) -> list[TrackRow]:
    now = datetime.now(timezone.utc)
    return [TrackRow(key=path_of(i), path=path_of(i), start_s=0.0, content_id=f"{i:024x}", size=5_000_000 + i,
                     mtime_ns=1_700_000_000_000_000_000 + i, duration_s=240.0, artist=f"artist {i // 120}",
                     album=f"album {i // 12}", title=f"track {i}", genre="bench", year=2000 + i % 25,
                     track_number=i % 12 + 1, encoder_id=ENCODER_ID, vector=v, embedded_at=now)
            for i, v in zip(range(start, start + len(vectors)), vectors, strict=True)]


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=90, help="vector size (the dsp encoder's: 90)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--write-batch", type=int, default=50_000, help="rows per TrackStore.upsert commit")
    ap.add_argument("--dir", type=Path, default=None, help="home folder to build in [default: a temporary one]")
    args = ap.parse_args()
    home = args.dir or Path(tempfile.mkdtemp(prefix="recsys-index-bench-"))
    shutil.rmtree(home, ignore_errors=True)
    ix = IndexSettings()
    print(f"N={args.n} D={args.dim} home={home} index settings: {ix}")

    vectors = clustered(args.n, args.dim)
    store = TrackStore.open(home)
    started = time.perf_counter()
    for start in range(0, args.n, args.write_batch):
        store.upsert(rows(vectors[start:start + args.write_batch], start))
    write_s = time.perf_counter() - started
    size_written = du(home / "tracks.lance")
    started = time.perf_counter()
    store.compact()
    compact_s = time.perf_counter() - started
    size_table = du(home / "tracks.lance")
    print(f"table: write {write_s:.1f} s ({args.n / write_s:,.0f} rows/s, batches of {args.write_batch}), "
          f"{size_written / 2**20:.0f} MiB; compact {compact_s:.1f} s -> {size_table / 2**20:.0f} MiB "
          f"({size_table / args.n:.0f} B/track)")

    started = time.perf_counter()
    manifest = build_snapshot(store, home, ENCODER_ID, exact_max_tracks=ix.exact_max_tracks, hnsw_m=ix.hnsw_m,
                              hnsw_ef_construction=ix.hnsw_ef_construction)
    build_s = time.perf_counter() - started
    snapshot = (home / "ann").resolve()
    print(f"snapshot: {manifest['kind']} built in {build_s:.1f} s with {faiss.omp_get_max_threads()} threads, "
          f"{du(snapshot) / 2**20:.0f} MiB ({du(snapshot) / args.n:.0f} B/track)")

    faiss.omp_set_num_threads(1)
    lib = load_snapshot(home)
    searcher = Searcher(lib, home, ef_search=ix.hnsw_ef_search)
    rng = np.random.default_rng(1)
    query_rows = rng.choice(args.n, size=min(args.queries, args.n), replace=False)
    queries = np.ascontiguousarray(lib.vectors[query_rows])
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        hits = searcher.search(q, 10)[0]
        times.append(time.perf_counter() - t)
        found.append({i for i, _ in hits})
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    _, exact = faiss.knn(queries, np.asarray(lib.vectors), 10, metric=faiss.METRIC_INNER_PRODUCT)  # snapshot order
    recall = float(np.mean([len(f & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)]))
    ms = np.array(times) * 1000
    print(f"query (1 thread, k=10, efSearch={ix.hnsw_ef_search}): p50 {np.percentile(ms, 50):.3f} ms, "
          f"p99 {np.percentile(ms, 99):.3f} ms; recall@10 {recall:.4f} over {len(queries)} queries")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MiB")

    walls = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "recsys.cli", "--home", str(home), "similar", path_of(int(query_rows[0])),
                        "-k", "10"], check=True, capture_output=True)
        walls.append(time.perf_counter() - t)
    print(f"`recsys similar PATH -k 10` end to end: median {statistics.median(walls):.2f} s "
          f"(runs: {', '.join(f'{w:.2f}' for w in walls)})")
    if args.dir is None:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
