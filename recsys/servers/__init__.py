"""Clients of the servers people listen through (Subsonic, MPD), and the one seam for pushing playlists to them.

A pusher is registered by kind in :data:`PUSHERS` as ``"module:attribute"`` of a callable
``push(settings, name, entries, *, dry_run, mode="playlist") -> PushReport`` (``mode="queue"`` only for MPD), imported
only when used. Every pusher only ever creates or replaces a playlist recsys created, never deletes or changes one it
did not, and with ``dry_run`` changes nothing and says what would change.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from recsys.errors import RecsysError


@dataclass(frozen=True)
class PushEntry:
    """One track of a playlist to push, neutral (not the recommender's RankedTrack)."""

    key: str  # the recsys track key
    path: str  # the local path (or the server path) recsys knows for it
    title: str = ""
    artist: str = ""


@dataclass
class PushReport:
    """What a push did (or, with dry_run, would do), rendered by the CLI."""

    server: str  # "subsonic" | "mpd", for people
    target: str  # e.g. the server URL or host:port (never a password)
    name: str  # playlist name
    action: str  # "create" | "replace" | "queue" | "unchanged" | "refused"
    tracks: int  # tracks in the pushed playlist
    missing: list[str]  # keys the server does not know (left out), shown to the user
    dry_run: bool
    detail: str = ""  # one line, e.g. why refused


# kind -> "module:attribute" of its push callable
PUSHERS: dict[str, str] = {
    "mpd": "recsys.servers.mpd_push:push",
}


def pusher(kind: str) -> Callable[..., PushReport]:
    """The push function of ``kind``, imported now; a RecsysError for a kind with no pusher."""
    if kind not in PUSHERS:
        known = ", ".join(sorted(PUSHERS))
        raise RecsysError(f"recsys cannot push a playlist to a {kind} library (it can to: {known})")
    module, _, attribute = PUSHERS[kind].partition(":")
    return getattr(importlib.import_module(module), attribute)
