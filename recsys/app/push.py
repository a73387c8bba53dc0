"""`--push` (and `--dry-run`) of `recsys playlist`, `radio`, `path` and `similar --out`: the tracks a command wrote,
sent as a playlist to the server the library comes from, through that source's pusher
(:func:`recsys.servers.pusher`). Not a use case of its own: the commands call it after writing their file."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.servers import PushEntry, PushReport, pusher


class _Written(Protocol):
    key: str
    path: str
    title: str
    artist: str


def push_written(settings: Settings, name: str, tracks: Iterable[_Written], *, dry_run: bool,
                 mode: str = "playlist") -> PushReport:
    """Push the written entries as the playlist ``name`` to the library's server (``dry_run``: only say what would
    change). A library with no server to push to (music folders, a desktop player's database) is an error line."""
    from recsys.library.sources import configured_db_kind

    kind = configured_db_kind(settings)
    if kind is None:
        raise RecsysError("--push sends the playlist to the server the library comes from, and this library is "
                          "music folders: give the server (--subsonic URL) or leave out --push")
    entries = [PushEntry(t.key, t.path, t.title or "", t.artist or "") for t in tracks]
    return pusher(kind)(settings, name, entries, dry_run=dry_run, mode=mode)


def describe(report: PushReport) -> str:
    """The one line the CLI shows for a push."""
    would = "would " if report.dry_run else ""
    verb = {"create": f"{would}create", "replace": f"{would}replace", "queue": f"{would}queue",
            "unchanged": "left unchanged", "refused": "refused"}.get(report.action, report.action)
    line = f"{report.server}: {verb} playlist {report.name!r} on {report.target}: {report.tracks} tracks"
    if report.missing:
        line += f"; {len(report.missing)} not on the server, left out (first: {report.missing[0]})"
    if report.detail:
        line += f" ({report.detail})"
    return line + (" -- dry run, nothing changed" if report.dry_run else "")
