"""The training feature cache under ``<home>/cache/mels``: every track's training window, decoded once, as log-mels.

Training draws thousands of random excerpts per epoch; decoding audio for each would make the decoder, not the
model, the bottleneck (``benchmarks/train_throughput.py`` measures by how much). So each track's window
(``train.window_seconds`` around ``audio.crop_position``, longer than the inference crop so that excerpts also come
from outside it) is decoded once, turned into a log-mel with the cnn's own frontend, and stored as one
``.npy`` file of float16 ``(frames, n_mels)`` (frames first: an excerpt is one contiguous slice), read memory-mapped.

Size, stated because the old cache grew to 427 GB against a 30 GB estimate: an entry is at most
``(1 + window_samples // hop) * n_mels * 2`` bytes plus a 128-byte header. With the defaults (40 s at 16 kHz, hop 256,
96 mels) that is 2501 x 96 x 2 + 128 = 480,320 bytes (0.46 MiB) per track: 4.6 GB for 10,000 tracks. The cache holds
exactly one entry per track of the library (entries of removed or changed files are deleted, leftovers of a killed
build too), one frontend at a time (other settings wipe it), and never more than ``train.cache_max_gb``: above it a
fixed, seeded subset of the library is cached and the rest left out, counted in the report.

Entries are keyed by track key + file size + mtime_ns (never a database row id) and validated by a CRC32 of their
data at every build: a changed file or a damaged entry is decoded again, only that one.
"""

from __future__ import annotations

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
from recsys.embedder.audio import crop_window
from recsys.embedder.decoding import DecodeSpec, Job, decoded
from recsys.embedder.encoders import CnnEncoder
from recsys.errors import RecsysError
from recsys.library.content_id import content_id
from recsys.library.track import Track

CACHE_FORMAT = 1
FOLDER = Path("cache") / "mels"
INDEX = "index.json"
NPY_HEADER = 128  # numpy's .npy header for a 2-D float16 array
FLUSH_EVERY = 64  # index writes during a build: a killed build keeps all but the last few entries
FRONTEND_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max")


class CacheError(RecsysError):
    """The cache cannot be used as it is; the message says what to do."""


@dataclass(frozen=True)
class Frontend:
    """What an entry's content depends on: the log-mel settings, the window and where it sits in the track."""

    mel: tuple[tuple[str, float], ...]
    window_s: float
    position: str

    @classmethod
    def of(cls, cnn_config: dict, window_s: float, position: str) -> Frontend:
        return cls(tuple((k, cnn_config[k]) for k in FRONTEND_KEYS), float(window_s), position)

    @property
    def sample_rate(self) -> int:
        return int(dict(self.mel)["sample_rate"])

    @property
    def hop(self) -> int:
        return int(dict(self.mel)["hop_length"])

    @property
    def n_mels(self) -> int:
        return int(dict(self.mel)["n_mels"])

    def frames(self, seconds: float) -> int:
        """Frames of a centred STFT over ``seconds`` of audio."""
        return 1 + int(round(seconds * self.sample_rate)) // self.hop

    @property
    def bytes_per_track(self) -> int:
        return self.frames(self.window_s) * self.n_mels * 2 + NPY_HEADER

    @property
    def id(self) -> str:
        text = json.dumps({"format": CACHE_FORMAT, "mel": self.mel, "window_s": self.window_s,
                           "position": self.position})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Entry:
    """One cached track: the file it came from (size, mtime_ns) and where its window sits in the track."""

    key: str
    file: str
    size: int
    mtime_ns: int
    content_id: str
    frames: int
    duration_s: float
    crc32: int
    album: str = ""
    artist: str = ""

    def load(self, folder: Path) -> np.ndarray:
        """(frames, n_mels) float16, memory-mapped: only the pages an excerpt touches are read."""
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

    @property
    def built_per_s(self) -> float:
        return self.built / self.seconds if self.seconds else 0.0


def _crc(data: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(data).view(np.uint8).reshape(-1))


def _entry_file(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32] + ".npy"


