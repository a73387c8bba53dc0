"""Decode one crop of a track by seeking to it: mono, resampled with soxr, float32.

Only the crop is read, never the whole file, so decoding a 30 s window costs the same for a 3-minute song and a
10-hour recording, and memory stays bounded. soundfile (libsndfile) decodes what it can, sample-exact and fast; PyAV
(FFmpeg) decodes the rest (MP4/M4A: AAC, ALAC) and is the fallback whenever libsndfile errors or stops short (libsndfile
1.2.2 stops mid-file on some valid Opus files that FFmpeg decodes whole).

This module must not import torch: decode workers stay light.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

from recsys.config import CROP_POSITIONS as POSITIONS
from recsys.errors import RecsysError

# A crop may come out this much shorter than asked when a header's duration is an estimate (MP3 without a Xing
# header, codec padding) without being treated as a broken file.
_SHORT_TOLERANCE_S = 0.5
_SHORT_TOLERANCE_FRACTION = 0.02
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")


class DecodeError(RecsysError):
    """A file that cannot be decoded; the pipeline records it in the failures table and moves on."""


class TrackTooLong(DecodeError):
    """A track longer than the configured maximum: skipped on purpose, not a failure."""


class CropError(RecsysError, ValueError):
    """Impossible crop settings (a bad position or length): a configuration problem, not a file problem."""


@dataclass
class Clip:
    """A decoded crop. ``duration_s`` is the length of the whole track (the CUE segment when there is one)."""

    samples: np.ndarray
    sample_rate: int
    start_s: float
    duration_s: float
    decoder: str


def limit_decoder_threads() -> None:
    """Keep one worker process to one thread: BLAS/OpenMP pools and FFmpeg threads multiplied by the number of
    workers once oversubscribed the CPU four- to five-fold. Call once at the start of each worker process (PyAV
    decoders are opened single-threaded by :func:`load_crop` itself)."""
    for name in _THREAD_ENV:
        os.environ[name] = "1"


def crop_window(duration_s: float, crop_s: float, position: str = "center", seg_start_s: float = 0.0,
                seg_length_s: float | None = None) -> tuple[float, float]:
    """(start_s, length_s) of the crop inside the segment [seg_start_s, seg_start_s + seg_length_s) of a file of
    ``duration_s`` seconds (the segment runs to the end of the file when ``seg_length_s`` is None). A segment
    shorter than ``crop_s`` is used whole."""
    if position not in POSITIONS:
        raise CropError(f"unknown crop position {position!r}: set audio.crop_position to one of {', '.join(POSITIONS)}")
    if crop_s <= 0:
        raise CropError(f"crop length must be positive, got {crop_s:g} s: set audio.crop_seconds above 0")
    seg_start = min(max(0.0, seg_start_s), max(0.0, duration_s))
    available = max(0.0, duration_s - seg_start)
    seg_len = available if seg_length_s is None else min(max(0.0, seg_length_s), available)
    length = min(crop_s, seg_len)
    offset = {"center": (seg_len - length) / 2, "start": 0.0, "end": seg_len - length}[position]
    return seg_start + offset, length


def _segment_duration(duration_s: float, seg_start_s: float, seg_length_s: float | None) -> float:
    return seg_length_s if seg_length_s is not None else max(0.0, duration_s - seg_start_s)


def _check_length(path: Path, segment_s: float, max_duration_s: float) -> None:
    if max_duration_s > 0 and segment_s > max_duration_s:  # 0: no limit (audio.max_track_minutes)
        raise TrackTooLong(f"{path}: {segment_s / 60:.1f} min is longer than the {max_duration_s / 60:g} min limit; "
                           f"skipped (raise audio.max_track_minutes to include it)")


def _short(got: int, wanted: int, sample_rate: int) -> bool:
    missing = wanted - got
    return missing > max(_SHORT_TOLERANCE_S * sample_rate, _SHORT_TOLERANCE_FRACTION * wanted)


# ---- soundfile -------------------------------------------------------------------------------------------------------

class _Fallback(Exception):
    """libsndfile cannot do this file (unknown format, decode error, short read): let PyAV try."""


def _soundfile_duration(f: sf.SoundFile) -> float:
    # libsndfile reports an unknown length (MP3 without a usable header on some builds) as a huge or 0 frame count
    if f.samplerate <= 0 or f.frames <= 0 or f.frames >= 2**62:
        raise _Fallback("unknown length")
    return f.frames / f.samplerate


def _soundfile_probe(path: Path) -> float:
    try:
        with sf.SoundFile(path) as f:
            return _soundfile_duration(f)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise _Fallback(str(exc)) from exc


def _soundfile_crop(path: Path, crop_s: float, position: str, seg_start_s: float, seg_length_s: float | None,
                    max_duration_s: float) -> tuple[np.ndarray, int, float, float]:
    try:
        with sf.SoundFile(path) as f:
            duration = _soundfile_duration(f)
            segment = _segment_duration(duration, seg_start_s, seg_length_s)
            _check_length(path, segment, max_duration_s)
            start, length = crop_window(duration, crop_s, position, seg_start_s, seg_length_s)
            first, wanted = round(start * f.samplerate), round(length * f.samplerate)
            if first:
                f.seek(first)
            data = f.read(wanted, dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise _Fallback(str(exc)) from exc
    if wanted == 0 or len(data) < wanted:
        raise _Fallback(f"short read: {len(data)} of {wanted} frames")
    return data.mean(axis=1, dtype=np.float32), rate, start, segment


# ---- PyAV ------------------------------------------------------------------------------------------------------------

def _open(path: Path) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream]:
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"{path}: not a readable audio file ({_first_line(exc)}); check or replace the file") from exc
    if not container.streams.audio:
        container.close()
        raise DecodeError(f"{path}: the file holds no audio stream; check or replace the file")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # a damaged header can leave FFmpeg without any codec for the stream
        container.close()
        raise DecodeError(f"{path}: the audio stream's codec is unknown (damaged header); check or replace the file")
    stream.codec_context.thread_count = 1  # FFmpeg threads per worker oversubscribed the CPU before
    stream.codec_context.thread_type = "NONE"
    return container, stream


def _pyav_duration(path: Path, container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    raise DecodeError(f"{path}: the file states no duration (header missing or corrupt); re-encode the file")


def _planar(frame: av.AudioFrame) -> np.ndarray:
    """The frame as float32 (channels, samples), whatever FFmpeg's sample format."""
    x = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_packed:
        x = x.reshape(-1, channels).T
    if x.dtype.kind == "u":  # 8-bit PCM is unsigned, centred on 128
        return (x.astype(np.float32) - 128.0) / 128.0
    if x.dtype.kind == "i":
        return x.astype(np.float32) / float(2 ** (8 * x.dtype.itemsize - 1))
    return x.astype(np.float32, copy=False)


