"""Hubness on the development corpus: k-occurrence skewness at k=10 and same-soundtrack precision@10 (with its
standard error over the queries, and chance), by cosine and re-ranked by CSLS (recsys.index.hubness), through the
same functions `recsys similar` and the neighbour votes use. Only the corpus's own recordings (not the copies under
``_*`` folders) are queries and candidates; labels are the first folder (the soundtrack).

    PYTHONPATH=. python benchmarks/hubness.py --home /tmp/dupes/home --corpus /tmp/dupes/corpus
"""

from __future__ import annotations

import argparse
from pathlib import Path

import faiss
import numpy as np

from recsys.index.ann import load_snapshot
from recsys.index.hubness import HUB_K, hub_search, hub_stats

K = 10


def skewness(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean((x - x.mean()) ** 3) / x.std() ** 3)


def measure(search, x: np.ndarray, labels: np.ndarray) -> dict:
    n = len(x)
    _, rows = search(x, K + 1)
    neighbours = [r[(r >= 0) & (r != q)][:K] for q, r in enumerate(rows)]
    occurrences = np.bincount(np.concatenate(neighbours), minlength=n)
    scores, chance = [], []
    for q, found in enumerate(neighbours):
        relevant = int(np.sum(labels == labels[q])) - 1
        if relevant:
            cap = min(K, relevant)
            scores.append(np.sum(labels[found] == labels[q]) / cap)
            chance.append(min(1.0, K * relevant / (n - 1) / cap))
    s = np.array(scores)
    return {"p10": s.mean(), "se": s.std(ddof=1) / np.sqrt(len(s)), "chance": float(np.mean(chance)),
            "queries": len(s), "skew": skewness(occurrences), "max_occ": int(occurrences.max()), "per_query": s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    args = ap.parse_args()
    lib = load_snapshot(args.home)
    root = str(args.corpus).rstrip("/") + "/"
    rel = [p.removeprefix(root) for p in lib.values("path")]
    keep = [i for i, r in enumerate(rel) if not r.startswith("_")]
    x = np.ascontiguousarray(np.asarray(lib.vectors, dtype=np.float32)[keep])
    labels = np.array([rel[i].split("/")[0] for i in keep])

    def exact(q, k):
        return faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)

    hub = hub_stats(x, exact)
    before, after = measure(exact, x, labels), measure(hub_search(exact, hub), x, labels)
    diff = after["per_query"] - before["per_query"]
    print(f"{len(x)} tracks, {before['queries']} queries, encoder {lib.encoder_id}, CSLS k={HUB_K}\n")
    print("| ranking | precision@10 | +- s.e. | chance | k-occurrence skewness (k=10) | most frequent neighbour |")
    print("|---|---|---|---|---|---|")
    for name, m in (("cosine", before), ("CSLS (index.hubness: csls)", after)):
        print(f"| {name} | {m['p10']:.3f} | {m['se']:.3f} | {m['chance']:.3f} | {m['skew']:.2f} | "
              f"{m['max_occ']} lists |")
    print(f"\npaired difference after - before: {diff.mean():+.3f} +- {diff.std(ddof=1) / np.sqrt(len(diff)):.3f}")


if __name__ == "__main__":
    main()
