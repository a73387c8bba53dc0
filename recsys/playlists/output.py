"""What every playlist writer shares: the output guards (never write the player database, a music file or anything
in a music folder; replace only a playlist, and only with ``--force``), the text cleaning, and the atomic write.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from recsys.atomic import write_bytes_atomic
from recsys.errors import RecsysError
from recsys.library.track import is_under
from recsys.recommender.rank import RankedTrack

# Characters XML 1.0 cannot represent: C0 controls but tab/newline/CR, surrogates, and the two non-characters.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


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
        if is_under(real, top) or is_under(str(path), str(Path(folder).expanduser().absolute())):
            raise PlaylistWriteError(f"{path} is inside the music folder {folder}: recsys never writes there; "
                                     "choose another --out")
    # only a file of the same name can be the same file: a cheap suffix test first (100,000 files on a large library)
    base = os.path.basename(real)
    if any(name in inputs.files for name in names) or any(
            _same_file(real, f) for f in inputs.files if f.endswith(base) and os.path.basename(f) == base):
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
    text = xml_text(title)
    if head.startswith(b"#EXTM3U"):
        return f"\n#PLAYLIST:{text}\n".encode() in head
    return (_looks_like_playlist(path) and b"<creator>recsys</creator>" in head
            and f"<title>{escape(text)}</title>".encode() in head)


def xml_text(value: object) -> str:
    """Tag text made storable in XML 1.0 (the serializer escapes the rest)."""
    return _INVALID_XML.sub("", str(value))


def is_segment(track: RankedTrack) -> bool:
    """A track cut from a shared file (CUE sheet): its key carries its start (see library/track.make_key)."""
    return track.key != track.path or track.start_s > 0


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
