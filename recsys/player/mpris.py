"""Ask a running music player over MPRIS (D-Bus) which track plays, and, only when asked, hand it a playlist.

MPRIS 2 (``org.mpris.MediaPlayer2.<name>`` on the session bus, object ``/org/mpris/MediaPlayer2``) is what
Clementine, Strawberry, VLC, Rhythmbox and most Linux players implement. The playing track is the ``Metadata``
property of ``org.mpris.MediaPlayer2.Player``: ``xesam:url`` (a ``file://`` URI for a local file) names the file;
``xesam:title`` / ``xesam:artist`` are the fallback when the URL is not a local file (a stream, a player that
leaves it out). A playlist is handed over with ``Player.OpenUri(file:// URI of the playlist file)`` (the player
parses the playlist and queues its tracks); a player without OpenUri but with an editable TrackList gets each track
with ``TrackList.AddTrack``.

Pure Python (jeepney): no D-Bus C library, no GLib main loop. Every failure is an :class:`MprisError` whose message
is one line saying what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jeepney import DBusAddress, DBusErrorResponse, MessageType, Properties, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, open_dbus_connection

from recsys.errors import RecsysError, shown
from recsys.library.uri import uri_to_path

PREFIX = "org.mpris.MediaPlayer2."
OBJECT_PATH = "/org/mpris/MediaPlayer2"
ROOT_IFACE = "org.mpris.MediaPlayer2"
PLAYER_IFACE = "org.mpris.MediaPlayer2.Player"
TRACKLIST_IFACE = "org.mpris.MediaPlayer2.TrackList"
NO_TRACK = "/org/mpris/MediaPlayer2/TrackList/NoTrack"
TIMEOUT_S = 2.0  # a player that does not answer in 2 s is hung: say so rather than wait
_STATUS_ORDER = {"Playing": 0, "Paused": 1}  # which player "plays now" when several run


class MprisError(RecsysError):
    """No session bus, no player, nothing playing, or the player refused: the message says what to do."""


@dataclass(frozen=True)
class NowPlaying:
    """The track a player reports. ``path`` is the local file (None for a stream or when the URL is missing)."""

    player: str  # the bus name, e.g. org.mpris.MediaPlayer2.clementine
    identity: str  # the player's own name for people ("Clementine"), or the bus name's tail
    status: str  # Playing, Paused or Stopped
    url: str
    path: str | None
    title: str
    artist: str
    album: str

    @property
    def query(self) -> str:
        """What recsys looks the track up by: the file, else 'artist - title'."""
        if self.path:
            return self.path
        return " - ".join(x for x in (self.artist, self.title) if x)

    @property
    def label(self) -> str:
        return " - ".join(x for x in (self.artist, self.title) if x) or self.path or self.url


def local_path(url: str) -> str | None:
    """The local file a ``file://`` URL names (percent-decoded from its bytes, so any file name survives), or
    None for anything else (http streams, cdda, an empty URL)."""
    if not url.startswith("file://"):
        return None
    return uri_to_path(url)


def connect(address: str | None = None) -> DBusConnection:
    """A connection to the session bus (``address``, else ``$DBUS_SESSION_BUS_ADDRESS``), or a one-line error."""
    address = address or os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if not address:
        raise MprisError("no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is not set (run recsys inside the desktop "
                         "session where your player runs)")
    try:
        return open_dbus_connection(address, auth_timeout=TIMEOUT_S)
    except (OSError, RuntimeError, ValueError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise MprisError(f"cannot reach the D-Bus session bus at {address} ({reason}): is your desktop session "
                         "running?") from None


def _call(conn: DBusConnection, msg, what: str) -> tuple:
    try:
        reply = conn.send_and_get_reply(msg, timeout=TIMEOUT_S)
    except TimeoutError:
        raise MprisError(f"{what}: no answer within {TIMEOUT_S:g} s (is the player hung?)") from None
    except (OSError, ConnectionError) as exc:
        raise MprisError(f"{what}: the bus connection failed ({exc})") from None
    if reply.header.message_type == MessageType.error:
        raise DBusErrorResponse(reply)
    return reply.body


def players(conn: DBusConnection) -> list[str]:
    """The bus names of every MPRIS player on the bus, sorted."""
    names = _call(conn, message_bus.ListNames(), "listing the players on the session bus")[0]
    return sorted(n for n in names if n.startswith(PREFIX))


def _get(conn: DBusConnection, player: str, iface: str, name: str, default=None):
    """A property's value (variants unwrapped), or ``default`` when the player does not have it."""
    try:
        body = _call(conn, Properties(DBusAddress(OBJECT_PATH, player, iface)).get(name), f"asking {player}")
    except DBusErrorResponse:
        return default
    return _unwrap(body[0])


