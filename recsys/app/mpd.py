"""MPD's use cases: `recsys radio --mpd` and `recsys playlist --queue`.

`recsys radio --mpd` follows the song MPD plays and keeps its queue topped up with that song's neighbours. What
blissify does for MPD, with recsys's taste and rules: each time MPD's player changes (``idle player``: a new
song, play, pause, stop), when fewer than ``keep`` entries follow the current song in the queue, recsys adds the best
tracks of the playlist's own ranking seeded by that song (``recsys playlist --seed``: its neighbours, your dislikes
voting against theirs, the classifier blended in when it was found better than chance, the artist and album caps,
``--where``), leaving out what the queue holds already. It only ever appends: nothing the user queued is removed,
moved or replaced, and no file is written. The library (tracks and stickers) and the snapshot are read once, when
the radio starts.

It stops cleanly on Ctrl-C (returning what it did), and with one line when MPD goes away.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from recsys.app.ranking import Playlist, PlaylistRequest, build_ranking, usable_model
from recsys.app.taste import Taste, load_taste
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.recommender.persistence import RatingModel
from recsys.servers import PushEntry, pusher
from recsys.servers.mpd import (
    Address,
    ConnectionLost,
    connect,
    is_mpd,
    local_path,
    music_directory,
    parse_address,
    song_uri,
)


@dataclass
class MpdRadioRequest:
    keep: int = 10  # entries kept queued after the current song
    once: bool = False  # one top-up, then return (no waiting for MPD's player)
    new_only: bool = False
    where: Sequence[str] = ()


@dataclass
class MpdRadio:
    target: str  # MPD's address, for people
    added: int = 0  # entries appended to the queue, in all
    top_ups: int = 0  # times something was added
    notes: list[str] = field(default_factory=list)
    stopped: str = ""  # why it ended: 'once', 'interrupted'


def reads_mpd(settings: Settings) -> bool:
    """Whether the library is an MPD server (``--mpd``, given or remembered): `recsys radio` then follows MPD."""
    return is_mpd(settings.library.db)


def run_mpd_radio(settings: Settings, req: MpdRadioRequest, say: Callable[[str], None] = lambda line: None
                  ) -> MpdRadio:
    """Top the queue up now, then after every change of MPD's player until Ctrl-C (or once, with ``req.once``).
    ``say`` gets one line per top-up. A RecsysError when MPD goes away (the queue keeps what was added)."""
    if req.keep < 1:
        raise RecsysError(f"--keep {req.keep}: keep at least one track queued after the current song")
    address = parse_address(str(settings.library.db))
    taste = load_taste(settings)
    notes: list[str] = [taste.lib.behind] if taste.lib.behind else []
    model = usable_model(settings, taste.lib, notes)
    radio = MpdRadio(str(address), notes=notes)
    for note in notes:
        say(f"note: {note}")
    with connect(address) as client:
        follower = _Follower(settings, req, taste, model, client, address,
                             music_directory(client, address, settings.mpd.music_directory), radio, say,
                             set(taste.lib.keys))
        client.idletimeout = None  # idle waits as long as MPD plays the same song
        if not req.once:
            say(f"following MPD at {address}, keeping {req.keep} tracks queued after its song (Ctrl-C stops)")
        try:
            while True:
                follower.top_up()
                if req.once:
                    radio.stopped = "once"
                    return radio
                client.idle("player")
        except KeyboardInterrupt:
            radio.stopped = "interrupted"
            return radio
        except ConnectionLost as exc:
            raise RecsysError(f"MPD at {address} went away ({exc or 'connection closed'}): radio stopped after "
                              f"queueing {radio.added} tracks") from None


@contextmanager
def _no_interrupt() -> Iterator[None]:
    """SIGINT held back for the block (delivered when it ends), where the platform allows it."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@dataclass
