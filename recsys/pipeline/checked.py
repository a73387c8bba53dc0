"""Which files were seen holding their row's bytes: change detection that survives preserved timestamps.

Size and mtime say "unchanged" for a file rewritten with its timestamps kept (`rsync -t`, `cp -p`, a tag editor that
restores the mtime). Its inode change time (ctime) moves all the same: no program can set it, every write, `utime`,
rename into place or `chmod` sets it to now. So `recsys embed` records, per track, the hash of (key, size, mtime,
ctime, the row's content id) it last saw holding the row's bytes, in ``<home>/content-checked.npy`` (8 bytes a
track). A track whose size and mtime match its row but whose identity is not in the record gets its content id read
again (192 KiB, ``recsys.library.content_id``) and compared with the row's: the same, and it is recorded; another,
and it is embedded again (its tags with it). Reading every content id on every run was measured too slow for a no-op
run at 100,000 tracks (benchmarks/RESULTS.md); the ctime costs nothing, as the plan's ``stat`` already holds it.

A file that failed to decode is recorded the same way (with ``FAILED`` for a content id): rewritten since, with its
timestamps kept, it is tried again rather than skipped as a known failure.

Without a record (a home from before it, or the file removed), the tracks are trusted as they are and recorded:
`recsys embed --recheck` reads every content id. Not covered: a file system without a real ctime (FAT, exFAT, some
network shares report the mtime) hides a rewrite that keeps size and mtime; `--recheck` finds it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from recsys.atomic import write_bytes_atomic

RECORD = "content-checked.npy"
FAILED = "failed"  # the content id in the identity of a file whose decoding failed (no content id is stored for it)


def identity(key: str, size: int, mtime_ns: int, ctime_ns: int, content_id: str) -> int:
    """The hash of what a check confirmed: this track's file, with this size, mtime and ctime, holds the bytes of
    ``content_id``."""
    text = f"{key}\0{size}\0{mtime_ns}\0{ctime_ns}\0{content_id}"
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


def read_checked(home: Path) -> set[int] | None:
    """The identities recorded, or None when there is no readable record (every track is then trusted as it is)."""
    try:
        with open(home / RECORD, "rb") as f:
            values = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if values.dtype != np.uint64 or values.ndim != 1:
        return None
    return set(values.tolist())


def write_checked(home: Path, identities: Iterable[int]) -> None:
    """Record ``identities`` (replacing the record); a record that cannot be written only costs checks next run."""
    buffer = io.BytesIO()
    np.save(buffer, np.array(sorted(set(identities)), dtype=np.uint64), allow_pickle=False)
    try:
        write_bytes_atomic(home / RECORD, buffer.getvalue())
    except OSError:
        pass
