"""Extended M3U playlists in UTF-8 (``--format m3u8``), for players without XSPF.

The path is written as the file system's own bytes, so names that are not valid UTF-8 still resolve; a CUE segment
gets VLC's ``#EXTVLCOPT:start-time``/``stop-time`` lines (other players play the whole file).

Navidrome imports such a file (found in a library folder, or uploaded) line by line, in its
``core/playlists/parse_m3u.go``: ``#`` lines are skipped (``#PLAYLIST:`` names the playlist), a ``file://`` line is
percent-decoded, a relative path is taken from the playlist's folder, and an absolute path must lie inside one of its
library folders *as Navidrome sees them*, matched without case and in both Unicode normal forms. The absolute paths
written here are therefore imported as they are when Navidrome sees the music where recsys does; when it runs in a
container, every playlist command writes them in Navidrome's view (``navidrome.path_map`` backwards, in
``recsys.app.output.as_written``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from recsys.library.uri import is_remote
from recsys.playlists.output import PlaylistEntry, xml_text

# Every character that breaks a line to some reader (CR, LF, VT, FF, the file/group/record separators, NEL U+0085,
# U+2028, U+2029) and every other control character: a label is one line of the file.
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def encode(tracks: Sequence[PlaylistEntry], title: str = "", creator: str = "recsys") -> bytes:
    """The M3U8 file of ``tracks``; ``title`` as ``#PLAYLIST:`` (the name Navidrome gives an imported playlist;
    other players skip the line), ``creator`` has no place in the format."""
    lines = [b"#EXTM3U"] + ([f"#PLAYLIST:{_LINE_BREAKS.sub(' ', xml_text(title))}".encode()] if title else [])
    for t in tracks:
        seconds = int(round(t.duration_s)) if t.duration_s else -1
        label = _LINE_BREAKS.sub(" ", xml_text(t.label))
        # The path as the file system's own bytes: names that are not valid UTF-8 still resolve.
        lines.append(f"#EXTINF:{seconds},{label}".encode())
        if t.segment:  # one track of a CUE sheet: VLC plays just this range of the shared file
            lines.append(f"#EXTVLCOPT:start-time={t.start_s:.3f}".encode())
            if t.duration_s:
                lines.append(f"#EXTVLCOPT:stop-time={t.start_s + t.duration_s:.3f}".encode())
        lines.append(t.path.encode() if is_remote(t.path) else os.fsencode(os.path.abspath(t.path)))
    return b"\n".join(lines) + b"\n"
