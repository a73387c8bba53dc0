"""Folder scan: every audio file under the music folders, recognised by content, with its tags.

A file is audio when its first bytes say so (a WAV named .mp3 is audio; a text file named .mp3 is not). Problems
with one file or folder are recorded and the scan goes on; only a music folder that does not exist stops it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import mutagen

from recsys.errors import RecsysError
from recsys.library.reading import ReadDeadline, ReadTimeout, may_open
from recsys.library.track import Track


class ScanError(RecsysError):
    """A music folder that cannot be scanned at all; the message names it."""


@dataclass
class ScanResult:
    tracks: list[Track]
    errors: list[tuple[str, str]]  # (path, one-line reason), sorted by path


# Extensions that promise audio: such a file whose content is not audio is reported, other non-audio files
# (covers, playlists, CUE sheets, notes) are ignored silently.
AUDIO_EXTENSIONS = frozenset({
    ".mp3", ".mp2", ".flac", ".ogg", ".oga", ".opus", ".wav", ".aif", ".aiff", ".aifc", ".m4a", ".m4b", ".mp4",
})
_HEAD_BYTES = 64
_PROGRESS_EVERY = 50
# Easy-tag keys (mutagen easy=True) and the ID3 frames that hold the same thing, for formats without an easy
# interface (WAV and AIFF carry ID3 chunks).
_TAGS = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "albumartist": "TPE2", "genre": "TCON",
         "date": "TDRC", "tracknumber": "TRCK"}


def _mpeg_frame(head: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, a valid layer, bitrate and sample-rate index.

    ADTS (raw AAC) shares the sync bits but has layer 00, so it is not taken for MP3.
    """
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0x3, (head[1] >> 1) & 0x3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0x3
    return version != 1 and layer != 0 and bitrate != 0xF and rate != 3


