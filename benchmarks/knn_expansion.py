"""The neighbour-vote expansion of `recsys playlist` at library scale: one batched FAISS search + the votes.

N clustered unit vectors (D=90, the dsp dimension) go into the index `recsys embed` builds above
index.exact_max_tracks (HNSW, M=32, efConstruction=80, efSearch=128: the defaults); then, for E evidence tracks
(rated or often played), ``neighbourhoods`` (one batched search, k+1 each) and ``vote`` (the like-probability of
every track) are timed, median of 3. The index build is reported but is `recsys embed`'s cost, not the playlist's.

    python benchmarks/knn_expansion.py [--n 1000000] [--evidence 50 500 5000] [--k 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import faiss
import numpy as np

from recsys.recommender.neighbours import neighbourhoods, vote


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 500), dim)).astype(np.float32)
    v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=90)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--evidence", type=int, nargs="+", default=[50, 500, 5000])
    a = ap.parse_args()
    vectors = clustered(a.n, a.dim)
    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(a.dim, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(vectors)
    index.hnsw.efSearch = 128
    print(f"HNSW over {a.n} x {a.dim} built in {time.perf_counter() - started:.0f} s "
          f"({faiss.omp_get_max_threads()} threads; recsys embed's cost)")
    rng = np.random.default_rng(1)
    for e in a.evidence:
        rows = rng.choice(a.n, e, replace=False)
        liked = (rng.random(e) < 0.5).astype(np.float64)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            hoods = neighbourhoods(index.search, vectors, rows, a.k)
            t1 = time.perf_counter()
            vote(hoods, rows, liked, np.ones(e), a.n)
            times.append((t1 - t0, time.perf_counter() - t1))
        search, votes = (statistics.median(x) for x in zip(*times, strict=True))
        print(f"{e} evidence tracks, k={a.k}: search {search * 1000:.0f} ms + votes {votes * 1000:.0f} ms "
              f"= {(search + votes) * 1000:.0f} ms (median of 3)")


if __name__ == "__main__":
    main()
