"""Read-only reader of an MPD server's library: its database (every song, in pages) and the owner's ratings (stickers).

Given as ``--mpd HOST[:PORT]`` (or the path of MPD's socket), kept in ``library.db`` as ``mpd://...`` (see
:mod:`recsys.servers.mpd`), so it is remembered like ``--db``. Every song MPD's database lists is a track whose file
is ``music_directory/file`` on this machine (the same key a folder scan of that folder gives). Ratings come from the
``rating`` sticker, 0 up to ``mpd.rating_scale`` (10 by default; 0 is unrated), play counts from the sticker
``mpd.play_count_sticker`` (``playCount``, which mpdstats-like tools keep) where one exists: MPD counts no plays itself,
so without it recsys learns from ratings alone. Nothing is ever written to MPD: no sticker set, no update asked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from recsys.errors import RecsysError
from recsys.library.sources.base import PlayerLibrary
from recsys.library.sources.folders import _leading_int  # '3/12' -> 3, '2001-05-01' -> 2001: as tags are read
from recsys.library.track import Track

KIND = "mpd"
_CHECKED = 20  # songs whose file must exist before the library is believed mapped (a wrong folder fails them all)


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


class MpdSection(Protocol):
    """What the reader takes of the settings: their ``mpd`` section (``recsys.config.MpdSettings``)."""

    music_directory: str | None
    rating_scale: float
    play_count_sticker: str


class MpdSource:
    """An MPD server as a library source (the Source protocol of :mod:`recsys.library.sources`)."""

    name = KIND

    def find(self) -> Path | None:
        """Never looked for: recsys reads MPD only when told (``--mpd``), it does not probe the network."""
        return None

    def recognises(self, path: Path) -> bool:
        from recsys.servers.mpd import is_mpd

        return is_mpd(path)

    def read(self, path: Path, section: MpdSection, taste_only: bool = False,
             kept: Path | None = None) -> PlayerLibrary:
        """Read afresh every time: nothing kept between runs (``kept`` is ignored)."""
        from recsys.servers.mpd import all_songs, connect, first, local_path, music_directory, parse_address, stickers

        address = parse_address(str(path))
        with connect(address) as client:
            music_dir = music_directory(client, address, section.music_directory)
            songs = list(all_songs(client))
            ratings = stickers(client, "rating")
            sticker = section.play_count_sticker
            plays = stickers(client, sticker) if sticker else {}
        library = PlayerLibrary(Path(address.url), KIND, [], skipped_urls=0, skipped_unavailable=0)
        scale = section.rating_scale
        checked = found = 0
        example = ""
        for song in songs:
            uri = song.get("file")
            if not isinstance(uri, str):
                continue  # a directory or a stored playlist of the listing
            if "://" in uri:
                library.skipped_urls += 1
                continue
            file = local_path(uri, music_dir)
            example = example or file
            if checked < _CHECKED:
                checked += 1
                found += os.path.exists(file)
            stars = _float(ratings.get(uri, ""))
            rating = None if stars is None or stars <= 0 else min(stars / scale, 1.0)
            played = _leading_int(plays.get(uri, "")) or 0
            length = _float(first(song.get("duration") or song.get("time")))
            library.tracks.append(Track(
                path=file, length_s=length, title=first(song.get("title")), artist=first(song.get("artist")),
                album=first(song.get("album")), albumartist=first(song.get("albumartist")),
                genre=first(song.get("genre")), year=_leading_int(first(song.get("date"))),
                track_number=_leading_int(first(song.get("track"))), rating=rating, playcount=played))
        if checked and not found:
            raise RecsysError(f"none of the files MPD at {address} lists is under {music_dir} on this machine (e.g. "
                              f"{example}): set "
                              "mpd.music_directory to MPD's music folder as this machine sees it")
        return library


SOURCE = MpdSource()
