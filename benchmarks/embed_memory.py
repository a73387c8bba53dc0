"""Peak memory of `recsys embed` does not grow with the library (issue 5 goal: 2,000 tracks within 150 MB of 200).

`recsys embed` runs in a fresh process on a fresh home over the first N tracks of one synthetic library, while this
script samples the whole process tree (the main process and its decode workers) every 0.1 s from /proc: the sum of
RSS (shared libraries counted once per process, as `top` would add them up) and the sum of PSS (shared pages split
between the processes sharing them: what the tree really costs). Every track is a distinct file (its own samples), so
nothing is reused by content id and every one is decoded.

    python benchmarks/embed_memory.py [--sizes 200 2000] [--seconds 10] [--workers 0] [--dir /tmp/recsys-mem-bench]
                                      [--encoder auto] [--formats wav flac ...]

The main process (planning, encoding, table writes, the snapshot) and the decode workers are also reported apart:
their peaks, each the largest the process or the workers together reached at one sample.
``--formats`` limits the files to some formats (every one by default): FLAC alone writes a large library in minutes
where the lossy encoders take about a second a file on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recsys.synth.audio import FORMATS, STYLES, synth_track, write_audio
from recsys.synth.player_db import SynthSong, write_clementine_db

SR = 22050
DISTINCT_SOURCES = 40


def build(folder: Path, n: int, seconds: float, formats: list[str] | None = None) -> list[Path]:
    """n distinct tracks cycling through ``formats`` (every one by default): 40 synthesised sources, each copy at its
    own gain."""
    folder.mkdir(parents=True, exist_ok=True)
    formats = list(formats or FORMATS)
    sources: dict[int, np.ndarray] = {}
    paths = []
    for i in range(n):
        fmt = formats[i % len(formats)]
        path = folder / f"{i:05d}.{FORMATS[fmt]}"
        if not path.exists():
            base = i % DISTINCT_SOURCES
            if base not in sources:
                sources[base] = synth_track(STYLES[base % len(STYLES)], seconds, sample_rate=SR, seed=base)
            tmp = path.with_name(f".partial-{path.name}")
            write_audio(tmp, sources[base] * np.float32(1.0 - i * 1e-4), SR, fmt)
            os.replace(tmp, path)
        paths.append(path)
    return paths


def _tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB of one process; (0, 0) when it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def measure(paths: list[Path], workdir: Path, workers: int, encoder: str = "auto") -> dict:
    db = workdir / f"clementine-{len(paths)}.db"
    write_clementine_db(db, [SynthSong(path=str(p), title=p.stem, artist="bench") for p in paths])
    home = workdir / f"home-{len(paths)}"
    shutil.rmtree(home, ignore_errors=True)
    command = [sys.executable, "-m", "recsys.cli", "--home", str(home), "embed", "--db", str(db), "-q",
               "--workers", str(workers), "--encoder", encoder]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = peak_procs = main_rss = main_pss = workers_rss = workers_pss = 0
    while proc.poll() is None:
        pids = _tree(proc.pid)
        totals = [_memory_kb(p) for p in pids]
        peak_rss = max(peak_rss, sum(r for r, _ in totals))
        peak_pss = max(peak_pss, sum(p for _, p in totals))
        main_rss, main_pss = max(main_rss, totals[0][0]), max(main_pss, totals[0][1])
        workers_rss = max(workers_rss, sum(r for r, _ in totals[1:]))
        workers_pss = max(workers_pss, sum(p for _, p in totals[1:]))
        peak_procs = max(peak_procs, len(pids))
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"recsys embed failed: {err.strip()}")
    summary = next((line for line in out.splitlines() if line.startswith("embedded ")), "")
    return {"tracks": len(paths), "seconds": time.perf_counter() - started, "rss_mb": peak_rss / 1024,
            "pss_mb": peak_pss / 1024, "processes": peak_procs, "summary": summary, "main_rss_mb": main_rss / 1024,
            "main_pss_mb": main_pss / 1024, "workers_rss_mb": workers_rss / 1024, "workers_pss_mb": workers_pss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each synthetic track")
    ap.add_argument("--workers", type=int, default=0, help="decode processes (0: one per core, as by default)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-mem-bench")
    ap.add_argument("--encoder", default="auto", help="recsys embed --encoder (auto: musicnn on a fresh home)")
    ap.add_argument("--formats", nargs="+", choices=sorted(FORMATS), help="file formats to cycle through (all)")
    args = ap.parse_args()
    started = time.perf_counter()
    paths = build(args.dir / "music", max(args.sizes), args.seconds, args.formats)
    print(f"library: {len(paths)} distinct {args.seconds:g} s tracks in {args.dir / 'music'} "
          f"({time.perf_counter() - started:.0f} s to write)")
    results = []
    for n in sorted(args.sizes):
        results.append(r := measure(paths[:n], args.dir, args.workers, args.encoder))
        print(f"{n} tracks done: {r}", flush=True)
    print(f"{'tracks':>7} {'peak RSS sum':>13} {'peak PSS sum':>13} {'main RSS':>9} {'main PSS':>9} "
          f"{'workers RSS':>12} {'workers PSS':>12} {'processes':>10} {'wall':>7}")
    for r in results:
        print(f"{r['tracks']:>7} {r['rss_mb']:>10.0f} MB {r['pss_mb']:>10.0f} MB {r['main_rss_mb']:>6.0f} MB "
              f"{r['main_pss_mb']:>6.0f} MB {r['workers_rss_mb']:>9.0f} MB {r['workers_pss_mb']:>9.0f} MB "
              f"{r['processes']:>10} {r['seconds']:>6.1f}s   {r['summary']}")
    growth = results[-1]["pss_mb"] - results[0]["pss_mb"]
    print(f"growth {results[0]['tracks']} -> {results[-1]['tracks']} tracks: PSS {growth:+.0f} MB, "
          f"RSS {results[-1]['rss_mb'] - results[0]['rss_mb']:+.0f} MB (goal: within 150 MB)")


if __name__ == "__main__":
    main()
