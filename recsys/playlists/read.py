"""Reading playlists (XSPF, M3U, M3U8) back into local files and track keys: the seeds of ``--seed-playlist``.

Whatever a player or recsys itself wrote: XSPF ``<location>`` URIs (``file://``, percent-decoded from the bytes, so
any file name survives; relative locations resolved against the playlist's folder), M3U/M3U8 lines (absolute or
relative paths, ``file://`` URIs; ``#EXTINF`` and other comment lines skipped). A CUE segment written by recsys
(``vlc:option start-time=`` in XSPF, ``#EXTVLCOPT:start-time=`` in M3U8: see ``recsys.recommender.xspf``) reads
back to the same track key, ``path@start``.

An entry that is not a local file (an http stream) or whose file does not exist is reported in
``ReadPlaylist.problems`` and left out; only a file that cannot be read or parsed at all is an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from recsys.atomic import read_regular
from recsys.errors import RecsysError
from recsys.library.track import make_key
from recsys.library.uri import unquote_path, uri_to_path

XSPF_NS = "{http://xspf.org/ns/0/}"
VLC_NS = "{http://www.videolan.org/vlc/playlist/ns/0/}"
_START = re.compile(r"^start-time=([0-9.]+)$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


class PlaylistReadError(RecsysError):
    """The playlist file cannot be read or is not a playlist."""


@dataclass(frozen=True)
class Entry:
    """One playable entry: its file and, for a CUE segment, its start in seconds."""

    path: str
    start_s: float = 0.0
    segment: bool = False

    @property
    def key(self) -> str:
        """The track key (DESIGN.md) this entry names."""
        return make_key(self.path, self.start_s, self.segment)


@dataclass
class ReadPlaylist:
    path: Path
    entries: list[Entry]
    problems: list[str] = field(default_factory=list)  # 'entry 3: http://x is not a local file', ...


def _uri_path(uri: str, folder: Path) -> str | None:
    """The local path a location names: a ``file://`` URI, an absolute path, or a path relative to ``folder``."""
    if uri.startswith("file:"):
        return uri_to_path(uri)
    if _SCHEME.match(uri):
        return None  # http:, cdda:, smb: ... not a local file
    return os.path.normpath(os.path.join(folder, unquote_path(uri)))


def _read_xspf(data: bytes, folder: Path, where: Path) -> list[tuple[str, str | None, float | None]]:
    from xml.etree import ElementTree as ET  # only a playlist read needs it: not every `recsys playlist`'s start-up

    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise PlaylistReadError(f"{where} is not a valid XSPF playlist ({exc}): check the file or export it "
                                "again from your player") from None
    out = []
    for track in root.iter(f"{XSPF_NS}track"):
        location = track.findtext(f"{XSPF_NS}location", default="").strip()
        start = None
        for option in track.iter(f"{VLC_NS}option"):
            match = _START.match((option.text or "").strip())
            if match:
                start = float(match.group(1))
        out.append((location, _uri_path(location, folder) if location else None, start))
    return out


def _m3u_path(raw: bytes, folder: Path) -> str | None:
    line = raw.decode("utf-8", "surrogateescape")
    if _SCHEME.match(line):  # file:// (or a stream's URL); a drive letter 'C:' is too short to match
        return _uri_path(line, folder)
    path = os.fsdecode(raw)
    if not os.path.isabs(path):
        path = os.path.normpath(os.path.join(folder, path))
    if not os.path.exists(path):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:  # a Latin-1 .m3u from an older player on a UTF-8 file system
            legacy = raw.decode("latin-1")
            path = legacy if os.path.isabs(legacy) else os.path.normpath(os.path.join(folder, legacy))
    return path


def _read_m3u(data: bytes, folder: Path) -> list[tuple[str, str | None, float | None]]:
    out = []
    start = None
    for raw in data.removeprefix(b"\xef\xbb\xbf").splitlines():
        raw = raw.strip()
        if not raw:
            continue
        if raw.startswith(b"#"):
            match = re.match(rb"^#EXTVLCOPT:start-time=([0-9.]+)$", raw)
            if match:
                start = float(match.group(1))
            continue
        out.append((raw.decode("utf-8", "replace"), _m3u_path(raw, folder), start))
        start = None
    return out


MAX_BYTES = 256 << 20  # a playlist of a million tracks is well under this


def read_playlist(path: str | os.PathLike, exists=os.path.exists) -> ReadPlaylist:
    """The local tracks of the playlist at ``path`` (XSPF by content or extension, else M3U/M3U8), in order."""
    where = Path(path).expanduser().absolute()
    try:
        data = read_regular(where, MAX_BYTES)  # never a FIFO or device (reading one blocks forever)
    except OSError as exc:
        raise PlaylistReadError(f"cannot read playlist {where} ({exc.strerror or type(exc).__name__}): check the "
                                "path") from None
    head = data[:4096].removeprefix(b"\xef\xbb\xbf").lstrip()
    if b"\0" in head:
        raise PlaylistReadError(f"{where} is not a playlist (XSPF, M3U or M3U8): give one of those")
    is_xspf = where.suffix.lower() == ".xspf" or (head.startswith(b"<") and b"<playlist" in head)
    rows = _read_xspf(data, where.parent, where) if is_xspf else _read_m3u(data, where.parent)
    entries, problems = [], []
    for i, (written, local, start) in enumerate(rows, 1):
        if local is None:
            problems.append(f"entry {i}: {written or '(no location)'} is not a local file")
        elif not exists(local):
            problems.append(f"entry {i}: {local} does not exist")
        else:
            entries.append(Entry(local, start or 0.0, segment=start is not None))
    return ReadPlaylist(where, entries, problems)
