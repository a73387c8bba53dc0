"""A playlist pushed to MPD: saved as a stored playlist (``mode="playlist"``) or appended to the queue (``"queue"``).

MPD's stored playlists carry no owner or comment, so recsys keeps the names of those it made, per server, in
``<home>/mpd_playlists.json``: a stored playlist is created when none has the name, replaced only when recsys made it
(and left as it is when it already holds these tracks), and a playlist recsys did not make is never touched (the
push is refused with a line naming it). The queue is only ever appended to: what the user queued stays, in its
order. A track MPD's database does not list (or a file outside MPD's music folder) is left out and reported. With
``dry_run`` nothing is sent that changes MPD or the home.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from recsys.atomic import write_json_atomic
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.servers import PushEntry, PushReport
from recsys.servers.mpd import connect, is_mpd, music_directory, parse_address, song_uri

RECORD = "mpd_playlists.json"
MODES = ("playlist", "queue")


def made_by_recsys(home: Path, server: str) -> list[str]:
    """The stored playlists recsys made on ``server`` (its address as ``library.db`` holds it)."""
    try:
        data = json.loads((home / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = data.get(server) if isinstance(data, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _record(home: Path, server: str, name: str) -> None:
    try:
        data = json.loads((home / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    data[server] = sorted({*made_by_recsys(home, server), name})
    home.mkdir(parents=True, exist_ok=True)
    write_json_atomic(home / RECORD, data)


def push(settings: Settings, name: str, entries: Sequence[PushEntry], *, dry_run: bool,
         mode: str = "playlist") -> PushReport:
    """Save ``entries`` as MPD's stored playlist ``name`` (``mode="playlist"``) or append them to MPD's queue
    (``"queue"``), on the MPD the library is read from (``--mpd``)."""
    if mode not in MODES:
        raise RecsysError(f"MPD takes a playlist as a stored playlist or into the queue, not '{mode}'")
    if not is_mpd(settings.library.db):
        raise RecsysError("pushing a playlist to MPD needs the library read from MPD: give --mpd HOST[:PORT]")
    if mode == "playlist" and (not name.strip() or any(ch in name for ch in "/\n\r")):
        raise RecsysError(f"'{name}' cannot name an MPD stored playlist (no '/', no line break, not empty): give "
                          "another --name")
    address = parse_address(str(settings.library.db))
    report = PushReport("mpd", str(address), name, mode if mode == "queue" else "create", 0, [], dry_run)
    with connect(address) as client:
        music_dir = music_directory(client, address, settings.mpd.music_directory)
        uris: list[str] = []
        for entry in entries:
            uri = song_uri(entry.path, music_dir)
            if uri is None or not client.find("file", uri):
                report.missing.append(entry.key)
            else:
                uris.append(uri)
        report.tracks = len(uris)
        if not uris:
            report.action = "refused"
            report.detail = f"MPD at {address} lists none of the {len(entries)} tracks: nothing to push"
            return report
        if mode == "queue":
            before = int(client.status().get("playlistlength", 0))
            report.detail = f"appended after the {before} entries queued (none removed)"
            if not dry_run:
                _send(client, "add", uris)
            return report
        existing = {p.get("playlist") for p in client.listplaylists()}
        server = address.url
        if name in existing and name not in made_by_recsys(settings.home_path, server):
            report.action = "refused"
            report.detail = (f"MPD at {address} has a stored playlist '{name}' that recsys did not make: it is left "
                             "alone; push under another --name")
            return report
        if name in existing:
            report.action = "unchanged" if client.listplaylist(name) == uris else "replace"
        if dry_run or report.action == "unchanged":
            return report
        if report.action == "replace":
            client.playlistclear(name)
        _send(client, "playlistadd", uris, name)
        _record(settings.home_path, server, name)
    return report


def _send(client, command: str, uris: Sequence[str], *first: str) -> None:
    """One command per track, sent as one list (one round trip, and MPD applies it whole or stops at the first
    failure)."""
    client.command_list_ok_begin()
    for uri in uris:
        getattr(client, command)(*first, uri)
    client.command_list_end()
