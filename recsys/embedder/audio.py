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

from recsys.choices import CROP_POSITIONS as POSITIONS
from recsys.errors import RecsysError
from recsys.library import remote
from recsys.library.uri import is_remote

# A crop may come out this much shorter than asked when a header's duration is an estimate (MP3 without a Xing
# header, codec padding) without being treated as a broken file.
_SHORT_TOLERANCE_S = 0.5
_SHORT_TOLERANCE_FRACTION = 0.02
# What a crop may read: a header's sample rate or channel count beyond any real recording (a damaged or hostile
# header claiming 100 MHz once made a worker read a whole 512 MB file into 2.4 GB) is refused, and channels are mixed
# down in blocks of at most _READ_BYTES, so one crop holds at most crop_s x MAX_SAMPLE_RATE mono samples (92 MB for
# 30 s) plus one block. A block holds a whole stereo crop (up to 30 s at 48 kHz+): libsndfile's MP3 decoder shifts
# the audio between consecutive reads, so MP3 (stereo at most) is always read in one go.
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
_READ_BYTES = 16 * 2**20
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")


class DecodeError(RecsysError):
    """A file that cannot be decoded; the pipeline records it in the failures table and moves on."""


class ServerUnreachable(DecodeError):
    """A server's file could not be fetched (the server stopped, the network broke): not the file's fault, so not
    recorded as its failure; the next run tries it again."""


class TrackTooLong(DecodeError):
    """A track longer than the configured maximum: skipped on purpose, not a failure."""


class CropError(RecsysError, ValueError):
    """Impossible crop settings (a bad position or length): a configuration problem, not a file problem."""


@dataclass
class Clip:
    """A decoded crop: its excerpts joined end to end. ``start_s`` is where the first excerpt starts; ``duration_s``
    is the length of the whole track (the CUE segment when there is one)."""

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


def _segment_span(duration_s: float, seg_start_s: float, seg_length_s: float | None) -> tuple[float, float]:
    """(start_s, length_s) of the segment, clipped to the file."""
    seg_start = min(max(0.0, seg_start_s), max(0.0, duration_s))
    available = max(0.0, duration_s - seg_start)
    return seg_start, available if seg_length_s is None else min(max(0.0, seg_length_s), available)


def crop_window(duration_s: float, crop_s: float, position: str = "center", seg_start_s: float = 0.0,
                seg_length_s: float | None = None) -> tuple[float, float]:
    """(start_s, length_s) of the crop inside the segment [seg_start_s, seg_start_s + seg_length_s) of a file of
    ``duration_s`` seconds (the segment runs to the end of the file when ``seg_length_s`` is None). A segment
    shorter than ``crop_s`` is used whole."""
    if position not in POSITIONS:
        raise CropError(f"unknown crop position {position!r}: set audio.crop_position to one of {', '.join(POSITIONS)}")
    if crop_s <= 0:
        raise CropError(f"crop length must be positive, got {crop_s:g} s: set audio.crop_seconds above 0")
    seg_start, seg_len = _segment_span(duration_s, seg_start_s, seg_length_s)
    length = min(crop_s, seg_len)
    offset = {"center": (seg_len - length) / 2, "start": 0.0, "end": seg_len - length}[position]
    return seg_start + offset, length


def crop_windows(duration_s: float, crop_s: float, count: int = 1, position: str = "center",
                 seg_start_s: float = 0.0, seg_length_s: float | None = None) -> list[tuple[float, float]]:
    """The (start_s, length_s) excerpts a track is judged by: ``count`` excerpts of ``crop_s`` seconds each.

    One excerpt is :func:`crop_window` at ``position``. Several are spread through the segment, excerpt i centred at
    (i + 1) / (count + 1) of it (25, 50 and 75 % for three), so the vector hears the intro-free middle and also how
    the piece develops. A segment no longer than ``count * crop_s`` is one excerpt of that total length at
    ``position`` (all of it when shorter), so short tracks cost no more and repeat nothing.
    """
    if count < 1:
        raise CropError(f"crop count must be at least 1, got {count}: set audio.crop_count to 1 or more")
    if count == 1:
        return [crop_window(duration_s, crop_s, position, seg_start_s, seg_length_s)]
    seg_start, seg_len = _segment_span(duration_s, seg_start_s, seg_length_s)
    if seg_len <= crop_s * count:
        return [crop_window(duration_s, crop_s * count, position, seg_start_s, seg_length_s)]
    windows = []
    for i in range(count):
        centre = seg_start + seg_len * (i + 1) / (count + 1)
        first = min(max(seg_start, centre - crop_s / 2), seg_start + seg_len - crop_s)
        windows.append((first, crop_s))
    return windows