# kbit/s by bitrate index, for (MPEG-1?, layer bits); sample rates by version bits: what a frame's length follows from
_KBPS = {
    (True, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_frame_length(head: bytes) -> int:
    """Bytes of the MPEG audio frame whose (valid) header starts ``head``; 0 for free format (no length stated)."""
    version, layer = (head[1] >> 3) & 0x3, (head[1] >> 1) & 0x3
    kbps = _KBPS[(version == 3, layer)][head[2] >> 4]
    rate, padding = _RATES[version][(head[2] >> 2) & 0x3], (head[2] >> 1) & 0x1
    if layer == 3:  # layer I: 4-byte slots
        return (12 * kbps * 1000 // rate + padding) * 4
    return (144 if version == 3 or layer == 2 else 72) * kbps * 1000 // rate + padding


def _mpeg_stream(f: BinaryIO, head: bytes) -> bool:
    """Whether ``head`` starts MPEG audio: a valid frame header; for layer I, another where that frame ends. A UTF-16
    text file starts 0xFF 0xFE, a valid MPEG-1 layer I header for many first characters, and layer I audio is all
    but extinct; a layer II/III header alone still counts, so a damaged MP3 is reported by the decoder as damaged."""
    if not _mpeg_frame(head):
        return False
    if (head[1] >> 1) & 0x3 != 3:  # layer II or III
        return True
    length = _mpeg_frame_length(head)
    if length == 0:
        return True
    f.seek(length)
    following = f.read(4)
    return _mpeg_frame(following)


def sniff_audio(path: Path) -> str | None:
    """The audio format by content (magic bytes): 'flac', 'mp3', 'ogg', 'wav', 'aiff', 'mp4', or None.

    An ID3v2 tag in front is skipped and what follows decides (ID3-tagged FLAC exists); raises OSError when the file
    cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
        if head[:3] == b"ID3" and len(head) >= 10:
            size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
            footer = 10 if head[5] & 0x10 else 0
            f.seek(10 + size + footer)
            after = f.read(_HEAD_BYTES)
            if after[:4] == b"fLaC":
                return "flac"
            return "mp3"  # an ID3v2 tag is an MP3 convention; the decoder finds the first frame after it
        if _mpeg_stream(f, head):
            return "mp3"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[4:8] == b"ftyp":
        return "mp4"
    return None


def _first(tags: object, easy_key: str) -> str:
    """The first value of a tag, whatever shape the format's tag object gives it; '' when absent."""
    if tags is None:
        return ""
    for key in (easy_key, _TAGS[easy_key]):
        try:
            value = tags[key]  # type: ignore[index]
        except (KeyError, ValueError, TypeError):
            continue
        if hasattr(value, "text"):  # an ID3 frame
            value = value.text
        if isinstance(value, (list, tuple)):
            value = value[0] if value else ""
        return str(value).strip()
    return ""


def _leading_int(text: str) -> int | None:
    """'2004-05-01' -> 2004, '3/12' -> 3; None when no positive number leads."""
    digits = ""
    for ch in text.strip():
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits and int(digits) > 0 else None


def read_track(path: str) -> Track:
    """A Track for one audio file with whatever tags mutagen can read; a file whose tags fail keeps empty tags.
    Raises :class:`ReadTimeout` when a deadline (:class:`ReadDeadline`) cuts the read."""
    try:
        audio = mutagen.File(path, easy=True)
    except ReadTimeout:
        raise
    except Exception:  # noqa: BLE001 -- mutagen raises many types on damaged tags; the audio may still play
        audio = None
    if audio is None:
        return Track(path=path)
    tags = audio.tags
    length = getattr(getattr(audio, "info", None), "length", None)
    return Track(
        path=path,
        length_s=float(length) if length and length > 0 else None,
        title=_first(tags, "title"),
        artist=_first(tags, "artist"),
        album=_first(tags, "album"),
        albumartist=_first(tags, "albumartist"),
        genre=_first(tags, "genre"),
        year=_leading_int(_first(tags, "date")),
        track_number=_leading_int(_first(tags, "tracknumber")),
    )


class _Walker:
    """Depth-first walk in name order, following directory symlinks but entering each directory (and taking each
    file) once, by (st_dev, st_ino): symlink loops and overlapping music folders cost nothing."""

    def __init__(self, progress: Callable[[int], None] | None, deadline: ReadDeadline) -> None:
        self.deadline = deadline
        self.seen_dirs: set[tuple[int, int]] = set()
        self.seen_files: set[tuple[int, int]] = set()
        self.audio: list[str] = []
        self.errors: list[tuple[str, str]] = []
        self.progress = progress

    def walk(self, folder: str) -> None:
        stack = [folder]
        while stack:
            current = stack.pop()
            try:
                st = os.stat(current)
                if (st.st_dev, st.st_ino) in self.seen_dirs:
                    continue
                self.seen_dirs.add((st.st_dev, st.st_ino))
                with os.scandir(current) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except PermissionError:
                self.errors.append((current, "cannot read folder: permission denied"))
                continue
            except FileNotFoundError:
                self.errors.append((current, "folder vanished during the scan"))
                continue
            except OSError as exc:
                self.errors.append((current, f"cannot read folder: {exc.strerror or exc}"))
                continue
            subdirs = []
            for entry in entries:
                if self._is_dir(entry):
                    subdirs.append(entry.path)
                else:
                    self._file(entry)
            stack.extend(reversed(subdirs))  # pop() then visits them in name order

    def _is_dir(self, entry: os.DirEntry) -> bool:
        try:
            return entry.is_dir()  # follows symlinks; loops are stopped by seen_dirs
        except OSError:
            return False

    def _file(self, entry: os.DirEntry) -> None:
        promised = os.path.splitext(entry.name)[1].lower() in AUDIO_EXTENSIONS
        try:
            st = entry.stat()
            if not stat.S_ISREG(st.st_mode):  # a FIFO or device: never opened (it would block), never audio
                return
            if (st.st_dev, st.st_ino) in self.seen_files:
                return
            if not may_open(st):  # empty, or a pseudo-file like /proc/kmsg (size 0, and its read blocks)
                if promised:
                    self.errors.append((entry.path, "the file is empty (0 bytes)"))
                return
            fmt = self.deadline.read(entry.path, sniff_audio, Path(entry.path))
        except FileNotFoundError:
            if promised:
                reason = "broken symlink" if entry.is_symlink() else "file vanished during the scan"
                self.errors.append((entry.path, reason))
            return
        except OSError as exc:
            if promised:
                self.errors.append((entry.path, f"cannot read file: {exc.strerror or exc}"))
            return
        if fmt is None:
            if promised:
                self.errors.append((entry.path, "not audio (its content is no known audio format)"))
            return
        self.seen_files.add((st.st_dev, st.st_ino))
        self.audio.append(entry.path)
        if self.progress is not None and len(self.audio) % _PROGRESS_EVERY == 0:
            self.progress(len(self.audio))


def scan_folders(folders: Sequence[str | Path], progress: Callable[[int], None] | None = None) -> ScanResult:
    """Every audio file under ``folders`` as a Track (absolute paths, sorted by key), and the problems met.

    ``progress`` is called with the running count of audio files found, every few dozen files and once at the end.
    Raises ScanError when a folder does not exist or is not a folder.
    """
    roots = []
    for folder in folders:
        root = os.path.abspath(os.path.expanduser(os.fspath(folder)))
        if not os.path.exists(root):
            raise ScanError(f"music folder {root} does not exist: check --library")
        if not os.path.isdir(root):
            raise ScanError(f"music folder {root} is not a folder: give a folder to --library")
        roots.append(root)
    tracks = []
    with ReadDeadline() as deadline:
        walker = _Walker(progress, deadline)
        for root in sorted(set(roots)):  # a parent sorts before its subfolders, so overlaps keep the parent's paths
            walker.walk(root)
        for path in walker.audio:
            if not os.path.exists(path):
                walker.errors.append((path, "file vanished during the scan"))
                continue
            try:
                tracks.append(deadline.read(path, read_track, path))
            except ReadTimeout as exc:
                walker.errors.append((path, f"cannot read file: {exc.strerror}"))
    if progress is not None:
        progress(len(walker.audio))
    return ScanResult(sorted(tracks, key=lambda t: t.key), sorted(walker.errors))
