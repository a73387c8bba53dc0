"""The one rule between ``file://`` URIs and local paths, both ways (the track key is the decoded path).

A URI's path is percent-decoded to BYTES, then to text with ``os.fsdecode``, exactly as a file name read from the
disk: ``file:///m/caf%C3%A9.flac`` is ``/m/café.flac``, and the Latin-1 ``file:///m/caf%E9.flac`` is
``/m/caf\\udce9.flac`` (a surrogate escape), the same key the player readers and the folder scan give that file.
Only local files are named: the host must be empty or ``localhost``; ``file://otherhost/...``, other schemes and
relative paths name no local file (None). :func:`path_to_uri` is the inverse (every byte outside the unreserved set
percent-encoded), so ``uri_to_path(path_to_uri(p)) == p`` for every absolute path.

A ``%00`` decodes to a NUL in the path, which names no file on any system: it is returned as it is, so the caller
reports that one row or entry (the player readers reject such paths per row); nothing here raises.

:func:`uri_to_paths` is the same rule for a whole column of locations at once (a player database holds a million):
one pass of array operations over their bytes instead of a parser call per row, equal to :func:`uri_to_path` row
for row, which still decodes any row out of the usual shape.

Standard library only at import (numpy is imported by :func:`uri_to_paths` when called): the player (MPRIS) and the
playlist readers use it too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from urllib.parse import quote, unquote_to_bytes, urlsplit

REMOTE_PREFIX = "subsonic+"  # every location of a server's song starts with it: subsonic+http://, subsonic+https://
LOCAL_HOSTS = ("", "localhost")
_UNPRINTABLE = bytes([*range(0x21), 0x7F])  # control bytes and space: the URL parser strips some of them
_UNPRINTABLE_BUT_NEWLINE = _UNPRINTABLE.replace(b"\n", b"")
_HEX_VALUE = [-1] * 256  # a byte's value as a hex digit (-1: none), as unquote_to_bytes reads them
for _value, _digit in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_digit] = _HEX_VALUE[bytes([_digit]).upper()[0]] = _value


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


def uri_to_paths(uris: Sequence[str | bytes | None]) -> list[str | None]:
    """``[uri_to_path(u) for u in uris]`` (None for a None), for a column of locations at once.

    The usual location -- ``file:///`` then printable ASCII without ``?`` or ``#``, the way Clementine and Strawberry
    store them, non-ASCII bytes and spaces as ``%XX`` -- is decoded in bulk: the rows joined by a newline (none of
    them holds one), every ``%XX`` escape replaced by its byte with array operations (an escape is ``%`` and two hex
    digits, as ``unquote_to_bytes`` reads it: escapes never overlap, and none spans two rows), the result decoded as
    file names once and cut at the row ends. Any other row goes through :func:`uri_to_path`.
    """
    import numpy as np

    out: list[str | None] = [None] * len(uris)
    try:
        rows, raw = list(range(len(uris))), list(uris)
        joined = b"\n".join(raw)  # bytes only (Clementine's BLOBs): no call per row
    except TypeError:  # text (Strawberry), None: ASCII text is its bytes
        rows, raw = [], []
        for i, uri in enumerate(uris):
            if type(uri) is str and uri.isascii():
                uri = uri.encode("ascii")
            if type(uri) is bytes:
                rows.append(i)
                raw.append(uri)
            elif uri is not None:
                out[i] = uri_to_path(uri)
        joined = b"\n".join(raw)
    if not rows:
        return out
    usual = _usual_rows(np, joined, raw)
    if not usual.all():
        for j in np.flatnonzero(~usual).tolist():
            out[rows[j]] = uri_to_path(raw[j])
        rows, raw = [rows[j] for j in np.flatnonzero(usual).tolist()], [raw[j] for j in np.flatnonzero(usual).tolist()]
        if not rows:
            return out
        joined = b"\n".join(raw)
    for i, path in zip(rows, _decode_usual(np, joined, len(rows)), strict=True):
        out[i] = path
    return out


def _usual_rows(np, joined: bytes, raw: list[bytes]):  # noqa: ANN001, ANN202 - numpy, imported by the caller
    """Which rows of ``joined`` (``raw`` joined by newlines) are usual locations, as a boolean array."""
    if joined.count(b"\n") != len(raw) - 1:  # some row holds a newline: judged one by one
        return np.array([uri.startswith(b"file:///") and uri.isascii() and b"?" not in uri and b"#" not in uri
                         and len(uri.translate(None, _UNPRINTABLE)) == len(uri) for uri in raw], bool)
    buf = np.frombuffer(joined, np.uint8)
    ends = np.append(np.flatnonzero(buf == 0x0A), len(buf))
    starts = np.append(0, ends[:-1] + 1)
    usual = ends - starts >= len(b"file:///")
    for k, byte in enumerate(b"file:///"):
        usual &= buf[np.minimum(starts + k, len(buf) - 1)] == byte
    # control bytes, space, DEL and above, '?' and '#' (the newline joins the rows): first asked of the whole
    # column at once (byte methods, no array), then row by row only where some row holds one
    if (joined.isascii() and b"?" not in joined and b"#" not in joined and b"\x7f" not in joined
            and len(joined.translate(None, _UNPRINTABLE_BUT_NEWLINE)) == len(joined)):
        return usual
    unusual = np.zeros(256, bool)
    unusual[[*range(0x21), *range(0x7F, 0x100), ord("?"), ord("#")]] = True
    unusual[0x0A] = False
    odd = np.flatnonzero(unusual[buf])
    usual[np.searchsorted(ends, odd, side="right")] = False  # the row of each odd byte
    return usual


def _decode_usual(np, joined: bytes, count: int) -> list[str]:  # noqa: ANN001 - numpy, imported by the caller
    """The paths of ``count`` usual locations joined by newlines."""
    buf = np.frombuffer(joined, np.uint8)
    ends = np.append(np.flatnonzero(buf == 0x0A), len(buf))
    keep = np.ones(len(buf), bool)
    starts = np.append(0, ends[:-1] + 1)
    keep[(starts[:, None] + np.arange(len(b"file://"))).ravel()] = False  # the path starts at the third '/'
    decoded = buf
    at = np.flatnonzero(buf[:-2] == ord("%"))  # a '%' with two bytes after it
    if len(at):
        hex_value = np.asarray(_HEX_VALUE, np.int16)
        high, low = hex_value[buf[at + 1]], hex_value[buf[at + 2]]
        escape = (high >= 0) & (low >= 0)
        at, high, low = at[escape], high[escape], low[escape]
        decoded = buf.copy()
        decoded[at] = (high * 16 + low).astype(np.uint8)
        keep[at + 1] = keep[at + 2] = False
    # each row's end in the decoded bytes: its prefixes and the escapes before it are shorter
    ends = ends - len(b"file://") * np.arange(1, count + 1) - 2 * np.searchsorted(at, ends)
    decoded = decoded[keep]
    data = decoded.tobytes()
    starts = np.append(0, ends[:-1] + 1)
    if sys.getfilesystemencoding() != "utf-8":
        return [os.fsdecode(data[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    try:
        text = data.decode("utf-8")  # every name UTF-8 (the usual case): one decode, then slices by character
    except UnicodeDecodeError:
        return [os.fsdecode(data[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    if len(text) != len(data):  # non-ASCII names: byte offsets to character offsets (less the continuation bytes)
        following = np.flatnonzero((decoded & 0xC0) == 0x80)
        starts, ends = starts - np.searchsorted(following, starts), ends - np.searchsorted(following, ends)
    return [text[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def path_to_uri(path: str) -> str:
    """The ``file://`` URI of an absolute ``path`` (made absolute first), every byte outside the unreserved set and
    ``/`` percent-encoded: spaces, ``#``, ``%``, ``?``, quotes and non-UTF-8 bytes all survive the round trip."""
    if is_remote(path):  # a server's song: its location as it is (a player here cannot open it)
        return quote(path, safe="/:+")
    return "file://" + quote(os.fsencode(os.path.abspath(path)), safe="/")
