"""A Subsonic server as the library (``--subsonic URL``): every song the user sees, with that user's ratings, stars
and plays, read through the API (:mod:`recsys.servers.subsonic`); never a write.

**Songs**: search3 with an empty query, page by page. Fields used: ``id``, ``path`` (relative to the server's music
folder), ``title``, ``artist``, ``album``, ``albumArtist`` (Navidrome; absent from Supysonic, whose tracks then
group by ``artist``), ``genre``, ``year``, ``track``, ``duration``, ``size``, ``created``, ``userRating`` (1-5),
``starred`` (a date when starred), ``playCount`` and ``played`` (Navidrome; Supysonic has none: its tracks count
no plays, and the taste rests on ratings and stars).

**A star counts ``subsonic.loved_stars``** (4 by default) when the song has no rating, as Navidrome's loves do;
a rated song keeps its stars.

**Where the audio is**: when ``subsonic.path_map`` maps the server's folder onto one this machine sees (entries
``SERVER_FOLDER=YOUR_FOLDER``, the song paths taken as ``/`` + their relative path, so ``/=/home/me/Music`` maps
them all) and the file is there, the track is that local file (key: its path, as for every local file). Otherwise
it is the server's file, read over HTTP by seeking (key: its location, :func:`recsys.library.remote.location`).
Both carry the same content id (the same bytes sampled), so switching between them reuses every vector.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from recsys.library import remote
from recsys.library.sources.base import PlayerLibrary
from recsys.library.sources.navidrome import _epoch, _mapped, _rating
from recsys.library.track import Track
from recsys.servers.subsonic import SubsonicClient, SubsonicError, read_password

KIND = "subsonic"


class SubsonicSection(Protocol):
    """What the reader takes of the settings: their ``subsonic`` section (``recsys.config.SubsonicSettings``); the
    server's address is ``library.subsonic``."""

    user: str | None
    password_file: str | None
    loved_stars: float
    timeout_s: float

    def mapping(self) -> dict[str, str]:
        """``path_map`` as {the server's folder: this machine's folder}."""


def connect(url: str | None, section: SubsonicSection) -> SubsonicClient:
    """A client of the server at ``url`` as the configured user, checked with a ping."""
    user = section.user
    if not url:
        raise SubsonicError("no Subsonic server: give its address with --subsonic URL")
    if not user:
        raise SubsonicError(f"no Subsonic user for {url}: give it with --subsonic-user NAME (or subsonic.user)")
    client = SubsonicClient(url, user, read_password(section.password_file), section.timeout_s)
    client.ping()
    return client


def read_subsonic(url: str | None, section: SubsonicSection) -> PlayerLibrary:
    """Every song of the server with the user's ratings, stars and plays; the server's files registered for
    reading over HTTP (:mod:`recsys.library.remote`)."""
    client = connect(url, section)
    mapping = sorted(((k.rstrip("/") or "/", v.rstrip("/") or "/") for k, v in section.mapping().items()),
                     key=lambda kv: -len(kv[0]))
    loved = section.loved_stars
    library = PlayerLibrary(None, KIND, [], skipped_urls=0, skipped_unavailable=0, user=client.user,
                            server=client.url)
    by_key: dict[str, Track] = {}
    listed: list[tuple[str, int, int]] = []
    for song in client.songs():
        song_id, path = song.get("id"), song.get("path")
        if song_id is None or not isinstance(path, str) or not path:
            library.skipped_unavailable += 1
            continue
        local = _mapped("/" + path.lstrip("/"), mapping) if mapping else None
        if local is not None and os.path.isfile(local):
            where = local
        else:
            where = remote.location(client.url, str(song_id), path)
            listed.append((where, _whole(song.get("size")) or 0, _created_ns(song.get("created"))))
        track = Track(
            path=where,
            length_s=float(song["duration"]) if _whole(song.get("duration")) else None,
            title=_text(song.get("title")), artist=_text(song.get("artist")), album=_text(song.get("album")),
            albumartist=_text(song.get("albumArtist") or song.get("displayAlbumArtist")),
            genre=_text(song.get("genre")), year=_whole(song.get("year")), track_number=_whole(song.get("track")),
            rating=_rating(song.get("userRating"), song.get("starred"), loved),
            playcount=_whole(song.get("playCount")) or 0, lastplayed=_epoch(song.get("played")),
        )
        if track.key in by_key:
            library.duplicates += 1
            continue
        by_key[track.key] = track
    remote.register(client.url, client, listed)
    library.tracks = sorted(by_key.values(), key=lambda t: t.key)
    return library


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _whole(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _created_ns(value: Any) -> int:
    """The server's date for the song (``created``) in ns since 1970, 0 when absent: with the size, the identity
    that says the server's file changed."""
    return (_epoch(value) or 0) * 1_000_000_000
