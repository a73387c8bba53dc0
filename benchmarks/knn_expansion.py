"""The neighbour-vote expansion of `recsys playlist` at library scale: one batched FAISS search + the votes.

N clustered unit vectors (D=90, the dsp dimension) go into the index `recsys embed` builds above
index.exact_max_tracks (HNSW, M=32, efConstruction=80, efSearch=128: the defaults); then, for E evidence tracks
(rated or often played), ``neighbourhoods`` (one batched search, k+1 each) and ``vote`` (the like-probability of
every track) are timed, median of 3. The index build is reported but is `recsys embed`'s cost, not the playlist's.
The album and artist votes are timed too: ``library_groups`` (naming the albums and artists around the evidence,
from one Track per row: albums of 12 tracks in their own folder, artists of 8 albums) and ``vote`` with them.
``--flat`` searches exactly instead (no 10-minute HNSW build; the search column is then the exact search's).

    python benchmarks/knn_expansion.py [--n 1000000] [--evidence 50 500 5000] [--k 20] [--flat]
"""

from __future__ import annotations

import argparse
import statistics
import time

import faiss
import numpy as np

from recsys.library.track import Track
from recsys.recommender.neighbours import exact_search, library_groups, neighbourhoods, vote


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
    ap.add_argument("--flat", action="store_true", help="exact search, no HNSW build")
    a = ap.parse_args()
    vectors = clustered(a.n, a.dim)
    started = time.perf_counter()
    if a.flat:
        search = exact_search(vectors)
    else:
        index = faiss.IndexHNSWFlat(a.dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(vectors)
        index.hnsw.efSearch = 128
        search = index.search
        print(f"HNSW over {a.n} x {a.dim} built in {time.perf_counter() - started:.0f} s "
              f"({faiss.omp_get_max_threads()} threads; recsys embed's cost)")
    tracks = [Track(path=f"/music/artist {i // 96}/album {i // 12}/{i}.flac", album=f"album {i // 12}",
                    artist=f"artist {i // 96}") for i in range(a.n)]
    keys = [t.key for t in tracks]
    row_of = {k: i for i, k in enumerate(keys)}
    rng = np.random.default_rng(1)
    for e in a.evidence:
        rows = rng.choice(a.n, e, replace=False)
        liked = (rng.random(e) < 0.5).astype(np.float64)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            hoods = neighbourhoods(search, vectors, rows, a.k)
            t1 = time.perf_counter()
            groups = library_groups(keys, row_of, tracks, "/music", rows)
            t2 = time.perf_counter()
            vote(hoods, rows, liked, np.ones(e), a.n, groups=groups, album_vote=1.0, artist_vote=0.5)
            times.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
        found, named, votes = (statistics.median(x) for x in zip(*times, strict=True))
        print(f"{e} evidence tracks, k={a.k}: search {found * 1000:.0f} ms + album/artist naming "
              f"{named * 1000:.0f} ms + votes {votes * 1000:.0f} ms = {(found + named + votes) * 1000:.0f} ms "
              "(median of 3)")


if __name__ == "__main__":
    main()