def _pyav_crop(path: Path, crop_s: float, position: str, seg_start_s: float, seg_length_s: float | None,
               max_duration_s: float) -> tuple[np.ndarray, int, float, float]:
    container, stream = _open(path)
    with container:
        duration = _pyav_duration(path, container, stream)
        segment = _segment_duration(duration, seg_start_s, seg_length_s)
        _check_length(path, segment, max_duration_s)
        start, length = crop_window(duration, crop_s, position, seg_start_s, seg_length_s)
        rate = stream.codec_context.sample_rate or stream.rate
        if not rate:
            raise DecodeError(f"{path}: the audio stream states no sample rate; re-encode the file")
        wanted = round(length * rate)
        time_base = stream.time_base or Fraction(1, rate)
        origin = float(stream.start_time * time_base) if stream.start_time and stream.start_time > 0 else 0.0
        try:
            if start > 0:
                container.seek(int((start + origin) / time_base), backward=True, any_frame=False, stream=stream)
            chunks = _decode_from(container, stream, start + origin, wanted, rate)
        except av.FFmpegError as exc:
            raise DecodeError(f"{path}: corrupt audio data ({_first_line(exc)}); re-encode or replace the file") \
                from exc
    got = sum(c.shape[1] for c in chunks)
    if got == 0:
        raise DecodeError(f"{path}: no audio could be decoded at {start:.1f} s; the file is corrupt or truncated")
    if _short(got, wanted, rate):
        raise DecodeError(f"{path}: audio ends at {start + got / rate:.1f} s but the header says {duration:.1f} s; "
                          f"the file is truncated or corrupt, replace it")
    samples = np.concatenate(chunks, axis=1)[:, :wanted]
    return samples.mean(axis=0, dtype=np.float32), rate, start, segment


