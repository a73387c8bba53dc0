"""Decoding crops in worker processes: the only part of `recsys embed` that runs outside the main process.

Kept apart from the pipeline so a spawned worker imports just this module and the decoder (numpy, soundfile, PyAV,
soxr): not torch, lancedb or faiss, which the pipeline needs and which cost seconds per worker to import.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np

from recsys.config import Settings
from recsys.embedder.audio import Clip, DecodeError, TrackTooLong, limit_decoder_threads, load_crop
from recsys.library.track import Track


@dataclass(frozen=True)
class Job:
    """One track to decode, with the file facts its row will record."""

    track: Track
    size: int
    mtime_ns: int
    content_id: str


@dataclass(frozen=True)
class DecodeSpec:
    sample_rate: int
    crop_s: float
    position: str
    max_duration_s: float
    timeout_s: float
    crop_count: int = 1  # excerpts per track (audio.crop_count), crop_s seconds each

    @property
    def clip_samples(self) -> int:
        """Samples of a full clip: every excerpt, at ``sample_rate``."""
        return int(round(self.crop_s * self.crop_count * self.sample_rate))

    def vector_id(self, encoder_id: str) -> str:
        """The id stored with each vector: the encoder's id and the clip it heard (rate, excerpt length, count,
        position), so that changing either makes the rows stale and `recsys embed` re-embeds them."""
        clip = f"{self.sample_rate}|{self.crop_s:g}|{self.crop_count}|{self.position}"
        return hashlib.sha256(f"{encoder_id}|{clip}".encode()).hexdigest()[:16]


def default_workers(configured: int) -> int:
    return configured if configured > 0 else max(1, os.cpu_count() or 1)


def decode_spec(settings: Settings, sample_rate: int) -> DecodeSpec:
    a = settings.audio
    return DecodeSpec(sample_rate, a.crop_seconds, a.crop_position, a.max_track_minutes * 60.0, a.decode_timeout_s,
                      a.crop_count)


class _DecodeTimeout(Exception):
    pass


def _on_alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _DecodeTimeout()


def _init_decoding() -> None:
    """The per-file time limit (SIGALRM) and one decoder thread per process (no CPU oversubscription)."""
    signal.signal(signal.SIGALRM, _on_alarm)
    limit_decoder_threads()


def _init_worker() -> None:
    """Worker processes leave Ctrl-C to the main process, which stops the run cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_decoding()


Decoded = tuple[Job, Clip | None, str | None, bool]  # (job, clip, error, too long)


def _decode(job: Job, spec: DecodeSpec) -> Decoded:
    """Never raises, so one bad file never stops the run."""
    signal.alarm(max(1, int(np.ceil(spec.timeout_s))))
    try:
        clip = load_crop(
            job.track.path,
            spec.sample_rate,
            crop_s=spec.crop_s,
            position=spec.position,
            seg_start_s=job.track.start_s,
            seg_length_s=job.track.length_s if job.track.segment else None,
            max_duration_s=spec.max_duration_s,
            count=spec.crop_count,
        )
        return job, clip, None, False
    except TrackTooLong as exc:
        return job, None, str(exc), True
    except DecodeError as exc:
        return job, None, str(exc), False
    except _DecodeTimeout:
        return job, None, f"decoding took longer than {spec.timeout_s:g} s (audio.decode_timeout_s)", False
    except Exception as exc:  # a decoder bug must not stop the run: record it as this file's failure
        return job, None, f"{type(exc).__name__}: {exc}".splitlines()[0], False
    finally:
        signal.alarm(0)


def decoded(jobs: Sequence[Job], spec: DecodeSpec, workers: int) -> Iterator[Decoded]:
    """Decode in worker processes, a bounded number of jobs ahead, so memory stays flat however large the library."""
    if workers <= 1:  # decoding in the main process: Ctrl-C must still reach it
        _init_decoding()
        for job in jobs:
            yield _decode(job, spec)
        return
    ahead = workers * 4
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)
    pending: set[Future] = set()
    it = iter(jobs)
    try:
        for job in it:
            pending.add(pool.submit(_decode, job, spec))
            if len(pending) >= ahead:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(_decode, nxt, spec))
    finally:
        # a worker stuck in a decoder (or the rest of an interrupted run) must not keep the command alive
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            proc.terminate()
