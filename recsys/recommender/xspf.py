"""Playlist files: XSPF version 1 (default) and extended M3U (``m3u8``), written atomically.

XSPF ``location`` is a ``file://`` URI with the path's bytes percent-encoded (spaces, '#', '%', '&', quotes, non-Latin
names), so it resolves back to exactly the file. Tag text is XML-escaped by the serializer after the characters XML 1.0
cannot hold at all (control characters, lone surrogates from undecodable tags, U+FFFE/U+FFFF) are stripped.

Known player quirk: Strawberry 1.0.14 drops tracks whose file name holds '#' even when it is percent-encoded; the file
is correct, nothing here can work around it.

CUE segments (tracks cut from one shared file) are addressed the way each player reads them (their playlist parsers,
read in their sources; README "CUE sheets" has the table):
- VLC: the range, as ``<vlc:option>start-time=..</vlc:option>`` / ``stop-time`` in XSPF and ``#EXTVLCOPT:`` lines
  in M3U8.
- Strawberry: ``<location>`` plus ``<trackNum>`` (XSPF): it looks the track up in its collection by file and CUE track
  number (``GetSongByUrlAndTrack``), which is what its own XSPF export writes.
- Clementine: its XSPF and M3U parsers look a file up with start 0 only, so every segment plays as the sheet's first
  track: no playlist file can address another one (play the .cue sheet in Clementine instead).
- MPD: addresses a segment as ``<sheet>.cue/trackNNNN`` relative to its own music_directory, which recsys does not
  know; MPD plays the whole file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree as ET

from recsys.atomic import write_bytes_atomic
from recsys.errors import RecsysError
from recsys.recommender.rank import RankedTrack

XSPF_NS = "http://xspf.org/ns/0/"
VLC_APP = "http://www.videolan.org/vlc/playlist/0"
VLC_NS = "http://www.videolan.org/vlc/playlist/ns/0/"
FORMATS = ("xspf", "m3u8")

# Characters XML 1.0 cannot represent: C0 controls but tab/newline/CR, surrogates, and the two non-characters.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_LINE_BREAKS = re.compile(r"[\r\n]+")


class PlaylistWriteError(RecsysError):
    """The playlist file cannot be written where asked."""


def file_uri(path: str) -> str:
    """The absolute ``file://`` URI of ``path``, every byte outside the unreserved set percent-encoded.

    Works from the path's bytes (``os.fsencode``), so names that are not valid UTF-8 survive the round trip too.
    """
    return "file://" + quote(os.fsencode(os.path.abspath(path)), safe="/")


def xml_text(value: object) -> str:
    """Tag text made storable in XML 1.0 (the serializer escapes the rest)."""
    return _INVALID_XML.sub("", str(value))


def _annotation(track: RankedTrack) -> str:
    parts = []
    if track.predicted is not None:
        parts.append(f"predicted {track.predicted * 5:.1f} stars")
    if track.because:
        parts.append("close to " + "; ".join(track.because))
    return ", ".join(parts) or f"score {track.score:.3f}"


def _is_segment(track: RankedTrack) -> bool:
    """A track cut from a shared file (CUE sheet): its key carries its start (see library/track.make_key)."""
    return track.key != track.path or track.start_s > 0


def _xspf_bytes(tracks: Sequence[RankedTrack], title: str, creator: str) -> bytes:
    ET.register_namespace("", XSPF_NS)
    ET.register_namespace("vlc", VLC_NS)

    def sub(parent: ET.Element, tag: str, text: object | None = None, ns: str = XSPF_NS) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ns}}}{tag}")
        if text is not None:
            element.text = xml_text(text)
        return element

    root = ET.Element(f"{{{XSPF_NS}}}playlist", {"version": "1"})
    sub(root, "title", title)
    sub(root, "creator", creator)
    sub(root, "date", datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"))
    track_list = sub(root, "trackList")
    for i, t in enumerate(tracks):
        el = sub(track_list, "track")
        sub(el, "location", file_uri(t.path))
        for tag, value in (("title", t.title), ("creator", t.artist), ("annotation", _annotation(t)),
                           ("album", t.album)):
            if value:
                sub(el, tag, value)
        if t.track_number is not None and t.track_number > 0:
            sub(el, "trackNum", int(t.track_number))
        if t.duration_s is not None and t.duration_s > 0:
            sub(el, "duration", int(round(t.duration_s * 1000)))
        if _is_segment(t):  # VLC reads the range; Strawberry finds the CUE track by location + trackNum
            ext = sub(el, "extension")
            ext.set("application", VLC_APP)
            sub(ext, "id", i, ns=VLC_NS)
            sub(ext, "option", f"start-time={t.start_s:.3f}", ns=VLC_NS)
            if t.duration_s:
                sub(ext, "option", f"stop-time={t.start_s + t.duration_s:.3f}", ns=VLC_NS)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _m3u_bytes(tracks: Sequence[RankedTrack]) -> bytes:
    lines = [b"#EXTM3U"]
    for t in tracks:
        seconds = int(round(t.duration_s)) if t.duration_s else -1
        label = _LINE_BREAKS.sub(" ", xml_text(t.label))
        # The path as the file system's own bytes: names that are not valid UTF-8 still resolve.
        lines.append(f"#EXTINF:{seconds},{label}".encode())
        if _is_segment(t):  # one track of a CUE sheet: VLC plays just this range of the shared file
            lines.append(f"#EXTVLCOPT:start-time={t.start_s:.3f}".encode())
            if t.duration_s:
                lines.append(f"#EXTVLCOPT:stop-time={t.start_s + t.duration_s:.3f}".encode())
        lines.append(os.fsencode(os.path.abspath(t.path)))
    return b"\n".join(lines) + b"\n"


def write_playlist(path: Path, tracks: Sequence[RankedTrack], title: str, fmt: str = "xspf", overwrite: bool = False,
                   creator: str = "recsys") -> Path:
    """Write ``tracks`` as a playlist file at ``path`` (folders created) and return its absolute path."""
    if fmt not in FORMATS:
        raise PlaylistWriteError(f"unknown playlist format {fmt!r}: choose one of {', '.join(FORMATS)}")
    path = Path(path).expanduser().absolute()
    if path.exists() and not overwrite:
        raise PlaylistWriteError(f"{path} exists: pass --force or choose another --out")
    data = _xspf_bytes(tracks, title, creator) if fmt == "xspf" else _m3u_bytes(tracks)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)  # readers never see a partial playlist
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PlaylistWriteError(f"cannot write playlist {path} ({reason}): choose a writable folder with --out") \
            from None
    return path
