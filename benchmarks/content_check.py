"""What it costs to check that files whose size and mtime match their row still hold the row's bytes (issue 21).

A file rewritten with its size and mtime kept (`rsync -t`, `cp -p`, a tag editor restoring the mtime) looks unchanged
to a plan that compares size and mtime. Two ways to catch it, timed over --tracks files:

- ``stat``: the plan's own ``os.stat`` per track (what a no-op plan pays today), for reference;
- ``ctime record``: ``stat`` plus the identity hash (key, size, mtime, ctime, content id) looked up in the record
  (``recsys.pipeline.checked``), the record read and written once: what `recsys embed` pays per run;
- ``content id, every file``: reading the content id (3 x 64 KiB, hashed) of every file: what checking always would
  pay, and what `recsys embed --recheck` pays.

The files are sparse (--size-mb apparent size, a few bytes written), so the page cache holds nothing of them and no
disk is read: the content-id figure is the floor (system calls, zero-filled pages, hashing) that a warm cache gives.
A cold disk adds three random reads per file on top.

    python benchmarks/content_check.py [--tracks 100000] [--size-mb 6] [--dir /tmp/recsys-bench-content-check]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from recsys.library.content_id import content_id
from recsys.pipeline.checked import identity, read_checked, write_checked


def build(folder: Path, n: int, size: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        sub = folder / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(exist_ok=True)
        path = sub / f"{i:06d}.mp3"
        with open(path, "wb") as f:
            f.write(i.to_bytes(8, "little"))
            f.truncate(size)
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--size-mb", type=float, default=6.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/recsys-bench-content-check"))
    a = parser.parse_args()
    shutil.rmtree(a.dir, ignore_errors=True)
    paths = build(a.dir / "music", a.tracks, int(a.size_mb * 2**20))
    home = a.dir / "home"
    home.mkdir()
    print(f"{a.tracks} files of {a.size_mb:g} MB (sparse); load average {os.getloadavg()[0]:.1f}")

    started = time.perf_counter()
    stats = [os.stat(p) for p in paths]
    t_stat = time.perf_counter() - started

    cids = {p: f"{i:024x}" for i, p in enumerate(paths)}  # the rows' content ids (any text: only hashed here)
    write_checked(home, [identity(p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, cids[p])
                         for p, st in zip(paths, stats, strict=True)])
    started = time.perf_counter()
    checked = read_checked(home)
    confirmed, unconfirmed = [], 0
    for p in paths:
        st = os.stat(p)
        h = identity(p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, cids[p])
        if h in checked:
            confirmed.append(h)
        else:
            unconfirmed += 1
    write_checked(home, confirmed)
    t_record = time.perf_counter() - started
    assert unconfirmed == 0

    started = time.perf_counter()
    for p, st in zip(paths, stats, strict=True):
        content_id(p, st.st_size)
    t_cid = time.perf_counter() - started

    size_kb = (home / "content-checked.npy").stat().st_size / 1024
    print("| check | seconds | per track |")
    print("| --- | ---: | ---: |")
    for name, t in (("stat (reference)", t_stat),
                    ("ctime record (stat, hash, lookup, record read + written)", t_record),
                    ("content id, every file", t_cid)):
        print(f"| {name} | {t:.2f} | {t / a.tracks * 1e6:.1f} us |")
    print(f"record: {size_kb:.0f} KiB")
    shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
