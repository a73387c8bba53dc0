"""`--push` for a Subsonic library: the playlist created, or replaced by name, on the server the library comes from,
owned by the user recsys reads (createPlaylist, createPlaylist with playlistId to replace its songs).

**Only recsys's own playlists are ever changed.** recsys marks what it creates twice: the playlist's comment
(:data:`MARK`) and a record in the home (``<home>/pushed-playlists.json``: server, user, name -> playlist id).
A playlist of that name that carries neither was not made by recsys: the push is refused with a line naming it, and
nothing is changed; recsys never deletes a playlist. ``dry_run`` reads the server and says what would change,
writing nothing anywhere.

**Which songs**: a track read over HTTP carries its song id in its location; a local file (``subsonic.path_map``)
is found by its path as the server lists it (the path_map backwards). Tracks the server does not know (another
library's files) are left out and named in the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.atomic import write_json_atomic
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.library import remote
from recsys.servers import PushEntry, PushReport
from recsys.servers.subsonic import SubsonicClient, read_password

MARK = "made by recsys"  # the comment of every playlist recsys creates
RECORD = "pushed-playlists.json"
KIND = "subsonic"


def push(settings: Settings, name: str, entries: Sequence[PushEntry], *, dry_run: bool,
         mode: str = "playlist") -> PushReport:
    """Create or replace the playlist ``name`` on the library's Subsonic server with ``entries`` (in order)."""
    if mode != "playlist":
        raise RecsysError(f"a Subsonic server takes playlists, not a {mode}: leave out --queue")
    url, user = settings.library.subsonic, settings.subsonic.user
    if not url or not user:
        raise RecsysError("--push needs the Subsonic server the library comes from: give --subsonic URL and "
                          "--subsonic-user NAME")
    client = SubsonicClient(url, user, read_password(settings.subsonic.password_file), settings.subsonic.timeout_s)
    report = PushReport(KIND, f"{client.url} (user {user})", name, "create", 0, [], dry_run)
    songs = _song_ids(client, entries, settings.subsonic.mapping(), report.missing)
    report.tracks = len(songs)
    if not songs:
        report.action, report.detail = "refused", "none of the tracks is on the server: nothing to push"
        return report
    home = settings.home_path
    record = _read_record(home)
    ours = record.get(_record_key(client), {})
    same_name = [p for p in client.playlists() if p.get("name") == name and p.get("owner", user) == user]
    mine = [p for p in same_name if str(p.get("id")) == ours.get(name) or str(p.get("comment") or "").startswith(MARK)]
    if same_name and not mine:
        report.action = "refused"
        report.detail = (f"the playlist {name!r} on {client.url} was not made by recsys (no {MARK!r} comment, not in "
                         f"{home / RECORD}): recsys changes only its own; choose another name (--name)")
        return report
    if mine:
        target = mine[0]
        current = [str(e.get("id")) for e in client.playlist(str(target["id"])).get("entry") or []]
        report.action = "unchanged" if current == songs else "replace"
        report.detail = f"{len(current)} tracks now"
        if report.action == "replace" and not dry_run:
            client.create_playlist(name, songs, replace_id=str(target["id"]))
            if not str(target.get("comment") or "").startswith(MARK):
                client.describe_playlist(str(target["id"]), MARK)
        playlist_id = str(target["id"])
    else:
        if dry_run:
            return report
        before = {str(p.get("id")) for p in client.playlists()}
        playlist_id = client.create_playlist(name, songs) or _new_id(client, name, user, before)
        client.describe_playlist(playlist_id, MARK)
    if not dry_run and ours.get(name) != playlist_id and home.is_dir():
        record.setdefault(_record_key(client), {})[name] = playlist_id
        write_json_atomic(home / RECORD, record)
    return report


def _song_ids(client: SubsonicClient, entries: Sequence[PushEntry], mapping: dict[str, str],
              missing: list[str]) -> list[str]:
    """The server's song ids of ``entries``, in order, once each; the keys it does not know go to ``missing``."""
    needs_paths = any(remote.song_id(e.key, client.url) is None for e in entries)
    by_path: dict[str, str] = {}
    known: set[str] = set()
    for song in client.songs():
        known.add(str(song.get("id")))
        if needs_paths and isinstance(song.get("path"), str):
            by_path[song["path"].lstrip("/")] = str(song["id"])
    ids: list[str] = []
    for entry in entries:
        song_id = remote.song_id(entry.key, client.url)
        if song_id is not None:
            song_id = song_id if song_id in known else None
        else:
            song_id = by_path.get(_server_path(entry.path, mapping) or "")
        if song_id is None:
            missing.append(entry.key)
        elif song_id not in ids:
            ids.append(song_id)
    return ids


def _server_path(path: str, mapping: dict[str, str]) -> str | None:
    """A local file as the server lists it (relative to its music folder), through ``subsonic.path_map`` backwards."""
    for theirs, ours in sorted(mapping.items(), key=lambda kv: -len(kv[1])):
        ours = ours.rstrip("/") or "/"
        if path.startswith(ours + "/"):
            return os.path.join(theirs.strip("/"), path[len(ours) + 1:]).lstrip("/")
    return None


def _new_id(client: SubsonicClient, name: str, user: str, before: set[str]) -> str:
    """The id of the playlist just created (servers before API 1.14 do not return it): the new one of that name."""
    made = [p for p in client.playlists() if p.get("name") == name and p.get("owner", user) == user
            and str(p.get("id")) not in before]
    if len(made) != 1:
        raise RecsysError(f"the Subsonic server at {client.url} did not show the playlist {name!r} it was asked to "
                          "create: check it in your Subsonic app")
    return str(made[0]["id"])


def _record_key(client: SubsonicClient) -> str:
    return f"{client.url} {client.user}"


def _read_record(home: Path) -> dict[str, Any]:
    try:
        data = json.loads((home / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: {n: str(i) for n, i in v.items()} for k, v in data.items() if isinstance(v, dict)} \
        if isinstance(data, dict) else {}
