"""A small acoustic fingerprint, to tell whether two files hold one recording (``recsys duplicates``).

The encoder's vectors say what music sounds like, not whether two files are one recording: a copy made 8 dB quieter
or re-encoded at 48 kb/s mono moves MusiCNN's vector as far as another piece of the same soundtrack does, and a copy
cut shorter is heard at other places (the excerpts sit at fixed shares of the duration). This fingerprint follows
Haitsma and Kalker (ISMIR 2002): 8 kHz mono, 16 log-spaced bands of a 256 ms window every 32 ms, one bit per
band pair and frame (does the energy difference of neighbouring bands grow or shrink from one frame to the
next). Differences of log energies ignore gain; coarse bands ignore the codec. Two fingerprints are compared at
every offset (an FFT cross-correlation), so a copy cut at either end still lines up.

Each file is fingerprinted at most once per home: :class:`FingerprintCache` keeps them under
``<home>/cache/fingerprints`` by content id (a moved file keeps its fingerprint, a rewritten one gets a new one), and
:func:`row_agreement` compares two rows of a snapshot through it, for the lists' "one recording" rule
(:func:`recsys.library.groups.one_recording_with`). `recsys embed` fills the cache for every track close enough to
another to be judged (:mod:`recsys.pipeline.fingerprints`); the lists read it without decoding (``decode=False``),
`recsys duplicates` decodes what it lacks. The decoder is imported on the first decode only: `recsys similar` starts
without it.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recsys.atomic import write_bytes_atomic
from recsys.errors import RecsysError
from recsys.home.claim import is_own
from recsys.library.uri import is_remote

SAMPLE_RATE = 8000
FRAME = 2048  # 256 ms windows, overlapping 7/8: bits barely change when a copy starts between two hops
HOP = 256  # every 32 ms
BANDS = 17  # 16 bits per frame
LOW_HZ, HIGH_HZ = 300.0, 3000.0
MAX_SECONDS = 600.0  # longer files are fingerprinted over their first 10 minutes
MIN_OVERLAP_S = 10.0  # two files must line up over at least this long to be compared


_BLOCK = 128  # frames transformed at a time: 1 MB of spectrum stays in the CPU's cache (the whole file's, 15 MB a
# minute, did not, and cost three times as much on a busy machine)


def _band_bins(sample_rate: int) -> list[tuple[int, int]]:
    """The FFT bins of each band, as [first, end) ranges (each band's bins are contiguous)."""
    freqs = np.fft.rfftfreq(FRAME, 1.0 / sample_rate)
    edges = np.geomspace(LOW_HZ, HIGH_HZ, BANDS + 1)
    return [(int(np.searchsorted(freqs, lo)), int(np.searchsorted(freqs, hi))) for lo, hi in zip(edges, edges[1:],
                                                                                                   strict=False)]


def fingerprint_samples(mono: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Frames x 16 bits (bool) of ``mono`` audio at ``sample_rate`` (8 kHz)."""
    x = np.asarray(mono, dtype=np.float32)
    if len(x) < FRAME + 2 * HOP:
        return np.zeros((0, BANDS - 1), dtype=bool)
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP]
    window = np.hanning(FRAME).astype(np.float32)
    bins = _band_bins(sample_rate)
    band = np.empty((len(frames), BANDS), dtype=np.float32)
    for first in range(0, len(frames), _BLOCK):
        spectrum = np.fft.rfft(frames[first:first + _BLOCK] * window, axis=1)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        for k, (lo, hi) in enumerate(bins):
            band[first:first + _BLOCK, k] = power[:, lo:hi].sum(axis=1)
    energy = np.log(band + 1e-9)
    diff = energy[:, :-1] - energy[:, 1:]
    return (diff[1:] - diff[:-1]) > 0


def fingerprint_file(path: str, duration_s: float, start_s: float = 0.0) -> np.ndarray:
    """The fingerprint of a file (decoded whole, up to :data:`MAX_SECONDS`), or of the track that starts
    ``start_s`` into it (a CUE sheet's); raises DecodeError like the embedder. Decoded by FFmpeg alone, mixed down
    as it goes (``load_crop(ffmpeg_mono=True)``: the fast way through a whole file); a file only libsndfile reads
    is read by it."""
    from recsys.embedder.audio import DecodeError, load_crop

    crop = max(1.0, min(float(duration_s or MAX_SECONDS), MAX_SECONDS))
    segment = {"seg_start_s": float(start_s), "seg_length_s": float(duration_s or MAX_SECONDS)} if start_s > 0 else {}
    try:
        clip = load_crop(path, SAMPLE_RATE, crop_s=crop, position="start", max_duration_s=float("inf"),
                         ffmpeg_mono=True, **segment)
    except (DecodeError, ValueError):  # e.g. a stream whose format changes midway, which the mixer refuses
        clip = load_crop(path, SAMPLE_RATE, crop_s=crop, position="start", max_duration_s=float("inf"), **segment)
    return fingerprint_samples(clip.samples)


NONE = np.zeros((0, BANDS - 1), dtype=bool)  # the fingerprint of a file that has none (undecodable, a server's song)


def fingerprint_or_why(path: str, duration_s: float, start_s: float = 0.0) -> tuple[np.ndarray, str | None]:
    """(fingerprint, None), or (:data:`NONE`, why) for a file that cannot be fingerprinted: a server's song would be
    downloaded whole (the vectors' rule judges it), a bad file is its pairs' fallback, never an error. What the
    cache and `recsys embed`'s worker processes both compute."""
    if not path or is_remote(path):
        return NONE, None
    try:
        return fingerprint_file(path, duration_s, start_s), None
    except (RecsysError, OSError, ValueError) as exc:
        return NONE, str(exc) or type(exc).__name__


CACHE_DIR = Path("cache") / "fingerprints"  # under the home


class FingerprintCache:
    """Fingerprints by content id: in memory for this run, on disk under ``<home>/cache/fingerprints`` for the next.

    A file that cannot be fingerprinted (undecodable, a server's song, too short) is remembered as such (an empty
    fingerprint), so it is not decoded again; :meth:`get` gives None for it. Only a folder that is recsys's home
    (its marker) gets a cache; one that cannot be written (a read-only home) only costs the next run the decode:
    nothing here raises for the cache's sake. ``decode=False`` (the lists): a file not in the cache is not decoded
    and :meth:`get` gives None for it, so a query never waits for a whole-file decode.
    """

    def __init__(self, home: str | Path | None, decode: bool = True) -> None:
        self.folder = Path(home) / CACHE_DIR if home is not None and is_own(home) else None
        self.decode = decode
        self._memory: dict[str, np.ndarray] = {}
        self._absent: set[str] = set()  # not cached, not decoded (decode=False)
        self.decoded = 0  # files decoded by this cache (not found in memory nor on disk)
        self.failures: list[tuple[str, str]] = []  # (path, why) of the files decoded without a fingerprint

    def _file(self, content_id: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / f"{hashlib.sha1(content_id.encode()).hexdigest()}.npy"

    def get(self, content_id: str, path: str, duration_s: float, start_s: float = 0.0) -> np.ndarray | None:
        """The fingerprint of the file (or CUE track) with ``content_id`` at ``path``; None when it has none."""
        found = self._memory.get(content_id)
        if found is None and content_id not in self._absent:
            found = self._load(content_id)
        if found is None:
            if not self.decode:
                self._absent.add(content_id)
                return None
            bits, why = fingerprint_or_why(path, duration_s, start_s)
            self.decoded += 1
            self.put(content_id, path, bits, why)
            return bits if len(bits) else None
        self._memory[content_id] = found
        return found if len(found) else None

    def cached(self, content_id: str) -> bool:
        """Whether the file with ``content_id`` has an entry on disk (a fingerprint, or none remembered)."""
        where = self._file(content_id)
        return where is not None and where.is_file()

    def put(self, content_id: str, path: str, bits: np.ndarray, why: str | None = None) -> None:
        """Keep what :func:`fingerprint_or_why` gave for the file at ``path`` (``why``: it has none, and why)."""
        if why is not None:
            self.failures.append((path, why))
        self._memory[content_id] = bits
        self._absent.discard(content_id)
        self._store(content_id, bits)

    def _load(self, content_id: str) -> np.ndarray | None:
        where = self._file(content_id)
        try:
            if where is None or not where.is_file():
                return None
            packed = np.load(where, allow_pickle=False)
            return np.unpackbits(packed, axis=1)[:, :BANDS - 1].astype(bool)
        except (OSError, ValueError):  # a damaged entry is decoded again
            return None

    def _store(self, content_id: str, bits: np.ndarray) -> None:
        where = self._file(content_id)
        if where is None:
            return
        buffer = io.BytesIO()
        np.save(buffer, np.packbits(bits, axis=1) if len(bits) else np.zeros((0, 2), dtype=np.uint8))
        try:
            os.makedirs(where.parent, exist_ok=True)
            write_bytes_atomic(where, buffer.getvalue())
        except OSError:
            pass


def row_fingerprint_key(row: dict) -> str:
    """The cache key of a snapshot row's file: its content id (its path where it has none)."""
    return str(row.get("content_id") or row.get("path"))


def row_agreement(cache: FingerprintCache, lib: Any) -> Callable[[int, int], float | None]:
    """``(row, row) -> agreement`` of two rows of a snapshot (``lib.row(i)`` gives path, content_id, duration_s and
    start_s) through ``cache``, each pair compared once; None when either has no fingerprint or they are too short to
    line up (the caller falls back to the vectors' rule). Identical content agrees fully without a decode."""
    pairs: dict[tuple[int, int], float | None] = {}

    def agreement(i: int, j: int) -> float | None:
        key = (min(i, j), max(i, j))
        if key not in pairs:
            a, b = lib.row(key[0]), lib.row(key[1])
            if a.get("content_id") and a.get("content_id") == b.get("content_id"):
                pairs[key] = 1.0
            else:
                fa, fb = (cache.get(row_fingerprint_key(m), m.get("path") or "",
                                    float(m.get("duration_s") or 0.0), float(m.get("start_s") or 0.0))
                          for m in (a, b))
                agreed, _, overlap = match(fa, fb) if fa is not None and fb is not None else (0.0, 0.0, 0.0)
                pairs[key] = agreed if overlap > 0 else None  # too short to line up: no evidence either way
        return pairs[key]

    return agreement


def match(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(bit agreement at the best offset, that offset in seconds, overlap in seconds): at ``offset`` the sound at
    second t of b is the sound at second t + offset of a (a copy cut 5 s into a: +5).

    Agreement is the share of equal bits where the two line up best (judged by how unlikely that agreement is by
    chance over that overlap): about 0.5 for unrelated music, near 1 for one recording. An overlap under
    :data:`MIN_OVERLAP_S` gives agreement 0.
    """
    if len(a) == 0 or len(b) == 0:
        return 0.0, 0.0, 0.0
    sa, sb = np.where(a, 1.0, -1.0), np.where(b, 1.0, -1.0)
    n = len(a) + len(b) - 1
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft((np.fft.rfft(sa, size, axis=0) * np.conj(np.fft.rfft(sb, size, axis=0))).sum(axis=1),
                        size)
    # corr[s] pairs a[t + s] with b[t]; negative shifts wrap to the end
    shifts = np.concatenate([np.arange(0, len(a)), np.arange(-(len(b) - 1), 0)])
    values = np.concatenate([corr[:len(a)], corr[size - (len(b) - 1):]]) if len(b) > 1 else corr[:len(a)]
    overlap = np.minimum(len(a) - np.maximum(shifts, 0), len(b) + np.minimum(shifts, 0)).astype(np.float64)
    frame_s = HOP / SAMPLE_RATE
    valid = overlap * frame_s >= MIN_OVERLAP_S
    if not valid.any():
        return 0.0, 0.0, 0.0
    agreement = 0.5 + values / (2 * a.shape[1] * np.maximum(overlap, 1))
    # the offset where agreement is least likely by chance (music that repeats itself lines up at several offsets;
    # a long overlap that agrees is stronger evidence than a short one that agrees a little more)
    best = int(np.argmax(np.where(valid, (agreement - 0.5) * np.sqrt(overlap), -np.inf)))
    return float(agreement[best]), float(shifts[best] * frame_s), float(overlap[best] * frame_s)
