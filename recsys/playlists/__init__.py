"""Playlist files, one writer per format, registered by name in :data:`WRITERS` (``recsys.choices.PLAYLIST_WRITERS``):
``xspf`` (default) and ``m3u8``.

A writer is a module with ``encode(tracks, title, creator) -> bytes``, ``tracks`` the neutral :class:`PlaylistEntry`
(whatever chose them); :func:`write_playlist` runs the output guards and the atomic write of
:mod:`recsys.playlists.output` for every format alike. A new format is one module and one line in :data:`WRITERS`,
which the settings and the CLI's ``--format`` read: it is imported only when chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from recsys.choices import PLAYLIST_WRITERS as WRITERS
from recsys.choices import load
from recsys.guard import AnyOf
from recsys.playlists.output import Inputs, PlaylistEntry, PlaylistWriteError, write_file

Encoder = Callable[[Sequence[PlaylistEntry], str, str], bytes]

__all__ = ["WRITERS", "AnyOf", "Inputs", "PlaylistEntry", "PlaylistWriteError", "write_playlist"]


def write_playlist(path: Path, tracks: Sequence[PlaylistEntry], title: str, fmt: str = "xspf", overwrite: bool = False,
                   creator: str = "recsys", inputs: Inputs | None = None) -> Path:
    """Write ``tracks`` as a playlist file at ``path`` (folders created) and return its absolute path; ``inputs``
    are never written (see :func:`recsys.playlists.output.check_output`)."""
    if fmt not in WRITERS:
        raise PlaylistWriteError(f"unknown playlist format {fmt!r}: choose one of {', '.join(WRITERS)}")
    encode: Encoder = load(WRITERS[fmt])
    return write_file(path, encode(tracks, title, creator), inputs, overwrite)
