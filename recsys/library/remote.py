"""Tracks that live on a server, read over HTTP: their one location form, their identity, and a seekable file that
fetches only the byte ranges a decoder asks for.

**Location** (the track's ``path`` and key): ``subsonic+http://HOST:PORT/BASE/<song id>/<path on the server>``
(``subsonic+https`` for https), :func:`location`. It holds the server, the server's song id (what ``download``
needs) and the song's path (for people, and stable as long as the file stays where it is); never a user or a
password. Nothing of it changes between runs, so a re-run embeds nothing.

**Credentials** are in the process's memory only: the source that read the library registers, per server, an
object with ``download_url(song_id)`` (:class:`recsys.servers.subsonic.SubsonicClient`); the decode workers get the
same objects through their pipe (:func:`exported`, :func:`install`). A URL with credentials is built when a file is
opened, used by this module's connection and dropped; messages name the location, never that URL.

**Identity**: a server file has no ``stat``: its size and date come from the server's listing (:func:`register`),
and :func:`stat` gives them in ``os.stat`` form for the planner. :func:`exists` says whether the server listed the
location when its library was read in this process; for a server not read in this process (a command that reads
only the index snapshot), every location of it counts as present (asking the server per track would cost more than
the answer is worth).

**Bytes**: :class:`RemoteFile` reads in blocks of :data:`BLOCK` bytes with bounded ``Range`` requests on one
kept-alive connection, caching the last blocks, so soundfile and PyAV seek inside it as in a local file and only
what they read crosses the network (benchmarks/RESULTS.md, "Subsonic over HTTP").
"""

from __future__ import annotations

import http.client
import io
import os
import stat as stat_module
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

from recsys.library.uri import REMOTE_PREFIX, is_remote, unquote_path

BLOCK = 16 * 1024
CACHED_BLOCKS = 256  # 4 MiB per open file
TIMEOUT_S = 30.0


class Resolver(Protocol):
    def download_url(self, song_id: str) -> str: ...


_servers: dict[str, Resolver] = {}  # server prefix (with trailing '/') -> who builds its download URLs
_listed: dict[str, tuple[int, int]] = {}  # location -> (size, mtime_ns) as the server listed it
_traffic = {"bytes": 0, "requests": 0}  # every RemoteFile of this process, for the benchmark


def traffic() -> dict[str, int]:
    """Bytes received and Range requests made by this process's server files so far."""
    return dict(_traffic)


def server_prefix(server_url: str) -> str:
    """``subsonic+http://host:port/base/`` for the server at ``server_url`` (as normalised by its client)."""
    return f"{REMOTE_PREFIX}{server_url.rstrip('/')}/"


def location(server_url: str, song_id: str, server_path: str) -> str:
    """The location of one song of a server: its prefix, the song id (percent-encoded), the song's path."""
    return f"{server_prefix(server_url)}{urllib.parse.quote(str(song_id), safe='')}/{server_path.lstrip('/')}"


def register(server_url: str, resolver: Resolver, listed: Iterable[tuple[str, int, int]]) -> None:
    """What the source read: who opens the server's files, and each location's (size, mtime_ns)."""
    _servers[server_prefix(server_url)] = resolver
    _listed.update((loc, (size, mtime_ns)) for loc, size, mtime_ns in listed)


def exported() -> dict[str, Resolver]:
    """The resolvers, for a decode worker (sent through its pipe, never written anywhere)."""
    return dict(_servers)


def install(resolvers: dict[str, Resolver]) -> None:
    _servers.update(resolvers)


def song_id(path: str, server_url: str) -> str | None:
    """The server's song id in a location of the server at ``server_url``; None for anything else."""
    prefix = server_prefix(server_url)
    return _decoded(path[len(prefix):].partition("/")[0]) if path.startswith(prefix) else None


def _decoded(text: str) -> str:
    return unquote_path(text)


def _split(path: str) -> tuple[str, Resolver, str]:
    """(server prefix, its resolver, song id) of a location; OSError when no server of this process knows it."""
    for prefix, resolver in sorted(_servers.items(), key=lambda kv: -len(kv[0])):
        if path.startswith(prefix):
            return prefix, resolver, _decoded(path[len(prefix):].partition("/")[0])
    raise FileNotFoundError(f"{path}: the library of its server was not read in this run")


def stat(path: str) -> os.stat_result:
    """``os.stat`` for a local file; for a location, its size and date as the server listed them (a regular file),
    FileNotFoundError when it was not listed."""
    if not is_remote(path):
        return os.stat(path)
    if path not in _listed:
        raise FileNotFoundError(f"{path}: not listed by its server")
    size, mtime_ns = _listed[path]
    seconds = mtime_ns // 1_000_000_000
    return os.stat_result((stat_module.S_IFREG | 0o444, 0, 0, 1, 0, 0, max(0, size), seconds, seconds, seconds,
                           seconds, seconds, seconds, mtime_ns, mtime_ns, mtime_ns))