class _Follower:
    """What one radio session keeps between two changes of MPD's player."""

    settings: Settings
    req: MpdRadioRequest
    taste: Taste
    model: RatingModel | None
    client: Any  # mpd.MPDClient, connected
    address: Address
    music_dir: str
    radio: MpdRadio
    say: Callable[[str], None]
    embedded: set[str]  # the keys of the snapshot's tracks
    last_seed: str | None = None  # the song of the last top-up

    def top_up(self) -> None:
        """When fewer than ``keep`` entries follow MPD's current song, append that many of its neighbours."""
        current = self.client.currentsong()
        uri = current.get("file") if isinstance(current, dict) else None
        queue = self.client.playlistinfo()
        if not uri:
            return
        need = self.req.keep - (len(queue) - int(current.get("pos", len(queue) - 1)) - 1)
        seed = local_path(uri, self.music_dir)
        said, self.last_seed = self.last_seed == seed, seed  # a line about a song is said once
        if need <= 0:
            return
        if seed not in self.embedded:
            why = "a stream, not a file of its library" if "://" in uri else \
                f"not embedded (run `recsys embed --mpd {self.address}`)"
            if not said:
                self.say(f"MPD plays {uri}, {why}: nothing added")
            return
        queued = {local_path(e["file"], self.music_dir) for e in queue if "file" in e}
        picks = self._neighbours(seed, queued, need)
        if not picks:
            if not said:
                self.say(f"MPD plays {uri}: no neighbour left to queue under the playlist's rules")
            return
        with _no_interrupt():  # a Ctrl-C lands before or after a top-up, never between MPD's add and its count
            self.client.command_list_ok_begin()
            for pick in picks:
                self.client.add(pick)
            self.client.command_list_end()
            self.radio.added += len(picks)
            self.radio.top_ups += 1
        self.say(f"MPD plays {uri}: queued {len(picks)} of its neighbours ({', '.join(picks[:3])}"
                 f"{', ...' if len(picks) > 3 else ''})")

    def _neighbours(self, seed: str, queued: set[str], need: int) -> list[str]:
        """MPD's names of the ``need`` best tracks of the ranking seeded by ``seed`` that are not queued yet."""
        wanted = need + len(queued) + 1  # the queued ones may rank first: ask for enough to skip them all
        ranking = build_ranking(self.settings, self.taste, self.taste.tracks, self.model, PlaylistRequest(
            top_n=wanted, include_rated=not self.req.new_only, include_played=not self.req.new_only,
            where=self.req.where), seed_keys=[seed])
        picks: list[str] = []
        for track in ranking.tracks:
            uri = song_uri(track.path, self.music_dir)
            if track.key != seed and track.path not in queued and uri is not None and uri not in picks:
                picks.append(uri)
            if len(picks) == need:
                break
        return picks


def require_mpd(settings: Settings, flag: str) -> None:
    """A RecsysError unless the library is read from MPD (``flag`` needs it), raised before any work is done."""
    if not reads_mpd(settings):
        raise RecsysError(f"{flag} appends to MPD's queue: it needs the library read from MPD (--mpd HOST[:PORT])")


def queue_playlist(settings: Settings, playlist: Playlist) -> str:
    """`recsys playlist --queue`: append the written playlist's tracks to the queue of the MPD the library is read
    from (nothing queued is removed; tracks MPD does not list are left out and counted); the line saying so."""
    entries = [PushEntry(t.key, t.path, t.title, t.artist) for t in playlist.tracks]
    report = pusher("mpd")(settings, playlist.title, entries, dry_run=False, mode="queue")
    if report.action == "refused":
        raise RecsysError(f"the playlist was written to {playlist.path}, but nothing was queued: {report.detail}")
    missing = f"; {len(report.missing)} left out (MPD does not list them), e.g. {report.missing[0]}" \
        if report.missing else ""
    return f"queued {report.tracks} tracks in MPD at {report.target}: {report.detail}{missing}"
