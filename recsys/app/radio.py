"""`recsys radio`: a playlist around the track the player plays now, asked over MPRIS (D-Bus).

The playing track is the seed of the playlist's own ranking (``recsys playlist --seed``): its neighbours vote for
the tracks near it, your disliked ratings against theirs, and the classifier's estimate is blended in when
`recsys train-classifier` found it better than chance, so the radio is taste-aware. Unlike a discovery playlist it
includes tracks you rated or play often (``new_only`` leaves them out). The playlist is handed to the player only
when asked (``play``): OpenUri of the playlist file, or the player's TrackList. A file handed to a player keeps this
machine's paths (that player opens them here), even an M3U8 of a Navidrome library in a container: without ``play``
the file is for Navidrome to import, in its view (``navidrome.path_map``), as `recsys playlist` writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recsys.app.ranking import Playlist, PlaylistRequest, make_playlist
from recsys.config import Settings
from recsys.index.lookup import TrackNotFound
from recsys.library.uri import path_to_uri
from recsys.player.mpris import NowPlaying, hand_over, now_playing


@dataclass
class RadioRequest:
    top_n: int | None = None
    out: str | None = None
    fmt: str | None = None
    force: bool = False
    play: bool = False
    player: str | None = None  # an MPRIS bus name or its tail ('clementine'); default: the one playing
    new_only: bool = False
    where: Sequence[str] = ()  # filter terms (recsys.library.filters) on the candidates, as for `recsys playlist`


@dataclass
class Radio:
    playing: NowPlaying
    playlist: Playlist
    handed: str | None = None  # how the playlist went to the player, when --play


def make_radio(settings: Settings, req: RadioRequest, bus: str | None = None) -> Radio:
    """Ask the player what plays, build and write the playlist around it, hand it over when asked."""
    playing = now_playing(req.player, address=bus)
    if not playing.query:
        raise TrackNotFound(f"{playing.identity} plays {playing.url or 'a track'} with no file and no tags: recsys "
                            "cannot tell which track of your library it is")
    try:
        playlist = make_playlist(settings, PlaylistRequest(
            top_n=req.top_n, out=req.out, name="radio", seeds=[playing.query], fmt=req.fmt, force=req.force,
            include_rated=not req.new_only, include_played=not req.new_only, where=req.where, local_player=req.play))
    except TrackNotFound as exc:
        raise TrackNotFound(f"the track {playing.identity} plays now: {exc}") from None
    handed = None
    if req.play:
        handed = hand_over(path_to_uri(str(playlist.path)), [path_to_uri(t.path) for t in playlist.tracks],
                           player=playing.player, address=bus)
    return Radio(playing, playlist, handed)
