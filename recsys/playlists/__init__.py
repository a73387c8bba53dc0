"""Playlist files, one writer per format, registered by name in :data:`WRITERS`: ``xspf`` (default) and ``m3u8``.

A writer is a module with ``encode(tracks, title, creator) -> bytes``; :func:`write_playlist` runs the output guards
and the atomic write of :mod:`recsys.playlists.output` for every format alike. A new format is one module and one
line in :data:`WRITERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from recsys.playlists import m3u8, xspf
from recsys.playlists.output import Inputs, PlaylistWriteError, write_file
from recsys.recommender.rank import RankedTrack

Encoder = Callable[[Sequence[RankedTrack], str, str], bytes]

WRITERS: dict[str, Encoder] = {
    "xspf": xspf.encode,
    "m3u8": m3u8.encode,
}
FORMATS = tuple(WRITERS)

__all__ = ["FORMATS", "WRITERS", "Inputs", "PlaylistWriteError", "write_playlist"]


def write_playlist(path: Path, tracks: Sequence[RankedTrack], title: str, fmt: str = "xspf", overwrite: bool = False,
                   creator: str = "recsys", inputs: Inputs | None = None) -> Path:
    """Write ``tracks`` as a playlist file at ``path`` (folders created) and return its absolute path; ``inputs``
    are never written (see :func:`recsys.playlists.output.check_output`)."""
    if fmt not in WRITERS:
        raise PlaylistWriteError(f"unknown playlist format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return write_file(path, WRITERS[fmt](tracks, title, creator), inputs, overwrite)