def exists(path: str) -> bool:
    """``os.path.exists`` for a local file; for a location, whether its server listed it (True when the server's
    library was not read in this process)."""
    if not is_remote(path):
        return os.path.exists(path)
    if any(path.startswith(prefix) for prefix in _servers):
        return path in _listed
    return True


def is_file(path: str) -> bool:
    return stat_module.S_ISREG(stat(path).st_mode) if is_remote(path) else os.path.isfile(path)


class RemoteFile(io.RawIOBase):
    """A server's file, seekable and read-only, fetched by bounded ``Range`` requests. ``str()`` is its location."""

    def __init__(self, path: str, size: int | None = None) -> None:
        super().__init__()
        self.path = path
        _, resolver, song_id = _split(path)
        self._url = urllib.parse.urlsplit(resolver.download_url(song_id))
        listed = _listed.get(path, (0, 0))[0]
        self.size = size if size is not None and size > 0 else (listed if listed > 0 else None)
        self.position = 0
        self.broken: OSError | None = None  # the transfer error, kept: a decoder may hide it as a short read
        self.fetched = 0  # bytes received from the server
        self.requests = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._conn: http.client.HTTPConnection | None = None
        if self.size is None:
            self._fetch(0, 0)  # learns the size from Content-Range

    def __str__(self) -> str:
        return self.path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size or 0}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        """Never raises: decoders call it from C (libsndfile's virtual I/O), where an exception would only be
        printed. A transfer error reads as the end of the file and is kept in ``broken`` for the caller."""
        if self.broken is not None:
            return 0
        try:
            return self._readinto(memoryview(buffer).cast("B"))
        except OSError as exc:
            self.broken = exc
            return 0

    def _readinto(self, view: memoryview) -> int:
        end = min(self.position + len(view), self.size or 0)
        if end <= self.position:
            return 0
        first, last = self.position // BLOCK, (end - 1) // BLOCK
        if last - first >= 2 and not any(b in self._blocks for b in range(first, last + 1)):
            data = self._get(self.position, end - 1)  # a long read (a content id's sample): exactly it, uncached
            view[:len(data)] = data
            self.position += len(data)
            return len(data)
        missing = [b for b in range(first, last + 1) if b not in self._blocks]
        if missing:
            self._fetch(missing[0], missing[-1])
        done = 0
        for block in range(first, last + 1):
            data = self._blocks[block]
            self._blocks.move_to_end(block)
            start = self.position + done - block * BLOCK
            piece = data[start:start + (end - self.position - done)]
            view[done:done + len(piece)] = piece
            done += len(piece)
        self.position += done
        return done

    def _fetch(self, first: int, last: int) -> None:
        """Blocks ``first``..``last`` in one request (the size too, when unknown)."""
        start, stop = first * BLOCK, (last + 1) * BLOCK - 1
        if self.size is not None:
            stop = min(stop, self.size - 1)
        data = self._get(start, stop)
        for i in range(0, len(data), BLOCK):
            self._blocks[first + i // BLOCK] = data[i:i + BLOCK]
        while len(self._blocks) > CACHED_BLOCKS:
            self._blocks.popitem(last=False)

    def _get(self, start: int, stop: int) -> bytes:
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: once more on a new one
            try:
                conn = self._connection()
                target = self._url.path + ("?" + self._url.query if self._url.query else "")
                conn.request("GET", target, headers={"Range": f"bytes={start}-{stop}"})
                response = conn.getresponse()
                if response.status not in (200, 206):
                    response.read()
                    raise OSError(f"{self.path}: the server answered HTTP {response.status} to download")
                self.requests += 1
                _traffic["requests"] += 1
                if response.status == 200:  # no Range support: take what was asked, drop the connection
                    data = response.read(stop + 1)[start:]
                    self.fetched += stop + 1
                    _traffic["bytes"] += stop + 1
                    self._close_connection()
                else:
                    data = response.read()
                    self.fetched += len(data)
                    _traffic["bytes"] += len(data)
                    total = response.getheader("Content-Range", "").rpartition("/")[2]
                    if self.size is None and total.isdigit():
                        self.size = int(total)
                return data
            except (http.client.HTTPException, ConnectionError) as exc:
                self._close_connection()
                if attempt == 2:
                    raise OSError(f"{self.path}: the download broke off ({type(exc).__name__})") from None
            except TimeoutError:
                self._close_connection()
                raise OSError(f"{self.path}: the server did not answer within {TIMEOUT_S:g} s") from None
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._url.scheme == "https" else http.client.HTTPConnection
            self._conn = kind(self._url.hostname, self._url.port, timeout=TIMEOUT_S)
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._close_connection()
        self._blocks.clear()
        super().close()


def open_remote(path: str) -> RemoteFile:
    """A location opened for reading; OSError (naming the location, never a URL) when it cannot be."""
    return RemoteFile(path)
