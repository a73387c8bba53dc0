"""The index at library scale (issue 5: recall@10 >= 0.95, p50 < 1 ms; issue 26: 10 M vectors on one query host).

N unit vectors are written through TrackStore, snapshotted by build_snapshot (the kind by index settings, or forced
with --kind), and queried. The vectors are by default realistic: the musicnn vectors of the 3 s patches of the
development corpus (computed once, cached), resampled with noise into N tracks (runs of patches of one recording,
blended into another, plus noise), and the queries are drawn the same way but are not in the index; --vectors
clustered gives the earlier tight synthetic clusters. Measured:

- table write time (TrackStore.upsert in batches of --write-batch rows) and size on disk, before and after compact();
- snapshot build time (FAISS threads capped by --threads, 1 by default: the machine is shared) and sizes on disk;
- single-threaded query latency p50/p99 and recall@10 against exact search, for each --nprobe of a compressed index;
- with --compare, recall@10 of other codes (sq8, PQ dim/4, PQ dim/2) built over the same vectors, by re-ranking depth;
- `recsys similar PATH` end-to-end wall time and peak RSS in a fresh process (3 runs).

    python benchmarks/index_scale.py [--n 1000000] [--kind auto|hnsw|ivf] [--codes pq|sq8] [--nprobe 16 32 64]
                                     [--compare [RERANK ...]] [--queries 500] [--threads 1]
                                     [--vectors musicnn|clustered] [--dir DIR [--reuse]] [--build-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
from _memory import peak_mb, reset_peak, status_mb

from recsys.config import IndexSettings
from recsys.index.ann import LibraryVectors, Searcher, build_ivf, build_snapshot, load_snapshot, pq_bytes
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


def musicnn_patches(corpus: Path, cache: Path, crop_s: float = 45.0) -> tuple[np.ndarray, np.ndarray]:
    """The musicnn 200-d penultimate vector of every 3 s patch of the centre ``crop_s`` of each audio file under
    ``corpus`` (the development corpus, /work/shared/corpus), and each patch's file number; cached in ``cache``."""
    if cache.exists():
        data = np.load(cache)
        return data["patches"], data["track"]
    import torch

    from recsys.embedder.audio import load_crop
    from recsys.embedder.musicnn import MusicnnEncoder

    torch.set_num_threads(1)
    encoder = MusicnnEncoder()
    files = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in {".ogg", ".flac", ".mp3", ".wav", ".opus"})
    patches, track = [], []
    with torch.inference_mode():
        for number, path in enumerate(files):
            clip = load_crop(path, encoder.sample_rate, crop_s=crop_s)
            logmel = encoder.frontend(torch.from_numpy(np.ascontiguousarray(clip.samples, np.float32))[None])
            out = encoder._run_patches(encoder.patches(logmel)[0]).numpy()
            patches.append(out)
            track.append(np.full(len(out), number))
    np.savez(cache, patches=np.concatenate(patches), track=np.concatenate(track))
    return np.concatenate(patches), np.concatenate(track)


def resampled(patches: np.ndarray, track: np.ndarray, n: int, seed: int, noise: float = 0.25,
              chunk: int = 100_000) -> np.ndarray:
    """n unit vectors like track embeddings of a large library, made from real musicnn patch vectors: each is the
    mean of a random run of 2-15 consecutive patches of one recording, blended with weight 0-0.3 into another
    recording's run, plus Gaussian noise of ``noise`` x the patches' per-dimension spread. Neighbourhoods are as
    uneven as real music's (recordings of one soundtrack crowd together), and no two points are equal."""
    rng = np.random.default_rng(seed)
    starts = np.flatnonzero(np.r_[True, track[1:] != track[:-1]])
    ends = np.r_[starts[1:], len(track)]
    spread = patches.std(axis=0).astype(np.float32)
    cumulative = np.vstack([np.zeros((1, patches.shape[1])), np.cumsum(patches, axis=0, dtype=np.float64)])
    out = np.empty((n, patches.shape[1]), np.float32)

    def runs(count: int) -> np.ndarray:
        which = rng.integers(0, len(starts), count)
        length = np.minimum(rng.integers(2, 16, count), ends[which] - starts[which])
        first = starts[which] + (rng.random(count) * (ends[which] - starts[which] - length + 1)).astype(np.int64)
        return ((cumulative[first + length] - cumulative[first]) / length[:, None]).astype(np.float32)

    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        weight = (rng.random((m, 1)) * 0.3).astype(np.float32)
        x = (1 - weight) * runs(m) + weight * runs(m)
        x += rng.standard_normal(x.shape, dtype=np.float32) * (noise * spread)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def path_of(i: int) -> str:
    return f"/music/artist {i // 120:05d}/album {i // 12:06d}/{i % 12 + 1:02d} track {i:07d}.flac"


