"""Content ids: recognise a moved, renamed or copied file without decoding it again (DESIGN.md, Track key)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from recsys.library import remote
from recsys.library.track import segment_suffix
from recsys.library.uri import is_remote

SAMPLE_BYTES = 64 * 1024


def content_id(path: str | Path, size: int | None = None) -> str:
    """Hash of the file size and three 64 KiB samples (start, middle, end).

    Reading 192 KiB instead of the whole file keeps this cheap on a large library; the size and the end sample make
    accidental collisions between different recordings practically impossible. Raises OSError if unreadable.
    """
    if is_remote(str(path)):  # a server's file: the same three samples, fetched by Range requests
        with remote.open_remote(str(path)) as f:
            cid = _sampled(f, f.size if size is None else size)
            if f.broken is not None:
                raise f.broken
            return cid
    with open(path, "rb") as f:
        return _sampled(f, os.fstat(f.fileno()).st_size if size is None else size)


def _sampled(f: BinaryIO, size: int) -> str:
    digest = hashlib.blake2b(str(size).encode(), digest_size=12)
    for offset in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
        f.seek(offset)
        digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def track_content_id(path: str | Path, size: int, start_s: float = 0.0, segment: bool = False) -> str:
    """The content id of one track: tracks cut from one file (CUE) share the file's bytes, the start keeps them
    apart."""
    cid = content_id(path, size)
    return cid + segment_suffix(start_s) if segment else cid
