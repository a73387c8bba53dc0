"""The one rule between ``file://`` URIs and local paths, both ways (the track key is the decoded path).

A URI's path is percent-decoded to BYTES, then to text with ``os.fsdecode``, exactly as a file name read from the
disk: ``file:///m/caf%C3%A9.flac`` is ``/m/café.flac``, and the Latin-1 ``file:///m/caf%E9.flac`` is
``/m/caf\\udce9.flac`` (a surrogate escape), the same key the player readers and the folder scan give that file.
Only local files are named: the host must be empty or ``localhost``; ``file://otherhost/...``, other schemes and
relative paths name no local file (None). :func:`path_to_uri` is the inverse (every byte outside the unreserved set
percent-encoded), so ``uri_to_path(path_to_uri(p)) == p`` for every absolute path.

A ``%00`` decodes to a NUL in the path, which names no file on any system: it is returned as it is, so the caller
reports that one row or entry (the player readers reject such paths per row); nothing here raises.

Standard library only: the player (MPRIS) and the playlist readers use it too.
"""

from __future__ import annotations

import os
from urllib.parse import quote, unquote_to_bytes, urlsplit

REMOTE_PREFIX = "subsonic+"  # every location of a server's song starts with it: subsonic+http://, subsonic+https://
LOCAL_HOSTS = ("", "localhost")


def is_remote(path: str) -> bool:
    """Whether ``path`` is the location of a server's song (``recsys.library.remote``), not a local file."""
    return path.startswith(REMOTE_PREFIX)


def unquote_path(text: str) -> str:
    """A percent-encoded path (or path part of a URI) as a file name: bytes first, then ``os.fsdecode``."""
    if "%" not in text:
        return text
    return os.fsdecode(unquote_to_bytes(text))


def uri_to_path(uri: str | bytes) -> str | None:
    """The absolute local path a ``file:`` URI names; None for another scheme, another host or a relative path.

    Bytes (a Clementine BLOB) are decoded like a file name; the usual ``file:///...`` without ``%``, ``?`` or ``#``
    skips the URL parser (a player database holds a million of them).
    """
    if isinstance(uri, bytes):
        if uri.startswith(b"file:///") and b"%" not in uri and b"?" not in uri and b"#" not in uri:
            return os.fsdecode(uri[7:])
        uri = os.fsdecode(uri)
    if uri.startswith("file:///") and "%" not in uri and "?" not in uri and "#" not in uri:
        return uri[7:]
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file" or parts.netloc.lower() not in LOCAL_HOSTS:
        return None
    path = unquote_path(parts.path)
    return path if path.startswith("/") else None


def path_to_uri(path: str) -> str:
    """The ``file://`` URI of an absolute ``path`` (made absolute first), every byte outside the unreserved set and
    ``/`` percent-encoded: spaces, ``#``, ``%``, ``?``, quotes and non-UTF-8 bytes all survive the round trip."""
    if is_remote(path):  # a server's song: its location as it is (a player here cannot open it)
        return quote(path, safe="/:+")
    return "file://" + quote(os.fsencode(os.path.abspath(path)), safe="/")
