"""Playlist files: XSPF version 1 (default) and extended M3U (``m3u8``), written atomically.

XSPF ``location`` is a ``file://`` URI with the path's bytes percent-encoded (spaces, '#', '%', '&', quotes, non-Latin
names), so it resolves back to exactly the file. Tag text is XML-escaped by the serializer after the characters XML 1.0
cannot hold at all (control characters, lone surrogates from undecodable tags, U+FFFE/U+FFFF) are stripped.

Known player quirks (seen with Clementine 1.4 rc2, Strawberry 1.0.14, VLC 3.0.24): Strawberry drops XSPF tracks whose
file name holds '#' even when it is percent-encoded (it reads them from M3U8); VLC reads an M3U8 path only up to a '#'
or '?' (it opens such names from XSPF). The files are correct; the other format is the way round.

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
import stat
from collections.abc import Collection, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Inputs:
    """What recsys reads and must never write, not even with --force: the player database (and its side files),
    the music folders scanned, and every music file of the library."""

    db: str | Path | None = None
    folders: Sequence[str | Path] = ()
    files: Collection[str] = ()


DB_SIDE_FILES = ("", "-wal", "-shm", "-journal")
_SNIFF_BYTES = 4096


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _looks_like_playlist(path: Path) -> bool:
    """An XSPF or M3U file (anyone's): the only kind of file --force may replace."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"#EXTM3U") or (text.startswith(b"<") and b"<playlist" in head)


def check_output(path: Path, inputs: Inputs | None = None, overwrite: bool = False) -> None:
    """Refuse an output path that is one of recsys's inputs, lies inside a music folder, is anything but a regular
    file (a device, FIFO, folder or symbolic link), or exists and is not a playlist; and, without ``overwrite``, any
    existing file. Why: ``--out clementine.db --force`` once replaced the player database with a playlist."""
    inputs = inputs or Inputs()
    real = os.path.realpath(path)
    names = {str(path), real}
    if inputs.db:
        db = Path(inputs.db).expanduser().absolute()
        for suffix in DB_SIDE_FILES:
            side = f"{db}{suffix}"
            if names & {side, os.path.realpath(side)} or _same_file(real, side):
                raise PlaylistWriteError(f"{path} is the player database{' ' + suffix[1:] + ' file' if suffix else ''}"
                                         ": recsys never writes it; choose another --out")
    for folder in inputs.folders:
        top = os.path.realpath(Path(folder).expanduser())
        if _is_under(real, top) or _is_under(str(path), str(Path(folder).expanduser().absolute())):
            raise PlaylistWriteError(f"{path} is inside the music folder {folder}: recsys never writes there; "
                                     "choose another --out")
    if names & set(inputs.files) or any(_same_file(real, f) for f in inputs.files
                                        if os.path.basename(f) == os.path.basename(real)):
        raise PlaylistWriteError(f"{path} is a music file of your library: recsys never writes it; "
                                 "choose another --out")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError:
        return  # an unreachable parent: the write reports it
    if stat.S_ISLNK(st.st_mode):
        raise PlaylistWriteError(f"{path} is a symbolic link: give the playlist file itself to --out")
    if not stat.S_ISREG(st.st_mode):
        raise PlaylistWriteError(f"{path} is not a regular file (a folder, device, FIFO or socket): "
                                 "choose another --out")
    if not overwrite:
        raise PlaylistWriteError(f"{path} exists: pass --force or choose another --out")
    if not _looks_like_playlist(path):
        raise PlaylistWriteError(f"{path} exists and is not a playlist: --force only replaces XSPF or M3U files; "
                                 "choose another --out")


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
    for t in tracks:
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
            # no <vlc:id>: VLC appends the tracks that have one after all the others, out of the playlist's order
            ext = sub(el, "extension")
            ext.set("application", VLC_APP)
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
                   creator: str = "recsys", inputs: Inputs | None = None) -> Path:
    """Write ``tracks`` as a playlist file at ``path`` (folders created) and return its absolute path; ``inputs``
    are never written (see :func:`check_output`)."""
    if fmt not in FORMATS:
        raise PlaylistWriteError(f"unknown playlist format {fmt!r}: choose one of {', '.join(FORMATS)}")
    path = Path(path).expanduser().absolute()
    check_output(path, inputs, overwrite)
    data = _xspf_bytes(tracks, title, creator) if fmt == "xspf" else _m3u_bytes(tracks)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)  # readers never see a partial playlist
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PlaylistWriteError(f"cannot write playlist {path} ({reason}): choose a writable folder with --out") \
            from None
    return path