def _unwrap(value):
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):  # a variant: (signature, value)
        return _unwrap(value[1])
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):  # e.g. xesam:artist sent as av, not as
        return [_unwrap(v) for v in value]
    return value


def _text(value) -> str:
    """A text property: a string, or a list of them (xesam:artist is a list of names); a value of another D-Bus type
    (a player's bug, or a hostile one) counts as absent, as MPRIS says a client should treat it."""
    if isinstance(value, list):
        return ", ".join(v for v in value if isinstance(v, str) and v)
    return value if isinstance(value, str) else ""


def _pick(conn: DBusConnection, wanted: str | None) -> tuple[str, str]:
    """The player to ask: the one ``wanted`` names (bus name or its tail, case-insensitive), else the one playing
    (then paused) now; returns (bus name, status)."""
    found = players(conn)
    if not found:
        raise MprisError("no MPRIS player is running on the session bus: start Clementine or Strawberry and play a "
                         "track")
    if wanted:
        w = wanted.casefold().removeprefix(PREFIX.casefold())
        matches = [p for p in found if p.casefold().removeprefix(PREFIX.casefold()).split(".")[0] == w
                   or p.casefold() == wanted.casefold()]
        if not matches:
            tails = ", ".join(p.removeprefix(PREFIX) for p in found)
            raise MprisError(f"no MPRIS player named {shown(wanted)} is running (running: {tails})")
        found = matches
    statuses = {p: _text(_get(conn, p, PLAYER_IFACE, "PlaybackStatus", "Stopped")) or "Stopped" for p in found}
    best = min(found, key=lambda p: (_STATUS_ORDER.get(statuses[p], 2), p))
    return best, statuses[best]


def now_playing(player: str | None = None, address: str | None = None) -> NowPlaying:
    """The track the player plays now (``player``: a bus name or its tail such as 'clementine'; by default the
    player that is playing, else one that is paused)."""
    with connect(address) as conn:
        name, status = _pick(conn, player)
        identity = _text(_get(conn, name, ROOT_IFACE, "Identity")) or name.removeprefix(PREFIX)
        meta = _get(conn, name, PLAYER_IFACE, "Metadata", {})
        meta = meta if isinstance(meta, dict) else {}  # Metadata of another type than a{sv}: no track described
        url = _text(meta.get("xesam:url"))
        title, artist, album = (_text(meta.get(k)) for k in ("xesam:title", "xesam:artist", "xesam:album"))
        if status == "Stopped" or not (url or title) or meta.get("mpris:trackid") == NO_TRACK:
            raise MprisError(f"{identity} is playing nothing: start a track in it, then run this again")
        return NowPlaying(name, identity, status, url, local_path(url), title, artist, album)


def hand_over(playlist_uri: str, track_uris: list[str], player: str | None = None,
              address: str | None = None) -> str:
    """Give the player the playlist file (``OpenUri(playlist_uri)``), or, when it refuses that, each track (its
    ``file://`` URI) through its TrackList; returns how it was handed over, for the user."""
    with connect(address) as conn:
        name, _status = _pick(conn, player)
        identity = _text(_get(conn, name, ROOT_IFACE, "Identity")) or name.removeprefix(PREFIX)
        try:
            _call(conn, new_method_call(DBusAddress(OBJECT_PATH, name, PLAYER_IFACE), "OpenUri", "s",
                                        (playlist_uri,)), f"handing the playlist to {identity}")
            return f"opened in {identity}"
        except DBusErrorResponse as exc:
            refused = exc.name
        if not (_get(conn, name, ROOT_IFACE, "HasTrackList", False) is True  # a b, not some other type
                and _get(conn, name, TRACKLIST_IFACE, "CanEditTracks", False) is True):
            raise MprisError(f"{identity} refused the playlist ({refused}) and has no editable track list: open the "
                             "playlist in it yourself")
        tracklist = DBusAddress(OBJECT_PATH, name, TRACKLIST_IFACE)
        try:
            # NoTrack inserts at the start, so the tracks go in last to first; the first one becomes current
            for i, uri in enumerate(reversed(track_uris)):
                _call(conn, new_method_call(tracklist, "AddTrack", "sob", (uri, NO_TRACK, i == len(track_uris) - 1)),
                      f"adding tracks to {identity}")
        except DBusErrorResponse as exc:
            raise MprisError(f"{identity} refused a track ({exc.name}): open the playlist in it yourself") from None
        return f"added {len(track_uris)} tracks to {identity}'s track list"
