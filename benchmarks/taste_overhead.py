"""What `load_taste` costs beyond reading the library: the snapshot's open, the embedded check and the write guard's
inputs (issue 26 item 3). The library is read once; `load_taste` then runs ``--repeat`` times with that read handed
back, each run opening the snapshot afresh, so only the rest is timed (CPU and wall, one line per run).

    PYTHONPATH=CHECKOUT python benchmarks/taste_overhead.py --home HOME --db clementine.db --repeat 5

Run it for two checkouts in the same minutes to compare them; figures go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time

import recsys.app.taste as taste
from recsys.app.settings import command_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = command_settings(None, args.home, db=args.db)
    read = taste.load_taste_library(settings.library.db, settings.library.folders, settings=settings)
    taste.load_taste_library = lambda *_, **__: read  # the library read is not what is measured
    for _ in range(args.repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        taste.load_taste(settings)
        print(f"load_taste beyond the library read: {time.process_time() - cpu:.2f} s CPU, "
              f"{time.perf_counter() - wall:.2f} s wall", flush=True)


if __name__ == "__main__":
    main()
