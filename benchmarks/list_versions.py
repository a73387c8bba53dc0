"""How many `recsys similar -k 10` lists hold two versions of one recording, on the development corpus's copies.

Every track of the embedded home is a query. A list "holds two versions" when two of its tracks are one recording,
or one of them is a version of the query (the truth of ``benchmarks/duplicates_quality.py``: the format twins, the
byte copies and the ``--make-copies`` copies). ``--rule vectors`` is the rule before fingerprints (the same performer
and title, or cosine above 0.995); ``--rule fingerprints`` the shipped one. Each query's wall time is taken; run the
fingerprint rule twice for the cold (nothing cached) and the warm case.

    PYTHONPATH=. python benchmarks/list_versions.py --home /tmp/lists-bench/home --corpus /tmp/dupes/corpus \
        --rule vectors
    PYTHONPATH=. python benchmarks/list_versions.py --home /tmp/lists-bench/home --corpus /tmp/dupes/corpus
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

import recsys.app.similar as similar
import recsys.embedder.fingerprint as fingerprint
import recsys.library.groups as groups
from benchmarks.duplicates_quality import truth
from recsys.app.settings import command_settings
from recsys.index.ann import load_snapshot


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--rule", choices=("vectors", "fingerprints"), default="fingerprints")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--candidate-cos", type=float, default=None,
                    help="compare fingerprints from this cosine instead of DUPLICATE_CANDIDATE_COS (an experiment)")
    args = ap.parse_args()
    if args.candidate_cos is not None:
        groups.DUPLICATE_CANDIDATE_COS = args.candidate_cos
    if args.rule == "vectors":  # the snapshot without fingerprints: the rule falls back to the cosine
        similar.with_fingerprints = lambda settings, lib: lib
    decodes: list[float] = []
    compute = fingerprint.fingerprint_file

    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return compute(*a, **kw)
        finally:
            decodes.append(time.perf_counter() - t0)

    fingerprint.fingerprint_file = timed
    lib = load_snapshot(args.home)
    paths = lib.values("path")
    root = str(args.corpus).rstrip("/") + "/"
    true = truth([p.removeprefix(root) for p in paths], lib.values("content_id"))
    row = {p: i for i, p in enumerate(paths)}
    settings = command_settings(None, str(args.home))
    within = with_query = either = 0
    times = []
    examples = []
    for q, query in enumerate(paths):
        t0 = time.perf_counter()
        result = similar.find_similar(settings, query, k=args.k)
        times.append(time.perf_counter() - t0)
        rows = [row[h.path] for h in result.neighbours]
        pair = any((min(a, b), max(a, b)) in true for a, b in itertools.combinations(rows, 2))
        of_query = any((min(q, r), max(q, r)) in true for r in rows)
        within += pair
        with_query += of_query
        either += pair or of_query
        if (pair or of_query) and len(examples) < 8:
            examples.append(query.removeprefix(root))
    t = np.asarray(times) * 1000
    print(f"{len(paths)} queries, k={args.k}, rule {args.rule} from cosine {groups.DUPLICATE_CANDIDATE_COS}: "
          f"lists holding two versions {within}, "
          f"lists holding a version of the query {with_query}, either {either}")
    print(f"latency ms: median {np.median(t):.0f}, mean {t.mean():.0f}, p95 {np.percentile(t, 95):.0f}, "
          f"max {t.max():.0f}, total {t.sum() / 1000:.0f} s")
    if decodes:
        d = np.asarray(decodes)
        print(f"files fingerprinted: {len(d)}, {d.mean():.2f} s each (median {np.median(d):.2f}), {d.sum():.0f} s")
    print("first queries with two versions:", *examples, sep="\n  ")


if __name__ == "__main__":
    main()