def _segment_duration(duration_s: float, seg_start_s: float, seg_length_s: float | None) -> float:
    return seg_length_s if seg_length_s is not None else max(0.0, duration_s - seg_start_s)


def _check_length(path: Source, segment_s: float, max_duration_s: float) -> None:
    if max_duration_s > 0 and segment_s > max_duration_s:  # 0: no limit (audio.max_track_minutes)
        raise TrackTooLong(f"{path}: {segment_s / 60:.1f} min is longer than the {max_duration_s / 60:g} min limit; "
                           f"skipped (raise audio.max_track_minutes to include it)")


def _check_segment(path: Source, duration_s: float, seg_start_s: float) -> None:
    """A CUE segment that starts at or after the file's end has no audio: say so, rather than blame the file."""
    if seg_start_s > 0 and seg_start_s >= duration_s:
        raise DecodeError(f"{path}: the CUE segment starting at {seg_start_s:.3f} s lies after the end of the file "
                          f"({duration_s:.1f} s): the CUE sheet does not match this file, fix it and rescan it in the "
                          "player")


def _check_format(path: Source, rate: int, channels: int) -> None:
    if rate > MAX_SAMPLE_RATE:
        raise DecodeError(f"{path}: the header claims {rate} Hz, beyond the {MAX_SAMPLE_RATE} Hz of any real "
                          "recording (a damaged header); re-encode or replace the file")
    if channels > MAX_CHANNELS:
        raise DecodeError(f"{path}: the header claims {channels} channels, beyond the {MAX_CHANNELS} recsys reads "
                          "(a damaged header?); re-encode or replace the file")


def _short(got: int, wanted: int, sample_rate: int) -> bool:
    missing = wanted - got
    return missing > max(_SHORT_TOLERANCE_S * sample_rate, _SHORT_TOLERANCE_FRACTION * wanted)


Source = Path | remote.RemoteFile  # a local file, or a server's file read by Range requests (str(): its location)


def _input(path: Source) -> str | remote.RemoteFile:
    """What soundfile and PyAV open: the local file's name, or the server's file rewound (one cache for every
    handle opened on it, so the header is fetched once)."""
    if isinstance(path, remote.RemoteFile):
        path.seek(0)
        return path
    return str(path)


@contextmanager
def _opened(path: str | Path) -> Iterator[Source]:
    """``path`` ready for decoding: a local Path (checked), or a server's location opened over HTTP, closed after."""
    if not is_remote(str(path)):
        _check_file(Path(path))
        yield Path(path)
        return
    try:
        source = remote.open_remote(str(path))
    except OSError as exc:
        raise ServerUnreachable(f"{path}: cannot read it from its server "
                                f"({_first_line(exc).removeprefix(f'{path}: ')}); check that the server runs") from None
    with source:
        try:
            yield source
        except (OSError, DecodeError) as exc:  # the transfer broke inside a decoder, which may call it corrupt data
            if source.broken is None and not isinstance(exc, OSError):
                raise
            broken = source.broken or exc
            raise ServerUnreachable(f"{path}: {_first_line(broken).removeprefix(f'{path}: ')}; run recsys embed "
                                    "again") from None


# ---- soundfile -------------------------------------------------------------------------------------------------------

class _Fallback(Exception):
    """libsndfile cannot do this file (unknown format, decode error, short read): let PyAV try."""


def _soundfile_duration(f: sf.SoundFile) -> float:
    # libsndfile reports an unknown length (MP3 without a usable header on some builds) as a huge or 0 frame count
    if f.samplerate <= 0 or f.frames <= 0 or f.frames >= 2**62:
        raise _Fallback("unknown length")
    return f.frames / f.samplerate


def _soundfile_probe(path: Source) -> float:
    try:
        with sf.SoundFile(_input(path)) as f:
            return _soundfile_duration(f)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise _Fallback(str(exc)) from exc