class FeatureCache:
    """The cache of one home for one frontend. One writer at a time (callers hold the home lock)."""

    def __init__(self, home: Path, frontend: Frontend) -> None:
        self.folder = Path(home) / FOLDER
        self.frontend = frontend
        self.entries: dict[str, Entry] = {}
        self.failed: dict[str, dict] = {}
        self._load_index()

    def _load_index(self) -> None:
        try:
            data = json.loads((self.folder / INDEX).read_text(encoding="utf-8"))
            if data.get("frontend") != self.frontend.id:
                raise ValueError("another frontend")
            self.entries = {k: Entry(**v) for k, v in data["entries"].items()}
            self.failed = dict(data.get("failed", {}))
        except (OSError, ValueError, KeyError, TypeError):
            if self.folder.exists():  # unreadable, or made with other settings: start afresh (one frontend only)
                shutil.rmtree(self.folder)
            self.entries, self.failed = {}, {}

    def _save_index(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / INDEX, {"frontend": self.frontend.id, "format": CACHE_FORMAT,
                                                "entries": {k: asdict(e) for k, e in self.entries.items()},
                                                "failed": self.failed})

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.npy")) if self.folder.exists() else 0

    def valid(self, entry: Entry) -> bool:
        """The entry's file is whole: right shape and dtype, and its data matches the CRC written with it."""
        try:
            data = entry.load(self.folder)
            return (data.dtype == np.float16 and data.shape == (entry.frames, self.frontend.n_mels)
                    and _crc(data) == entry.crc32)
        except (OSError, ValueError, EOFError):
            return False

    def crop_frames(self, entry: Entry, crop_s: float) -> tuple[int, int]:
        """(first frame, frame count) of the inference crop (audio.crop_seconds at the same position) inside the
        cached window, so an encoder can be evaluated from the cache on exactly what `recsys embed` would decode."""
        position = self.frontend.position
        window_start, _ = crop_window(entry.duration_s, self.frontend.window_s, position)
        crop_start, crop_len = crop_window(entry.duration_s, crop_s, position)
        first = int(round((crop_start - window_start) * self.frontend.sample_rate / self.frontend.hop))
        count = min(self.frontend.frames(crop_len), entry.frames - first)
        return max(0, first), count

    def build(self, tracks: Sequence[Track], *, max_bytes: float, seed: int, max_duration_s: float,
              timeout_s: float, workers: int = 1, progress: Callable[[int], object] | None = None) -> CacheReport:
        """Bring the cache in line with ``tracks``: reuse valid entries, decode the rest, delete what is not listed.

        Returns the report; :meth:`for_tracks` then gives the entries in library order.
        """
        started = time.monotonic()
        fe = self.frontend
        report = CacheReport(tracks=len(tracks), bytes_per_track=fe.bytes_per_track)
        capacity = max(0, int(max_bytes // fe.bytes_per_track))
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
        self._decode_into(jobs, report, max_duration_s, timeout_s, workers, progress)
        report.size_bytes = self.size_bytes()
        report.seconds = time.monotonic() - started
        return report

    def _decode_into(self, jobs: list[Job], report: CacheReport, max_duration_s: float, timeout_s: float,
                     workers: int, progress: Callable[[int], object] | None) -> None:
        import torch

        fe = self.frontend
        mel = CnnEncoder(dict(fe.mel)).eval()
        spec = DecodeSpec(fe.sample_rate, fe.window_s, fe.position, max_duration_s, timeout_s)
        bar = progress(len(jobs)) if (progress and jobs) else None
        try:
            for n, (job, clip, error, too_long) in enumerate(decoded(jobs, spec, workers), 1):
                key = job.track.key
                if clip is None:
                    if too_long:
                        report.too_long += 1
                    else:
                        report.failed += 1
                        report.failures.append((job.track.path, error or "unknown error"))
                        self.failed[key] = {"size": job.size, "mtime_ns": job.mtime_ns, "error": error}
                else:
                    with torch.inference_mode():
                        logmel = mel.frontend(torch.from_numpy(clip.samples).unsqueeze(0))[0]
                    data = logmel.T.contiguous().numpy().astype(np.float16)
                    self._write(job, data, clip.duration_s)
                    report.built += 1
                if bar is not None:
                    bar.update(1)
                if n % FLUSH_EVERY == 0:
                    self._save_index()
        finally:
            if bar is not None:
                bar.close()
            self._save_index()

    def _write(self, job: Job, data: np.ndarray, duration_s: float) -> None:
        track = job.track
        name = _entry_file(track.key)
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, data)
        os.replace(tmp, self.folder / name)
        cid = content_id(track.path, job.size)
        cid = f"{cid}@{track.start_s:.3f}" if track.segment else cid
        self.entries[track.key] = Entry(track.key, name, job.size, job.mtime_ns, cid, int(data.shape[0]),
                                        float(duration_s), _crc(data), track.album,
                                        track.artist)

    def for_tracks(self, tracks: Sequence[Track]) -> list[Entry]:
        """The cached entries of ``tracks``, in their order (tracks without an entry are left out)."""
        return [self.entries[t.key] for t in tracks if t.key in self.entries]
