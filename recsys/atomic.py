"""Files written whole or not at all: a reader (or the next run after a kill) sees the old file or the new one.

Everything recsys writes that something else reads later goes through here: playlists, checkpoints, the classifier,
the table stamp, the cache index, the current-encoder marker.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; synced and renamed over ``path`` when the block ends without
    an error, removed when it raises (Ctrl-C included)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, data: dict) -> None:
    write_bytes_atomic(path, json.dumps(data).encode("utf-8"))
