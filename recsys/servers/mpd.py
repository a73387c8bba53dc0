"""The MPD client recsys uses (python-mpd2): the address, the connection, MPD's music folder, stickers, paths.

MPD (musicpd.org) names every song by its ``file``, relative to its ``music_directory``; recsys's track key is the
absolute path, so a song is the file ``music_directory/file`` on this machine. MPD tells its ``music_directory``
only to a client on its local (unix) socket (the ``config`` command); over TCP the setting ``mpd.music_directory``
says where this machine sees MPD's music (it also wins over MPD's answer: an MPD in a container sees its music
elsewhere). Without either, nothing can be mapped and the error says so.

An address is ``HOST``, ``HOST:PORT`` (default port 6600) or the path of MPD's socket; inside recsys the library
setting holds it as ``mpd://HOST:PORT`` or ``mpd:///path/to/socket`` (``library.db``), which is how ``--mpd`` is
remembered like ``--db``. The library reader only reads; the pusher and the radio add to the queue and write stored
playlists recsys made, and nothing here ever sets a sticker or updates MPD's database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mpd

from recsys.errors import RecsysError

DEFAULT_PORT = 6600
SCHEME = "mpd:"
TIMEOUT_S = 10.0

CommandError = mpd.CommandError  # MPD answered ACK: a command it refused (no such playlist, not permitted ...)
ConnectionLost = (mpd.ConnectionError, OSError)  # MPD went away (or was never there)
_ANY = (mpd.MPDError, OSError)  # whatever python-mpd2 raises, while connecting or closing


@dataclass(frozen=True)
class Address:
    """Where MPD listens: a TCP host and port, or the path of its local socket."""

    host: str = "localhost"
    port: int = DEFAULT_PORT
    socket: str | None = None

    @property
    def url(self) -> str:
        """The form kept in ``library.db``: ``mpd://HOST:PORT`` or ``mpd:///path/to/socket``."""
        return f"mpd://{self.socket}" if self.socket else f"mpd://{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.socket or f"{self.host}:{self.port}"


def is_mpd(db: object) -> bool:
    """Whether a library's ``db`` setting (text or the Path made of it) names an MPD server, not a file."""
    return db is not None and str(db).startswith(SCHEME)


def parse_address(text: str) -> Address:
    """``HOST``, ``HOST:PORT``, ``[IPv6]:PORT``, a socket path (``/run/mpd/socket``, ``~/.mpd/socket``), each with or
    without ``mpd://`` in front (also as a Path folds it, ``mpd:/HOST:PORT``); a RecsysError for anything else."""
    rest = text.strip()
    rest = rest[len(SCHEME):].lstrip("/") if rest.startswith(SCHEME) else rest
    if text.strip().startswith(SCHEME) and "/" in rest:
        return Address(socket="/" + rest)
    if "/" in rest or rest.startswith("~"):
        return Address(socket=os.path.abspath(os.path.expanduser(rest)))
    host, port = rest, str(DEFAULT_PORT)
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":") or port
    elif rest.count(":") == 1:
        host, _, port = rest.partition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RecsysError(f"'{text}' is not an MPD address: give HOST, HOST:PORT (e.g. localhost:6600) or the path "
                          "of MPD's socket (e.g. /run/mpd/socket)")
    return Address(host=host, port=int(port))


@contextmanager
def connect(address: Address, timeout: float = TIMEOUT_S) -> Iterator[mpd.MPDClient]:
    """A connected client (closed on leaving); a RecsysError naming the address when MPD cannot be reached."""
    client = mpd.MPDClient()
    client.timeout = timeout
    try:
        if address.socket:
            client.connect(address.socket)
        else:
            client.connect(address.host, address.port)
    except _ANY as exc:
        raise RecsysError(f"cannot reach MPD at {address} ({exc}): is MPD running, and is the address right? "
                          "(--mpd HOST[:PORT] or the path of MPD's socket)") from None
    try:
        yield client
    finally:
        try:
            client.close()
            client.disconnect()
        except _ANY:  # gone already, or left inside an idle or a command list by Ctrl-C
            pass


def music_directory(client: mpd.MPDClient, address: Address, configured: str | None) -> str:
    """MPD's music folder as this machine sees it: ``configured`` (``mpd.music_directory``) when set, else what MPD
    answers on its local socket; a RecsysError saying what to give when neither is known."""
    if configured:
        return os.path.abspath(os.path.expanduser(configured)).rstrip("/") or "/"
    try:
        answer = client.config()
    except CommandError:
        answer = None
    if isinstance(answer, dict):
        answer = answer.get("music_directory")
    if isinstance(answer, str) and answer.startswith("/"):
        return answer.rstrip("/") or "/"
    raise RecsysError(f"MPD at {address} tells its music_directory only over its local socket: give --mpd with the "
                      "path of MPD's socket (e.g. /run/mpd/socket), or set mpd.music_directory to MPD's music folder "
                      "as this machine sees it")


def local_path(uri: str, music_dir: str) -> str:
    """The file on this machine of MPD's song ``uri`` (relative to its music folder)."""
    return os.path.join(music_dir, uri)


def song_uri(path: str, music_dir: str) -> str | None:
    """MPD's name for the local file ``path``, or None when it lies outside MPD's music folder."""
    root = music_dir.rstrip("/") + "/"
    return path[len(root):] if path.startswith(root) and len(path) > len(root) else None


PAGE = 5000  # songs per answer: MPD ends a connection whose answer outgrows max_output_buffer_size (8 MiB)


def all_songs(client: mpd.MPDClient) -> Iterator[dict]:
    """Every song of MPD's database, in pages (``find (base "") window``; MPD before 0.21 has no filter
    expressions: one ``listallinfo`` then, which a very large library may outgrow)."""
    start = 0
    while True:
        try:
            page = client.find('(base "")', "window", f"{start}:{start + PAGE}")
        except CommandError:
            if start:
                raise
            yield from (song for song in client.listallinfo() if "file" in song)
            return
        yield from page
        if len(page) < PAGE:
            return
        start += PAGE


def stickers(client: mpd.MPDClient, name: str) -> dict[str, str]:
    """Every song's sticker ``name`` as ``{uri: value}``; empty when MPD keeps no stickers (no ``sticker_file``)."""
    try:
        found = client.sticker_find("song", "", name)
    except CommandError:
        return {}
    values: dict[str, str] = {}
    for entry in found:
        sticker = entry.get("sticker", "")
        key, sep, value = sticker.partition("=")
        if sep and key == name and "file" in entry:
            values[entry["file"]] = value
    return values


def first(value: object) -> str:
    """A tag's first value: python-mpd2 gives a list for a tag a song has several times."""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)
