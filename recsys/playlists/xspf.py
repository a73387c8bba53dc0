"""XSPF version 1 playlists (the default format).

XSPF ``location`` is a ``file://`` URI with the path's bytes percent-encoded (spaces, '#', '%', '&', quotes, non-Latin
names), so it resolves back to exactly the file. Tag text is XML-escaped by the serializer after the characters XML 1.0
cannot hold at all (control characters, lone surrogates from undecodable tags, U+FFFE/U+FFFF) are stripped.

Known player quirks (seen with Clementine 1.4 rc2, Strawberry 1.0.14, VLC 3.0.24): Strawberry drops XSPF tracks whose
file name holds '#' even when it is percent-encoded (it reads them from M3U8); VLC reads an M3U8 path only up to a '#'
or '?' (it opens such names from XSPF). The files are correct; the other format is the way round.

CUE segments (tracks cut from one shared file) are addressed the way each player reads them (their playlist parsers,
read in their sources; README "CUE sheets" has the table):
- VLC: the range, as ``<vlc:option>start-time=..</vlc:option>`` / ``stop-time`` (M3U8: :mod:`recsys.playlists.m3u8`).
- Strawberry: ``<location>`` plus ``<trackNum>`` (XSPF): it looks the track up in its collection by file and CUE track
  number (``GetSongByUrlAndTrack``), which is what its own XSPF export writes.
- Clementine: its XSPF and M3U parsers look a file up with start 0 only, so every segment plays as the sheet's first
  track: no playlist file can address another one (play the .cue sheet in Clementine instead).
- MPD: addresses a segment as ``<sheet>.cue/trackNNNN`` relative to its own music_directory, which recsys does not
  know; MPD plays the whole file.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from xml.etree import ElementTree as ET

from recsys.library.uri import path_to_uri
from recsys.playlists.output import PlaylistEntry, xml_text

XSPF_NS = "http://xspf.org/ns/0/"
VLC_APP = "http://www.videolan.org/vlc/playlist/0"
VLC_NS = "http://www.videolan.org/vlc/playlist/ns/0/"


def encode(tracks: Sequence[PlaylistEntry], title: str, creator: str) -> bytes:
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
        sub(el, "location", path_to_uri(t.path))
        for tag, value in (("title", t.title), ("creator", t.artist), ("annotation", t.annotation),
                           ("album", t.album)):
            if value:
                sub(el, tag, value)
        if t.track_number is not None and t.track_number > 0:
            sub(el, "trackNum", int(t.track_number))
        if t.duration_s is not None and t.duration_s > 0:
            sub(el, "duration", int(round(t.duration_s * 1000)))
        if t.segment:  # VLC reads the range; Strawberry finds the CUE track by location + trackNum
            # no <vlc:id>: VLC appends the tracks that have one after all the others, out of the playlist's order
            ext = sub(el, "extension")
            ext.set("application", VLC_APP)
            sub(ext, "option", f"start-time={t.start_s:.3f}", ns=VLC_NS)
            if t.duration_s:
                sub(ext, "option", f"stop-time={t.start_s + t.duration_s:.3f}", ns=VLC_NS)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
