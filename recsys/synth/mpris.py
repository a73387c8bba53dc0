"""A private D-Bus session bus and a small MPRIS player on it, for tests of ``recsys radio`` without a desktop.

:func:`private_session_bus` starts ``dbus-daemon --session`` of its own (its address is returned; nothing of the
user's session is touched); :class:`FakePlayer` owns ``org.mpris.MediaPlayer2.<name>`` on it and answers what a real
player answers: the root and Player properties (Identity, PlaybackStatus, Metadata, HasTrackList), ``OpenUri``
and, when it has a track list, ``TrackList.AddTrack``; every call it received is kept in ``calls``.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from jeepney import HeaderFields, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

# The MPRIS 2 names, as the specification spells them (recsys.synth imports nothing of the code it stands in for).
PREFIX = "org.mpris.MediaPlayer2."
OBJECT_PATH = "/org/mpris/MediaPlayer2"
ROOT_IFACE = "org.mpris.MediaPlayer2"
PLAYER_IFACE = "org.mpris.MediaPlayer2.Player"
TRACKLIST_IFACE = "org.mpris.MediaPlayer2.TrackList"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
DBUS_DAEMON = "dbus-daemon"


def have_dbus_daemon() -> bool:
    return shutil.which(DBUS_DAEMON) is not None


@contextmanager
def private_session_bus() -> Iterator[str]:
    """Start a dbus-daemon of our own and yield its address; it is stopped on exit."""
    proc = subprocess.Popen([DBUS_DAEMON, "--session", "--print-address=1", "--nofork"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        address = proc.stdout.readline().strip()
        if not address:
            raise RuntimeError("dbus-daemon printed no address")
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


class FakePlayer:
    """An MPRIS player that reports one track; use as a context manager (it serves from a thread)."""

    def __init__(self, address: str, name: str = "fakeplayer", identity: str = "Fake Player", url: str = "",
                 title: str = "", artist: list[str] | None = None, album: str = "", status: str = "Playing",
                 open_uri: bool = True, track_list: bool = False) -> None:
        self.address, self.bus_name, self.identity = address, PREFIX + name, identity
        self.status, self.open_uri, self.track_list = status, open_uri, track_list
        meta: dict = {"mpris:trackid": ("o", "/org/mpris/MediaPlayer2/Track/1")}
        for key, sig, value in (("xesam:url", "s", url), ("xesam:title", "s", title), ("xesam:album", "s", album),
                                ("xesam:artist", "as", artist or [])):
            if value:
                meta[key] = (sig, value)
        self.metadata = meta
        self.calls: list[tuple[str, tuple]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakePlayer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake MPRIS player did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _properties(self, iface: str) -> dict:
        if iface == ROOT_IFACE:
            return {"Identity": ("s", self.identity), "HasTrackList": ("b", self.track_list),
                    "CanQuit": ("b", False), "CanRaise": ("b", False)}
        if iface == PLAYER_IFACE:
            return {"PlaybackStatus": ("s", self.status), "Metadata": ("a{sv}", self.metadata),
                    "CanPlay": ("b", True)}
        if iface == TRACKLIST_IFACE and self.track_list:
            return {"CanEditTracks": ("b", True), "Tracks": ("ao", [])}
        return {}

    def _answer(self, msg):
        fields = msg.header.fields
        iface, member = fields.get(HeaderFields.interface), fields.get(HeaderFields.member)
        self.calls.append((member, tuple(msg.body)))
        if iface == PROPERTIES_IFACE and member == "Get":
            props = self._properties(msg.body[0])
            if msg.body[1] in props:
                return new_method_return(msg, "v", (props[msg.body[1]],))
            return new_error(msg, "org.freedesktop.DBus.Error.UnknownProperty", "s", (msg.body[1],))
        if iface == PROPERTIES_IFACE and member == "GetAll":
            return new_method_return(msg, "a{sv}", (self._properties(msg.body[0]),))
        if iface == PLAYER_IFACE and member == "OpenUri" and self.open_uri:
            return new_method_return(msg)
        if iface == TRACKLIST_IFACE and member == "AddTrack" and self.track_list:
            return new_method_return(msg)
        return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (f"{iface}.{member}",))

    def _serve(self) -> None:
        with open_dbus_connection(self.address) as conn:
            conn.send_and_get_reply(message_bus.RequestName(self.bus_name), timeout=5)
            self._ready.set()
            while not self._stop.is_set():
                try:
                    msg = conn.receive(timeout=0.05)
                except TimeoutError:
                    continue
                if msg.header.message_type == MessageType.method_call and \
                        msg.header.fields.get(HeaderFields.path) == OBJECT_PATH:
                    conn.send(self._answer(msg))