def _soundfile_read(path: Source, start: float, length: float) -> tuple[np.ndarray, int]:
    """One excerpt, mono: a fresh handle seeks to ``start`` and reads ``length`` seconds block by block (a
    many-channel file never sits whole in memory). A fresh handle per excerpt because libsndfile 1.2.2 returns the
    wrong samples for an Ogg Vorbis seek a little ahead of where the previous read ended (measured: 5-7 s read, then
    a seek to 8 s)."""
    with sf.SoundFile(_input(path)) as f:
        rate = f.samplerate
        _check_format(path, rate, f.channels)
        first, wanted = round(start * rate), round(length * rate)
        if first:
            f.seek(first)
        mono = np.empty(wanted, np.float32)
        got = 0
        block_frames = max(1, _READ_BYTES // (4 * f.channels))
        while got < wanted:
            block = f.read(min(block_frames, wanted - got), dtype="float32", always_2d=True)
            if not len(block):
                break
            mono[got:got + len(block)] = block.mean(axis=1, dtype=np.float32)
            got += len(block)
    if wanted == 0 or got < wanted:
        raise _Fallback(f"short read: {got} of {wanted} frames")
    return mono, rate


def _soundfile_crop(path: Source, crop_s: float, count: int, position: str, seg_start_s: float,
                    seg_length_s: float | None, max_duration_s: float) -> tuple[np.ndarray, int, float, float]:
    try:
        with sf.SoundFile(_input(path)) as f:
            duration = _soundfile_duration(f)
        _check_segment(path, duration, seg_start_s)
        segment = _segment_duration(duration, seg_start_s, seg_length_s)
        _check_length(path, segment, max_duration_s)
        windows = crop_windows(duration, crop_s, count, position, seg_start_s, seg_length_s)
        parts = [_soundfile_read(path, start, length) for start, length in windows]
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise _Fallback(str(exc)) from exc
    mono = parts[0][0] if len(parts) == 1 else np.concatenate([p for p, _ in parts])
    return mono, parts[0][1], windows[0][0], segment


# ---- PyAV ------------------------------------------------------------------------------------------------------------

def _open(path: Source) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream]:
    try:
        container = av.open(_input(path), metadata_errors="ignore")
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


