"""Where `recsys similar PATH` spends its resident memory and time, stage by stage (issue 26 item 5).

Runs the stages of ``recsys.app.similar.find_similar`` for a path query one after the other in this fresh process
and prints, after each, the wall time it took, the resident memory (VmRSS) and the peak of the stage itself (VmHWM,
started over before each stage where the kernel allows: /proc/self/clear_refs). The path lookup of
``recsys.index.lookup.resolve_query`` is split into its two parts: reading the ``path`` column of meta.parquet
(Arrow) and making it a Python list (``LibraryVectors.values``). Each stage runs the library's own code; the
result is checked against ``find_similar``'s. With --streamed, the path lookup is replaced by a candidate fix
measured here (not in recsys): meta.parquet's ``path`` column read one row group at a time and compared in Arrow
(``pyarrow.compute.equal``), so neither the whole column nor a Python list of it is ever held.

    python benchmarks/similar_memory.py HOME PATH [-k 10] [--streamed]

HOME is a home with a snapshot (e.g. the --dir of benchmarks/index_scale.py), PATH a track's path in it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from _memory import peak_mb, reset_peak, status_mb


def streamed_rows(meta: Path, path: str) -> list[int]:
    """The rows whose ``path`` is ``path``, reading meta.parquet's path column one row group at a time."""
    parquet = pq.ParquetFile(meta)
    rows, start = [], 0
    for group in range(parquet.metadata.num_row_groups):
        column = parquet.read_row_group(group, columns=["path"], use_threads=False).column(0)
        rows += [start + i for i in pc.indices_nonzero(pc.equal(column, path)).to_pylist()]
        start += len(column)
    return rows


class Stages:
    """Prints one line a stage: wall s, RSS after (anonymous memory and mapped files apart: the memory-mapped
    snapshot files count as RSS while their pages are touched, but they are the page cache, shared and dropped
    under pressure), the stage's own peak and the process's peak so far."""

    def __init__(self) -> None:
        self.peak = status_mb("VmHWM")
        print(f"{'stage':<50} {'wall s':>7} {'RSS MiB':>8} {'anon':>6} {'file':>6} {'stage peak':>10} "
              f"{'process peak':>12}")
        print(f"{'interpreter start':<50} {'':>7} {status_mb('VmRSS'):8.0f} {status_mb('RssAnon'):6.0f} "
              f"{status_mb('RssFile'):6.0f} {self.peak:10.0f} {self.peak:12.0f}")

    def run(self, name: str, work):
        resettable = reset_peak()
        started = time.perf_counter()
        out = work()
        wall = time.perf_counter() - started
        stage_peak = peak_mb() if resettable else float("nan")
        self.peak = max(self.peak, stage_peak) if resettable else peak_mb()
        print(f"{name:<50} {wall:7.3f} {status_mb('VmRSS'):8.0f} {status_mb('RssAnon'):6.0f} "
              f"{status_mb('RssFile'):6.0f} {stage_peak:10.0f} {self.peak:12.0f}")
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("home", type=Path)
    ap.add_argument("path")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--streamed", action="store_true",
                    help="look the path up row group by row group in Arrow (a candidate fix) instead of resolve_query")
    args = ap.parse_args()
    stages = Stages()

    def imports():
        from recsys.app import settings, similar

        return similar, settings

    similar, app_settings = stages.run("import recsys.app.similar (as the CLI does)", imports)
    from recsys.app.output import with_fingerprints
    from recsys.index.ann import current_snapshot
    from recsys.index.lookup import hit, resolve_query

    settings = stages.run("settings", lambda: app_settings.command_settings(None, str(args.home)))
    lib = stages.run("current_snapshot (open, vectors mmap, index mmap)",
                     lambda: current_snapshot(settings.home_path, settings.index))
    lib = stages.run("with_fingerprints", lambda: with_fingerprints(settings, lib))
    if args.streamed:
        found = stages.run("path lookup by row group (pyarrow.compute)",
                           lambda: streamed_rows(lib.folder / "meta.parquet", args.path))
        assert len(found) == 1, f"{args.path} is on {len(found)} rows"
        row, column = found[0], None
    else:
        column = stages.run("read the path column (Arrow)", lambda: lib.column("path"))
        stages.run("  ... as a Python list (LibraryVectors.values)", lambda: lib.values("path"))
        row = stages.run("resolve_query (rest: match the path)", lambda: resolve_query(lib, args.path))
    kept = stages.run("_nearest (IVF search, re-rank, row groups)",
                      lambda: similar._nearest(settings, lib, row, args.k))
    stages.run("hits", lambda: [hit(lib, i, s) for i, s in kept])
    result = similar.find_similar(settings, args.path, args.k)
    assert [h.key for h in result.neighbours] == [lib.row(i)["key"] for i, _ in kept], "stages differ from find_similar"
    size = f"path column {column.nbytes / 2**20:.0f} MiB in Arrow; " if column is not None else ""
    print(f"rows {len(lib)}; {size}query row {row}; {len(kept)} neighbours, as find_similar's")


if __name__ == "__main__":
    main()
