"""The training audio cache under ``<home>/cache/audio``: a few short windows of every track, decoded once.

Training draws thousands of excerpts per epoch; decoding audio for each would make the decoder, not the model, the
bottleneck (``benchmarks/train_throughput.py`` measures by how much). So each track's ``train.windows`` windows of
``train.window_seconds``, spread through the track (centred at 1/2K, 3/2K, ... of it: the parts of a track a
positive pair is drawn from), are decoded once, at the encoder's sample rate, and stored as one ``.npy`` file of
int16 ``(windows, samples)``, read memory-mapped. Audio, not features: the augmentations (gain, EQ, noise, pitch,
tempo, codec-like low-pass) work on the wave, and the encoder's own frontend runs on the training device.

Size, stated because the old cache grew to 427 GB against a 30 GB estimate: an entry is exactly
``windows * round(window_seconds * sample_rate) * 2`` bytes plus a 128-byte header. With the defaults (4 windows of
6 s at 16 kHz) that is 4 x 96,000 x 2 + 128 = 768,128 bytes (0.73 MiB) per track: 7.7 GB for 10,000 tracks. The
cache holds exactly one entry per track of the library (entries of removed or changed files are deleted, leftovers
of a killed build too), one layout at a time (other settings wipe it, and the log-mel cache of older versions is
removed), and never more than ``train.cache_max_gb``: above it a fixed, seeded subset of the library is cached and
the rest left out, counted in the report.

Entries are keyed by track key + file size + mtime_ns (never a database row id) and validated by a CRC32 of their
data at every build: a changed file or a damaged entry is decoded again, only that one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recsys.atomic import write_json_atomic
from recsys.embedder.decoding import DecodeSpec, Job, decoded
from recsys.library.content_id import track_content_id
from recsys.library.track import Track

CACHE_FORMAT = 2
FOLDER = Path("cache") / "audio"
OLD_FOLDERS = (Path("cache") / "mels",)  # caches of older versions: removed, they only take space
INDEX = "index.json"
NPY_HEADER = 128  # numpy's .npy header for a 2-D int16 array
FLUSH_EVERY = 64  # index writes during a build: a killed build keeps all but the last few entries
PROBE_S = 0.05  # the first decoding pass reads this much of each track: its duration, and that it decodes


@dataclass(frozen=True)
class Layout:
    """What an entry's content depends on: the sample rate and the windows' number and length."""

    sample_rate: int
    windows: int
    window_s: float

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def bytes_per_track(self) -> int:
        return self.windows * self.window_samples * 2 + NPY_HEADER

    @property
    def id(self) -> str:
        text = json.dumps({"format": CACHE_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def window_starts(duration_s: float, windows: int, window_s: float) -> list[float]:
    """Start times (seconds into the track) of ``windows`` windows centred at (2i+1)/2K of the track, kept inside it;
    a track shorter than a window has one window, the whole track."""
    if duration_s <= window_s:
        return [0.0]
    span = duration_s - window_s
    return sorted({round(min(span, max(0.0, (2 * i + 1) / (2 * windows) * duration_s - window_s / 2)), 3)
                   for i in range(windows)})


@dataclass
class Entry:
    """One cached track: the file it came from (size, mtime_ns), how many samples of each window are audio."""

    key: str
    file: str
    size: int
    mtime_ns: int
    content_id: str
    samples: int
    duration_s: float
    crc32: int
    album: str = ""
    artist: str = ""

    def load(self, folder: Path) -> np.ndarray:
        """(windows, window_samples) int16, memory-mapped: only the pages an excerpt touches are read."""
        return np.load(folder / self.file, mmap_mode="r")


@dataclass
class CacheReport:
    """What a build did; every track of the library lands in exactly one of reused/built/failed/too_long/missing/
    left_out."""

    tracks: int = 0
    reused: int = 0
    built: int = 0
    rebuilt_corrupt: int = 0
    failed: int = 0
    too_long: int = 0
    missing: int = 0
    left_out: int = 0
    removed: int = 0
    size_bytes: int = 0
    bytes_per_track: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


def _crc(data: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(data).view(np.uint8).reshape(-1))


def _entry_file(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32] + ".npy"


def to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(samples, np.float32) * 32767.0), -32768, 32767).astype(np.int16)


class AudioCache:
    """The cache of one home for one layout. One writer at a time (callers hold the home lock)."""

    def __init__(self, home: Path, layout: Layout) -> None:
        self.home = Path(home)
        self.folder = self.home / FOLDER
        self.layout = layout
        self.entries: dict[str, Entry] = {}
        self.failed: dict[str, dict] = {}
        self._load_index()

    def _load_index(self) -> None:
        try:
            data = json.loads((self.folder / INDEX).read_text(encoding="utf-8"))
            if data.get("layout") != self.layout.id:
                raise ValueError("another layout")
            self.entries = {k: Entry(**v) for k, v in data["entries"].items()}
            self.failed = dict(data.get("failed", {}))
        except (OSError, ValueError, KeyError, TypeError):
            if self.folder.exists():  # unreadable, or made with other settings: start afresh (one layout only)
                shutil.rmtree(self.folder)
            self.entries, self.failed = {}, {}

    def _save_index(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / INDEX, {"layout": self.layout.id, "format": CACHE_FORMAT,
                                                "entries": {k: asdict(e) for k, e in self.entries.items()},
                                                "failed": self.failed})

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.npy")) if self.folder.exists() else 0

    def valid(self, entry: Entry) -> bool:
        """The entry's file is whole: right shape and dtype, and its data matches the CRC written with it."""
        try:
            data = entry.load(self.folder)
            return (data.dtype == np.int16 and data.shape == (self.layout.windows, self.layout.window_samples)
                    and _crc(data) == entry.crc32 and 0 < entry.samples <= self.layout.window_samples)
        except (OSError, ValueError, EOFError):
            return False

    def build(self, tracks: Sequence[Track], *, max_bytes: float, seed: int, max_duration_s: float,
              timeout_s: float, workers: int = 1, progress: Callable[[int], object] | None = None) -> CacheReport:
        """Bring the cache in line with ``tracks``: reuse valid entries, decode the rest, delete what is not listed.

        Returns the report; :meth:`for_tracks` then gives the entries in library order.
        """
        started = time.monotonic()
        lay = self.layout
        report = CacheReport(tracks=len(tracks), bytes_per_track=lay.bytes_per_track)
        for old in OLD_FOLDERS:
            shutil.rmtree(self.home / old, ignore_errors=True)
        capacity = max(0, int(max_bytes // lay.bytes_per_track))
        if len(tracks) > capacity:  # a fixed subset for a seed: the same tracks stay cached run after run
            order = sorted(tracks, key=lambda t: hashlib.sha256(f"{seed}:{t.key}".encode()).digest())
            tracks = order[:capacity]
            report.left_out = report.tracks - capacity
        jobs: list[Job] = []
        for track in tracks:
            try:
                st = os.stat(track.path)
            except OSError:
                report.missing += 1
                continue
            entry = self.entries.get(track.key)
            if entry is not None and entry.size == st.st_size and entry.mtime_ns == st.st_mtime_ns:
                if self.valid(entry):
                    entry.album, entry.artist = track.album, track.artist
                    report.reused += 1
                    continue
                report.rebuilt_corrupt += 1
            failure = self.failed.get(track.key)
            if failure and failure["size"] == st.st_size and failure["mtime_ns"] == st.st_mtime_ns:
                report.failed += 1
                continue
            jobs.append(Job(track, st.st_size, st.st_mtime_ns, ""))
        listed = {t.key for t in tracks}
        for key in [k for k in self.entries if k not in listed]:
            (self.folder / self.entries.pop(key).file).unlink(missing_ok=True)
            report.removed += 1
        self.failed = {k: v for k, v in self.failed.items() if k in listed}
        self.folder.mkdir(parents=True, exist_ok=True)
        known = {e.file for e in self.entries.values()} | {INDEX}
        for leftover in self.folder.iterdir():  # files of a killed build, temp files
            if leftover.name not in known:
                leftover.unlink(missing_ok=True)
        bar = progress(len(jobs)) if (progress and jobs) else None
        try:
            probed = self._probe(jobs, report, max_duration_s, timeout_s, workers, bar)
            self._decode_windows(probed, report, timeout_s, workers, bar)
        finally:
            if bar is not None:
                bar.close()
            self._save_index()
        report.size_bytes = self.size_bytes()
        report.seconds = time.monotonic() - started
        return report

    def _fail(self, job: Job, report: CacheReport, error: str | None) -> None:
        report.failed += 1
        report.failures.append((job.track.path, error or "unknown error"))
        self.failed[job.track.key] = {"size": job.size, "mtime_ns": job.mtime_ns, "error": error}

    def _probe(self, jobs: list[Job], report: CacheReport, max_duration_s: float, timeout_s: float,
               workers: int, bar) -> list[tuple[Job, float]]:
        """First pass, in the decode workers (their time limit applies): each track's duration, and that it
        decodes at all; too long and undecodable tracks are counted here."""
        spec = DecodeSpec(self.layout.sample_rate, PROBE_S, "start", max_duration_s, timeout_s)
        probed = []
        for job, clip, error, too_long in decoded(jobs, spec, workers):
            if clip is not None:
                probed.append((job, clip.duration_s))
                continue
            if too_long:
                report.too_long += 1
            else:
                self._fail(job, report, error)
            if bar is not None:
                bar.update(1)
        return probed

    def _decode_windows(self, probed: list[tuple[Job, float]], report: CacheReport, timeout_s: float,
                        workers: int, bar) -> None:
        """Second pass: every window of every probed track, each reached by seeking (a segment of the track)."""
        lay = self.layout
        spec = DecodeSpec(lay.sample_rate, lay.window_s, "start", float("inf"), timeout_s)
        window_jobs: list[Job] = []
        where: dict[str, tuple[str, list[int]]] = {}  # window job key -> (track key, window slots it fills)
        parts: dict[str, dict[int, np.ndarray]] = {}
        originals: dict[str, tuple[Job, float]] = {}
        for job, duration in probed:
            track = job.track
            originals[track.key] = (job, duration)
            starts = window_starts(duration, lay.windows, lay.window_s)
            slots = np.minimum(np.arange(lay.windows) * len(starts) // lay.windows, len(starts) - 1)
            for w, start in enumerate(starts):
                segment = dataclasses.replace(track, start_s=track.start_s + start, segment=True,
                                              length_s=min(lay.window_s, duration - start))
                where[segment.key] = (track.key, [int(s) for s in np.flatnonzero(slots == w)])
                window_jobs.append(Job(segment, job.size, job.mtime_ns, ""))
            parts[track.key] = {}
        done = 0
        for job, clip, error, _too_long in decoded(window_jobs, spec, workers):
            key, slots = where[job.track.key]
            if key not in parts:  # another window of this track failed already
                continue
            original, duration = originals[key]
            if clip is None:
                del parts[key]
                self._fail(original, report, error)
            else:
                for slot in slots:
                    parts[key][slot] = clip.samples
                if len(parts[key]) < lay.windows:
                    continue
                self._write(original, parts.pop(key), duration)
                report.built += 1
            done += 1
            if bar is not None:
                bar.update(1)
            if done % FLUSH_EVERY == 0:
                self._save_index()

    def _write(self, job: Job, windows: dict[int, np.ndarray], duration_s: float) -> None:
        lay = self.layout
        n = lay.window_samples
        samples = min(n, *(len(w) for w in windows.values()))
        data = np.zeros((lay.windows, n), np.int16)
        for slot, wave in windows.items():
            data[slot, : min(n, len(wave))] = to_int16(wave[:n])
        track = job.track
        name = _entry_file(track.key)
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, data)
        os.replace(tmp, self.folder / name)
        cid = track_content_id(track.path, job.size, track.start_s, track.segment)
        self.entries[track.key] = Entry(track.key, name, job.size, job.mtime_ns, cid, max(1, samples),
                                        float(duration_s), _crc(data), track.album, track.artist)

    def for_tracks(self, tracks: Sequence[Track]) -> list[Entry]:
        """The cached entries of ``tracks``, in their order (tracks without an entry are left out)."""
        return [self.entries[t.key] for t in tracks if t.key in self.entries]
