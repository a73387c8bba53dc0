"""What every playlist writer shares: the entry it writes (:class:`PlaylistEntry`), the output guards (never write
the player database, a music file or anything in a music folder; replace only a playlist, and only with ``--force``),
the text cleaning, and the atomic write.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from recsys.atomic import write_bytes_atomic
from recsys.errors import RecsysError
from recsys.guard import Inputs, check_destination
from recsys.library.track import Labelled

# Characters XML 1.0 cannot represent: C0 controls but tab/newline/CR, surrogates, and the two non-characters.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class PlaylistEntry(Labelled):
    """One track of a playlist file as every writer takes it, whatever chose it (a ranking, a song path, the
    nearest neighbours): the writers know nothing of the recommender. ``annotation`` is the line saying why the
    track is there (XSPF's ``<annotation>``; empty: none). A server's playlist takes less of a track:
    ``recsys.servers.PushEntry``."""

    key: str  # the track key (``library/track.make_key``)
    path: str  # the file the player opens (a server's location for a remote song)
    start_s: float  # where the track starts in its file (a CUE segment), else 0
    artist: str
    title: str
    album: str
    track_number: int | None
    duration_s: float | None
    annotation: str = ""

    @property
    def segment(self) -> bool:
        """A track cut from a shared file (CUE sheet): its key carries its start (see library/track.make_key)."""
        return self.key != self.path or self.start_s > 0


class PlaylistWriteError(RecsysError):
    """The playlist file cannot be written where asked."""


_SNIFF_BYTES = 4096


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
    """The one write guard (:func:`recsys.guard.check_destination`) for a playlist: never one of recsys's inputs
    or inside a music folder, only a regular file, and an existing one only with ``overwrite`` and only a playlist.
    Why: ``--out clementine.db --force`` once replaced the player database with a playlist."""
    check_destination(path, inputs, recognise=_looks_like_playlist, what="a playlist",
                      replaceable="XSPF or M3U files", overwrite=overwrite, error=PlaylistWriteError)


def written_by_recsys(path: Path, title: str) -> bool:
    """Whether ``path`` is a regular file (not a link) holding a playlist recsys wrote under ``title``: an XSPF whose
    creator is recsys, or an M3U8 whose ``#PLAYLIST:`` line is the title (the default file name of the day, which
    the next playlist of that name may replace)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    from xml.sax.saxutils import escape  # imports urllib.request: only when an existing file is read

    text = xml_text(title)
    if head.startswith(b"#EXTM3U"):
        return f"\n#PLAYLIST:{text}\n".encode() in head
    return (_looks_like_playlist(path) and b"<creator>recsys</creator>" in head
            and f"<title>{escape(text)}</title>".encode() in head)


def xml_text(value: object) -> str:
    """Tag text made storable in XML 1.0 (the serializer escapes the rest)."""
    return _INVALID_XML.sub("", str(value))


def write_file(path: Path, data: bytes, inputs: Inputs | None = None, overwrite: bool = False) -> Path:
    """Write a playlist's bytes at ``path`` (folders created) after :func:`check_output`, atomically; returns the
    absolute path."""
    path = Path(path).expanduser().absolute()
    check_output(path, inputs, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)  # readers never see a partial playlist
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PlaylistWriteError(f"cannot write playlist {path} ({reason}): choose a writable folder with --out") \
            from None
    return path