def _pyav_duration(path: Source, container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float:
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


def _pyav_crop(path: Source, crop_s: float, count: int, position: str, seg_start_s: float,
               seg_length_s: float | None, max_duration_s: float,
               ffmpeg_mono: bool = False) -> tuple[np.ndarray, int, float, float]:
    container, stream = _open(path)
    with container:
        duration = _pyav_duration(path, container, stream)
        _check_segment(path, duration, seg_start_s)
        segment = _segment_duration(duration, seg_start_s, seg_length_s)
        _check_length(path, segment, max_duration_s)
        rate = stream.codec_context.sample_rate or stream.rate
        if not rate:
            raise DecodeError(f"{path}: the audio stream states no sample rate; re-encode the file")
        _check_format(path, rate, stream.codec_context.channels or 1)
        time_base = stream.time_base or Fraction(1, rate)
        origin = float(stream.start_time * time_base) if stream.start_time and stream.start_time > 0 else 0.0
        windows = crop_windows(duration, crop_s, count, position, seg_start_s, seg_length_s)
        parts = [_pyav_window(path, container, stream, start, length, origin, rate, time_base, duration, ffmpeg_mono)
                 for start, length in windows]
    mono = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return mono, rate, windows[0][0], segment


def _pyav_window(path: Source, container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                 start: float, length: float, origin: float, rate: int, time_base: Fraction,
                 duration: float, ffmpeg_mono: bool = False) -> np.ndarray:
    """Seek to ``start`` and decode ``length`` seconds, mono float32 (``ffmpeg_mono``: by :func:`_decode_mixed`)."""
    wanted = round(length * rate)
    try:
        if start > 0:
            container.seek(int((start + origin) / time_base), backward=True, any_frame=False, stream=stream)
        chunks = (_decode_mixed if ffmpeg_mono else _decode_from)(container, stream, start + origin, wanted, rate)
    except av.FFmpegError as exc:
        raise DecodeError(f"{path}: corrupt audio data ({_first_line(exc)}); re-encode or replace the file") \
            from exc
    got = sum(len(c) for c in chunks)
    if got == 0:
        raise DecodeError(f"{path}: no audio could be decoded at {start:.1f} s; the file is corrupt or truncated")
    if _short(got, wanted, rate):
        raise DecodeError(f"{path}: audio ends at {start + got / rate:.1f} s but the header says {duration:.1f} s; "
                          f"the file is truncated or corrupt, replace it")
    return chunks[0][:wanted] if len(chunks) == 1 else np.concatenate(chunks)[:wanted]


def _decode_from(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, start_s: float,
                 wanted: int, rate: int) -> list[np.ndarray]:
    """Decode from the seek point until ``wanted`` samples from ``start_s`` on are in hand (never to EOF without
    need), dropping the samples before ``start_s`` by each frame's timestamp; each frame is mixed down to mono as it
    comes (memory: the crop's mono samples, whatever the channel count)."""
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
        chunks.append(x.mean(axis=0, dtype=np.float32))
        got += x.shape[1]
        if got >= wanted:
            break
    return chunks


_MIXED_FRAME = 32768  # samples per frame out of FFmpeg's resampler in _decode_mixed


def _decode_mixed(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, start_s: float,
                  wanted: int, rate: int) -> list[np.ndarray]:
    """:func:`_decode_from`, mixed down to mono float by FFmpeg's resampler (same rate: sample for sample) in frames
    of :data:`_MIXED_FRAME`, where the numpy conversion and mean of every decoded frame (1,000-4,000 a minute) cost
    as much as decoding it. Only the frames before ``start_s`` are dropped by their timestamps, and the start of the
    first one kept; what follows is taken as it comes."""
    mixer = av.AudioResampler(format="fltp", layout="mono", rate=rate, frame_size=_MIXED_FRAME)
    mono = np.empty(wanted + _MIXED_FRAME, dtype=np.float32)  # filled in place: no copy of the whole, no page faults
    got = fed = drop = 0
    position = None
    for frame in container.decode(stream):
        if not fed:
            if frame.pts is not None and frame.time_base:
                position = float(frame.pts * frame.time_base)
            elif position is None:
                position = 0.0
            drop = max(0, round((start_s - position) * rate))
            position += frame.samples / rate
            if drop >= frame.samples:
                continue
        for out in mixer.resample(frame):
            mono, got = _put(mono, got, out.to_ndarray()[0])
        fed += frame.samples
        if fed - drop >= wanted:
            break
    for out in mixer.resample(None):  # what the mixer still holds
        mono, got = _put(mono, got, out.to_ndarray()[0])
    return [mono[drop:got]] if got > drop else []


def _put(into: np.ndarray, at: int, x: np.ndarray) -> tuple[np.ndarray, int]:
    """``x`` copied into ``into`` from ``at`` on (a larger array when it does not fit), and where the next goes."""
    if at + len(x) > len(into):
        into = np.concatenate([into[:at], np.empty(max(len(x), len(into) // 2), dtype=np.float32)])
    into[at:at + len(x)] = x
    return into, at + len(x)


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
    with _opened(path) as source:
        try:
            with _decoder_stderr_silenced():
                return _soundfile_probe(source)
        except _Fallback:
            container, stream = _open(source)
            with container:
                return _pyav_duration(source, container, stream)


def load_crop(path: str | Path, sample_rate: int, crop_s: float = 30.0, position: str = "center",
              seg_start_s: float = 0.0, seg_length_s: float | None = None,
              max_duration_s: float = 900.0, count: int = 1, ffmpeg_mono: bool = False) -> Clip:
    """Decode the excerpts chosen by :func:`crop_windows`, joined end to end (mono = mean of channels, resampled
    to ``sample_rate``). Each excerpt is reached by seeking; nothing else of the file is decoded.

    ``ffmpeg_mono``: PyAV alone, each frame mixed down by FFmpeg's resampler (the fingerprints' whole-file decode:
    libsndfile decodes Ogg Opus at half PyAV's speed, and per frame the numpy mix-down costs as much as decoding).
    Not for the encoders: its samples differ from the default path's in the last bits (and for Opus, in the
    decoder), so their vectors would not be the ones already stored.

    Raises TrackTooLong when the track (the segment when given) is longer than ``max_duration_s``, and DecodeError
    with a one-line message for anything that is not decodable audio.
    """
    crop_windows(1.0, crop_s, count, position)  # bad settings fail as settings, before any file is blamed
    with _opened(path) as source:
        found = None
        if not ffmpeg_mono:
            try:
                with _decoder_stderr_silenced():
                    found = _soundfile_crop(source, crop_s, count, position, seg_start_s, seg_length_s,
                                            max_duration_s)
            except _Fallback:
                pass
        decoder = "soundfile" if found is not None else "pyav"
        if found is None:
            found = _pyav_crop(source, crop_s, count, position, seg_start_s, seg_length_s, max_duration_s,
                               ffmpeg_mono)
    mono, rate, start, segment = found
    if not np.isfinite(mono).all():
        raise DecodeError(f"{path}: the audio holds NaN or infinite samples; re-encode or replace the file")
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32, copy=False)
    return Clip(samples=np.ascontiguousarray(mono), sample_rate=sample_rate, start_s=start, duration_s=segment,
                decoder=decoder)
