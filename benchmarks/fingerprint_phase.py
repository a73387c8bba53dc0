"""`recsys embed`'s fingerprint phase alone, two checkouts side by side (alternating rounds, a fresh process each, on
its own copy of an embedded home with the fingerprint cache emptied): wall, and CPU of the process and its workers.

    PYTHONPATH=. python benchmarks/fingerprint_phase.py --home <embedded home> --baseline <other checkout> [--rounds 2]

A copy ``<home>-base`` / ``<home>-this`` of the home is made once next to it; the home itself is not written.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def phase(home: Path, workers: int) -> None:
    """In the child: empty the cache and run the phase."""
    from recsys.app.settings import command_settings
    from recsys.embedder.fingerprint import CACHE_DIR
    from recsys.pipeline.fingerprints import prepare_fingerprints

    settings = command_settings(None, str(home))
    shutil.rmtree(home / CACHE_DIR, ignore_errors=True)
    done = prepare_fingerprints(home, settings.index, workers, None, settings.audio.decode_timeout_s)
    print(f"fingerprinted {done.fingerprinted}, {len(done.failures)} without one")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--baseline", type=Path, help="the other checkout (required)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        phase(args.home, args.workers)
        return
    if args.baseline is None:
        ap.error("--baseline is required")
    codes = {"base": args.baseline.resolve(), "this": Path(__file__).resolve().parents[1]}
    for name in codes:
        if not Path(f"{args.home}-{name}").exists():
            shutil.copytree(args.home, f"{args.home}-{name}", symlinks=True)
    best: dict[str, tuple[float, float]] = {}
    for round_ in range(args.rounds):
        for name in list(codes) if round_ % 2 == 0 else list(codes)[::-1]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--child", "--home", f"{args.home}-{name}", "--workers",
                                  str(args.workers)], env={**os.environ, "PYTHONPATH": str(codes[name])},
                                 capture_output=True, text=True, check=True)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            best[name] = (min(wall, best.get(name, (wall, cpu))[0]), min(cpu, best.get(name, (wall, cpu))[1]))
            print(f"round {round_} {name}: wall {wall:.1f} s, CPU {cpu:.1f} s, load {os.getloadavg()[0]:.1f}; "
                  f"{out.stdout.strip()}", flush=True)
    (bw, bc), (tw, tc) = best["base"], best["this"]
    print(f"best: base wall {bw:.1f} s CPU {bc:.1f} s; this wall {tw:.1f} s CPU {tc:.1f} s; "
          f"base/this: wall {bw / tw:.2f}x, CPU {bc / tc:.2f}x")


if __name__ == "__main__":
    main()