def rows(vectors: np.ndarray, start: int) -> list[TrackRow]:
    now = datetime.now(timezone.utc)
    return [TrackRow(key=path_of(i), path=path_of(i), start_s=0.0, content_id=f"{i:024x}", size=5_000_000 + i,
                     mtime_ns=1_700_000_000_000_000_000 + i, duration_s=240.0, artist=f"artist {i // 120}",
                     album=f"album {i // 12}", title=f"track {i}", genre="bench", year=2000 + i % 25,
                     track_number=i % 12 + 1, encoder_id=ENCODER_ID, vector=v, embedded_at=now)
            for i, v in zip(range(start, start + len(vectors)), vectors, strict=True)]


class AnonPeak:
    """The largest RssAnon of this process seen while the block runs, sampled by a thread: VmHWM counts the
    memory-mapped files' pages too, which the kernel reclaims under pressure; anonymous memory is what a build
    needs the machine to have."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.peak = every, status_mb("RssAnon")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(self.every):
            self.peak = max(self.peak, status_mb("RssAnon"))

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, status_mb("RssAnon"))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def query_process_rss(home: Path, path: str) -> tuple[float, float]:
    """(wall s, peak RSS MiB) of `recsys similar PATH -k 10` in a fresh process."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "subprocess.run([sys.executable, '-m', 'recsys.cli', '--home', sys.argv[1], 'similar', sys.argv[2], "
            "'-k', '10'], check=True, capture_output=True); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(home), path], check=True, capture_output=True, text=True)
    wall, rss = out.stdout.split()
    return float(wall), float(rss)


def compare_codes(lib: LibraryVectors, home: Path, queries: np.ndarray, exact: np.ndarray, nprobe: int,
                  reranks: list[int]) -> None:
    """Recall@10 and batched time a query of the snapshot's index and of sq8, PQ(dim/4) and PQ(dim/2) indexes built
    here over the same vectors, at each re-ranking depth (the snapshot itself is left as it is)."""
    dim = lib.vectors.shape[1]
    built = lib.index
    for label, settings in (("snapshot", None), ("SQ8", IndexSettings(ivf_codes="sq8")),
                            (f"PQ{pq_bytes(dim)}", IndexSettings(ivf_codes="pq")),
                            (f"PQ{pq_bytes(dim, dim // 2)}", IndexSettings(ivf_codes="pq", pq_m=dim // 2))):
        if settings is not None:
            cpu = time.process_time()
            lib.index, params = build_ivf(lib.vectors, settings)
            label += f" (index build {time.process_time() - cpu:.1f} s CPU, {params['factory']})"
        for rerank in reranks:
            searcher = Searcher(lib, home, nprobe=nprobe, rerank=rerank)
            started = time.perf_counter()
            _, found = searcher.search_arrays(queries, 10)
            ms = (time.perf_counter() - started) / len(queries) * 1000
            recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found.tolist(), exact.tolist(), strict=True)])
            print(f"compare {label}: nprobe {nprobe}, re-ranking {rerank} x k: recall@10 {recall:.4f}, "
                  f"{ms:.2f} ms a query (batched)")
    lib.index = built


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--vectors", choices=("musicnn", "clustered"), default="musicnn",
                    help="musicnn: real musicnn patch vectors of --corpus resampled with noise (200-d); "
                         "clustered: tight synthetic clusters of --dim")
    ap.add_argument("--corpus", type=Path, default=Path("/tmp/devcorpus"),
                    help="the development corpus (/work/shared/corpus/README.md)")
    ap.add_argument("--patches", type=Path, default=Path(tempfile.gettempdir()) / "recsys-musicnn-patches.npz",
                    help="cache of the corpus's patch vectors (computed once)")
    ap.add_argument("--dim", type=int, default=90, help="vector size of --vectors clustered")
    ap.add_argument("--kind", choices=("auto", "hnsw", "ivf"), default="auto",
                    help="auto: the index settings' rule; hnsw / ivf: that kind whatever the size")
    ap.add_argument("--codes", choices=("pq", "sq8"), default=None, help="index.ivf_codes [default: the setting]")
    ap.add_argument("--nprobe", type=int, nargs="+", default=None, help="ivf_nprobe values to measure")
    ap.add_argument("--threads", type=int, default=1, help="FAISS threads for the build (queries: 1)")
    ap.add_argument("--queries", type=int, default=500, help="queries, drawn like the library but not in it")
    ap.add_argument("--write-batch", type=int, default=50_000, help="rows per TrackStore.upsert commit")
    ap.add_argument("--dir", type=Path, default=None, help="home folder to build in [default: a temporary one]")
    ap.add_argument("--compare", type=int, nargs="*", default=None, metavar="RERANK",
                    help="also compare sq8 and two PQ code sizes built over the same vectors (compressed "
                         "snapshots only), at these re-ranking depths [default: 10 20 50]")
    ap.add_argument("--build-only", action="store_true",
                    help="stop after the snapshot build (with --reuse: the writer's build alone, in a fresh process)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the table a previous run with the same --n and --vectors left in --dir")
    args = ap.parse_args()
    home = args.dir or Path(tempfile.mkdtemp(prefix="recsys-index-bench-"))
    reuse = args.reuse and args.dir is not None and (home / "tracks.lance").exists()
    if not reuse:
        shutil.rmtree(home, ignore_errors=True)
    overrides = {"auto": {}, "hnsw": {"exact_max_tracks": 0, "compressed_min_tracks": 100 * args.n},
                 "ivf": {"exact_max_tracks": 0, "compressed_min_tracks": 0}}[args.kind]
    if args.codes:
        overrides["ivf_codes"] = args.codes
    ix = IndexSettings(**overrides)
    faiss.omp_set_num_threads(args.threads)

    if args.vectors == "musicnn":
        patches, track = musicnn_patches(args.corpus, args.patches)
        vectors = None if reuse else resampled(patches, track, args.n, seed=0)  # --reuse: the table holds them
        queries = resampled(patches, track, args.queries, seed=1)
        source = f"{len(patches)} musicnn patch vectors of {track.max() + 1} corpus recordings, resampled"
    else:
        both = clustered(args.n + args.queries, args.dim)
        vectors, queries = both[:args.n], both[args.n:]
        source = "tight synthetic clusters"
    print(f"N={args.n} D={queries.shape[1]} ({source}) home={home} index settings: {ix}")
    store = TrackStore.open(home)
    if reuse:
        print(f"table: reused, {store.count} rows")
    else:
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
    del vectors

    before_build = status_mb("VmRSS")
    reset = reset_peak()
    started, cpu = time.perf_counter(), time.process_time()
    with AnonPeak() as anon:
        manifest = build_snapshot(store, home, ENCODER_ID, index=ix)
    build_s, build_cpu = time.perf_counter() - started, time.process_time() - cpu
    build_peak = (f"build's peak RSS {peak_mb():.0f} MiB (RSS before it {before_build:.0f} MiB)" if reset
                  else f"peak RSS of the process so far {peak_mb():.0f} MiB")
    build_peak += (f", anonymous at most {anon.peak:.0f} MiB (sampled every {anon.every} s; the rest: file pages, "
                   "the libraries and memory-mapped files, reclaimable)")
    snapshot = (home / "ann").resolve()
    index_file = snapshot / "index.faiss"
    index_bytes = index_file.stat().st_size if index_file.exists() else 0
    print(f"snapshot: {manifest['kind']} {manifest['params']} built in {build_s:.1f} s ({build_cpu:.1f} s CPU) with "
          f"{args.threads} FAISS thread(s), load {os.getloadavg()[0]:.1f}, {du(snapshot) / 2**20:.0f} MiB on disk; "
          f"index.faiss {index_bytes / 2**20:.1f} MiB ({index_bytes / args.n:.1f} B/track); {build_peak}")

    if args.build_only:
        return
    faiss.omp_set_num_threads(1)
    lib = load_snapshot(home)
    started = time.perf_counter()
    _, exact = faiss.knn(queries, np.asarray(lib.vectors), 10, metric=faiss.METRIC_INNER_PRODUCT)
    exact_ms = (time.perf_counter() - started) / len(queries) * 1000
    print(f"exact search (1 thread): {exact_ms:.2f} ms a query")
    probes = args.nprobe or [ix.ivf_nprobe]
    for nprobe in probes if lib.kind == "ivf" else [None]:
        searcher = Searcher(lib, home, ef_search=ix.hnsw_ef_search, nprobe=nprobe or ix.ivf_nprobe,
                            rerank=ix.ivf_rerank)
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            hits = searcher.search(q, 10)[0]
            times.append(time.perf_counter() - t)
            found.append({i for i, _ in hits})
        recall = float(np.mean([len(f & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)]))
        ms = np.array(times) * 1000
        what = f"nprobe={nprobe}, rerank={ix.ivf_rerank}x10" if nprobe else f"efSearch={ix.hnsw_ef_search}"
        print(f"query (1 thread, k=10, {what}): p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} "
              f"ms; recall@10 {recall:.4f} over {len(queries)} queries not in the index")
    if args.compare is not None and lib.kind == "ivf":
        compare_codes(lib, home, queries, exact, probes[0], args.compare or [10, 20, 50])
    print(f"peak RSS of this process since the build started: {peak_mb():.0f} MiB")

    runs = [query_process_rss(home, path_of(i)) for i in (0, 1, 2)]
    print(f"`recsys similar PATH -k 10` end to end (index.ivf_nprobe {ix.ivf_nprobe}): median "
          f"{statistics.median(w for w, _ in runs):.2f} s (runs: {', '.join(f'{w:.2f}' for w, _ in runs)}); "
          f"peak RSS {max(r for _, r in runs):.0f} MiB")
    if args.dir is None:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
