"""Clients of the servers people listen through (Subsonic API servers, MPD), and the one seam for pushing a
playlist back to them: :class:`PushEntry` in, :class:`PushReport` out, a pusher per kind in :data:`PUSHERS`
(imported only when used)."""

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


# kind -> "module:attribute" of a callable push(settings, name, entries, *, dry_run, mode="playlist") -> PushReport
PUSHERS: dict[str, str] = {
    "mpd": "recsys.servers.mpd_push:push",
    "subsonic": "recsys.servers.subsonic_push:push",
}


def pusher(kind: str) -> Callable[..., PushReport]:
    """The push function of the library source ``kind``; a RecsysError for a kind with no pusher."""
    if kind not in PUSHERS:
        raise RecsysError(f"--push sends the playlist to the server the library comes from, and a {kind} library "
                          f"has none: push works for {', '.join(sorted(PUSHERS))} libraries; write the file and "
                          "open it in your player instead")
    module, _, attribute = PUSHERS[kind].partition(":")
    return getattr(importlib.import_module(module), attribute)