def _decode_from(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, start_s: float,
                 wanted: int, rate: int) -> list[np.ndarray]:
    """Decode from the seek point until ``wanted`` samples from ``start_s`` on are in hand (never to EOF without
    need), dropping the samples before ``start_s`` by each frame's timestamp."""
    chunks: list[np.ndarray] = []
    got = 0
    position = None  # seconds at the next frame's first sample, when frames carry no timestamp
    for frame in container.decode(stream):
        if frame.pts is not None and frame.time_base:
            position = float(frame.pts * frame.time_base)
        elif position is None:
            position = 0.0
        x = _planar(frame)
        skip = max(0, round((start_s - position) * rate))
        position += x.shape[1] / rate
        if skip >= x.shape[1]:
            continue
        if skip > 0:
            x = x[:, skip:]
        chunks.append(x)
        got += x.shape[1]
        if got >= wanted:
            break
    return chunks


# ---- public ----------------------------------------------------------------------------------------------------------

@contextmanager
def _decoder_stderr_silenced() -> Iterator[None]:
    """libmpg123 (inside libsndfile) prints its own "Note: Illegal Audio-MPEG-Header" lines straight to file
    descriptor 2, past Python; what it has to say reaches the user as the file's one-line failure instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _first_line(exc: BaseException) -> str:
    """The reason an exception gives, for a person: FFmpeg's own text without its errno and the file name it repeats
    (FFmpeg reports some damaged FLAC data as EPERM, which reads like a permission problem: it is not)."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        if exc.errno == errno.EPERM:
            return "the decoder rejected the data"
        return str(exc.strerror)
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read the file ({exc.strerror or exc}); check that it exists") from exc
    if not path.is_file():
        raise DecodeError(f"{path}: not a regular file; point the library at audio files")
    if size == 0:
        raise DecodeError(f"{path}: the file is empty (0 bytes); replace it")


def probe_duration(path: str | Path) -> float:
    """The file's duration in seconds from its header (an estimate where the header has none, e.g. MP3 without a
    Xing header). Raises DecodeError when the file is not readable audio."""
    path = Path(path)
    _check_file(path)
    try:
        with _decoder_stderr_silenced():
            return _soundfile_probe(path)
    except _Fallback:
        container, stream = _open(path)
        with container:
            return _pyav_duration(path, container, stream)


def load_crop(path: str | Path, sample_rate: int, crop_s: float = 30.0, position: str = "center",
              seg_start_s: float = 0.0, seg_length_s: float | None = None,
              max_duration_s: float = 900.0) -> Clip:
    """Decode the crop chosen by :func:`crop_window` (mono = mean of channels, resampled to ``sample_rate``).

    Raises TrackTooLong when the track (the segment when given) is longer than ``max_duration_s``, and DecodeError
    with a one-line message for anything that is not decodable audio.
    """
    path = Path(path)
    crop_window(1.0, crop_s, position)  # bad settings fail as settings, before any file is blamed
    _check_file(path)
    try:
        with _decoder_stderr_silenced():
            mono, rate, start, segment = _soundfile_crop(path, crop_s, position, seg_start_s, seg_length_s,
                                                         max_duration_s)
        decoder = "soundfile"
    except _Fallback:
        mono, rate, start, segment = _pyav_crop(path, crop_s, position, seg_start_s, seg_length_s, max_duration_s)
        decoder = "pyav"
    if not np.isfinite(mono).all():
        raise DecodeError(f"{path}: the audio holds NaN or infinite samples; re-encode or replace the file")
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32, copy=False)
    return Clip(samples=np.ascontiguousarray(mono), sample_rate=sample_rate, start_s=start, duration_s=segment,
                decoder=decoder)
