"""The library map at scale: projection time and how many neighbourhoods it keeps, page size, and a real headless
Chromium's time to open and draw the page.

    PYTHONPATH=. .venv/bin/python benchmarks/map_layout.py --tracks 20000 100000

Synthetic vectors with structure (40 groups on a 6-dimensional shape, mapped into 200 dimensions plus noise, as a
real encoder's vectors lie near a low-dimensional shape); kNN search as the index does it (exact up to 30,000
tracks, HNSW M=32 above, efSearch 32 for the layout's graph). "kept" is the share of each track's 10 nearest tracks
that are among its 10 nearest on the map (1.0 = all, 10/N = chance), over 2,000 sampled tracks.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from recsys.viz.map import map_html, write_map
from recsys.viz.projection import neighbour_layout, neighbourhood_kept, pca


def vectors(n: int, dim: int = 200, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(40, 6))[rng.integers(0, 40, n)] * 3 + rng.normal(size=(n, 6))
    v = z @ rng.normal(size=(6, dim)) + rng.normal(scale=0.3, size=(n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, nargs="+", default=[20000, 100000])
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args()
    browser = shutil.which("chromium")
    print("| tracks | PCA s | PCA kept | layout s (kNN graph s) | layout kept | chance | page MB | Chromium s |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.tracks:
        v = vectors(n)
        if n > 30000:
            index = faiss.IndexHNSWFlat(v.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.add(v)
            index.hnsw.efSearch = 32
            search = index.search
        else:
            def search(q, k, v=v):
                return faiss.knn(q, v, k, metric=faiss.METRIC_INNER_PRODUCT)
        t = time.perf_counter()
        p = pca(v)
        t_pca = time.perf_counter() - t
        t = time.perf_counter()
        search(v, 11)
        t_knn = time.perf_counter() - t
        t = time.perf_counter()
        q = neighbour_layout(v, search, epochs=args.epochs)
        t_layout = time.perf_counter() - t
        kept_p, kept_q = neighbourhood_kept(v, p, search), neighbourhood_kept(v, q, search)
        rng = np.random.default_rng(0)
        ratings = [None if x < 0.7 else float(x) for x in rng.random(n)]
        page = map_html(q, [f"Artist {i % 977} - Title {i}" for i in range(n)], ratings,
                        [f"genre {i % 17}" for i in range(n)])
        with tempfile.TemporaryDirectory() as tmp:
            out = write_map(Path(tmp) / "map.html", page)
            t = time.perf_counter()
            if browser:
                dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                                      "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=300).stdout
                assert f'data-drawn="{n}"' in dom, dom[-500:]
            t_browser = time.perf_counter() - t if browser else float("nan")
        print(f"| {n:,} | {t_pca:.2f} | {kept_p:.3f} | {t_layout:.1f} ({t_knn:.1f}) | {kept_q:.3f} | {10 / n:.4f} | "
              f"{len(page.encode()) / 1e6:.1f} | {t_browser:.1f} |")


if __name__ == "__main__":
    main()
