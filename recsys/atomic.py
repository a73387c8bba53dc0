"""Files written whole or not at all: a reader (or the next run after a kill) sees the old file or the new one.

Everything recsys writes whole that something else reads later goes through here: playlists, checkpoints, the
classifier, the table stamp, the cache index, the current-encoder marker and the activated encoder's copy. (The
training cache's entries are renamed into place unsynced: their CRC is checked when they are reused.) The small files
read back (settings files, ``remembered.json``) are read by :func:`read_regular`, which bounds them.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NAME_MAX = 255  # bytes in one file name on Linux file systems (ext4, btrfs, xfs, tmpfs)
_TEMP_EXTRA = len("..") + 8 + len(".tmp")  # what the temporary name adds to the name: '.', '.', mkstemp's 8, '.tmp'


def clip_name(name: str, limit: int = NAME_MAX) -> str:
    """``name`` cut to at most ``limit`` bytes as the file system stores it, never inside a character: a name that
    fits no file system is an error only when the user chose it."""
    raw = os.fsencode(name)
    return name if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


def _umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; synced and renamed over ``path`` when the block ends without
    an error, removed when it raises (Ctrl-C included).

    The file gets the mode any new file gets (0666 less the umask), not mkstemp's private 0600: a playlist must be
    readable by a music server running as its own user (Navidrome, MPD, Jellyfin), also when it replaces a file.
    """
    path = Path(path)
    # the temporary name must fit NAME_MAX too: a valid 245-byte name must not fail on its temporary one
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{clip_name(path.name, NAME_MAX - _TEMP_EXTRA)}.",
                               suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
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


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; an :class:`OSError` for anything else: a
    FIFO, socket or device (opened without blocking and refused unread: reading one can block forever), a folder
    (IsADirectoryError), a file over ``limit`` bytes (EFBIG), or one that cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file but a pipe, socket or device", str(path))
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than the {limit} bytes recsys reads of it", str(path))
    return b"".join(chunks)
