"""Decoding crops in worker processes (and, in `recsys embed`'s last phase, fingerprints): the only part of
`recsys embed` that runs outside the main process.

Kept apart from the pipeline so a spawned worker imports just this module and the decoder (numpy, soundfile, PyAV,
soxr): not torch, lancedb or faiss, which the pipeline needs and which cost seconds per worker to import.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from typing import NamedTuple, Protocol

import numpy as np

from recsys.embedder.audio import Clip, DecodeError, ServerUnreachable, TrackTooLong, limit_decoder_threads, load_crop
from recsys.library import remote
from recsys.library.content_id import track_content_id
from recsys.library.reading import may_open
from recsys.library.track import Track
from recsys.library.uri import is_remote

_AHEAD_PER_WORKER = 3  # jobs queued per worker: it never waits for the parent, which may be encoding a batch


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


class AudioSection(Protocol):
    """What decoding reads of the settings: their ``audio`` section (``recsys.config.AudioSettings``, with
    ``recsys/default.yaml`` the one home of its defaults), handed in by the use case; the embedder never reads the
    settings object."""

    crop_seconds: float
    crop_position: str
    crop_count: int
    max_track_minutes: float  # 0: no limit
    decode_timeout_s: float


def decode_spec(a: AudioSection, sample_rate: int) -> DecodeSpec:
    """The clip policy of the ``audio`` section at the encoder's ``sample_rate``: the one place it is built."""
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


def fingerprint_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for `recsys embed`'s fingerprint phase (:func:`fingerprint_with_deadline`), started like the
    decoders: spawned, Ctrl-C left to the main process, one decoder thread each."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker)


def fingerprint_with_deadline(path: str, duration_s: float, start_s: float,
                              timeout_s: float) -> tuple[np.ndarray, str | None]:
    """:func:`recsys.embedder.fingerprint.fingerprint_or_why` under the decoders' deadline (``audio.decode_timeout_s``,
    by SIGALRM: in a :func:`fingerprint_pool` worker, or in a process's main thread): a file that hangs its decoder
    has no fingerprint. Elsewhere (another thread) without a deadline."""
    from recsys.embedder.fingerprint import NONE, fingerprint_or_why

    armed = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGALRM, _on_alarm) if armed else None
    if armed:
        signal.alarm(max(1, int(np.ceil(timeout_s))))
    try:
        return fingerprint_or_why(path, duration_s, start_s)
    except _DecodeTimeout:
        return NONE, f"fingerprinting took longer than {timeout_s:g} s (audio.decode_timeout_s)"
    finally:
        if armed:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


class Decoded(NamedTuple):
    """One job's outcome. ``job`` carries the identity (size, mtime, content id) of the bytes actually decoded,
    which is what the row must record: a file rewritten after planning is decoded again under its new identity."""

    job: Job
    clip: Clip | None
    error: str | None
    too_long: bool


# A file that kept changing through every attempt (being written or copied meanwhile): not stored and not a
# failure; the next run plans it again.
FILE_CHANGED = "the file kept changing while it was decoded"
# A server's file that could not be fetched (the server stopped, the network broke): not stored and not a failure
# either (the file is not to blame); the next run plans it again.
SERVER_UNREACHED = "its server did not deliver the file"
CHANGE_ATTEMPTS = 3
_HARD_LIMIT_GRACE_S = 5.0  # the parent kills a worker this long after the in-worker limit should have fired
_PR_SET_PDEATHSIG = 1


class _Listed(Exception):
    """A server's file has no identity but the one its listing gave, which the job already holds."""


def file_identity(track: Track) -> tuple[int, int, str]:
    """(size, mtime_ns, content id) of the track's file now; the content id is empty for what is never opened (a
    FIFO, a device, an empty or pseudo-file: reading it could block, ``recsys.library.reading``). Raises OSError."""
    if is_remote(track.path):  # a server's file: the identity it was listed with (no stat over HTTP)
        raise _Listed()
    st = os.stat(track.path)
    cid = track_content_id(track.path, st.st_size, track.start_s, track.segment) if may_open(st) else ""
    return st.st_size, st.st_mtime_ns, cid


def _decode_once(job: Job, spec: DecodeSpec) -> Decoded:
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
        return Decoded(job, clip, None, False)
    except TrackTooLong as exc:
        return Decoded(job, None, str(exc), True)
    except ServerUnreachable:
        return Decoded(job, None, SERVER_UNREACHED, False)
    except DecodeError as exc:
        return Decoded(job, None, str(exc), False)


def _decode(job: Job, spec: DecodeSpec) -> Decoded:
    """Never raises, so one bad file never stops the run. After decoding, the file's identity is taken again: a
    file that changed underneath is decoded again under its new identity (a vector is never stored under the
    content id of other bytes, from where reuse by content id would spread it)."""
    signal.alarm(max(1, int(np.ceil(spec.timeout_s))))
    try:
        for _ in range(CHANGE_ATTEMPTS):
            outcome = _decode_once(job, spec)
            try:
                now = file_identity(job.track)
            except _Listed:
                return outcome
            except OSError as exc:
                return Decoded(job, None, f"{job.track.path}: the file went away while it was decoded "
                                          f"({exc.strerror or exc})", False)
            if now == (job.size, job.mtime_ns, job.content_id):
                return outcome
            job = Job(job.track, *now)
        return Decoded(job, None, FILE_CHANGED, False)
    except _DecodeTimeout:
        return Decoded(job, None, f"decoding took longer than {spec.timeout_s:g} s (audio.decode_timeout_s)", False)
    except Exception as exc:  # a decoder bug must not stop the run: record it as this file's failure
        return Decoded(job, None, f"{type(exc).__name__}: {exc}".splitlines()[0], False)
    finally:
        signal.alarm(0)


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills this worker when the parent dies, however it dies (kill -9 included), so no decoder
    (and no multiprocessing resource tracker, which lives as long as its children) outlives a run."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(0)


def _worker_main(conn: Connection, spec: DecodeSpec, parent_pid: int, servers: dict | None = None) -> None:
    """A decode worker: jobs in, outcomes out, one at a time and in order, until the pipe closes. ``servers``: who
    opens the files of the servers the library was read from (:mod:`recsys.library.remote`), in memory only."""
    _die_with_parent(parent_pid)
    _init_worker()
    remote.install(servers or {})
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        conn.send(_decode(job, spec))


class _Worker:
    """One worker process and the jobs sent to it; the first of them is the one it is decoding now."""

    def __init__(self, spec: DecodeSpec) -> None:
        ctx = get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, spec, os.getpid(), remote.exported()),
                                daemon=True)
        self.proc.start()
        child.close()
        self.jobs: deque[Job] = deque()
        self.since = time.monotonic()  # when the first job of ``jobs`` started, as far as the parent can tell

    def send(self, job: Job) -> None:
        if not self.jobs:
            self.since = time.monotonic()
        self.jobs.append(job)
        self.conn.send(job)

    def receive(self) -> Decoded:
        outcome = self.conn.recv()
        self.jobs.popleft()
        self.since = time.monotonic()
        return outcome

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


def _died(worker: _Worker) -> str:
    code = worker.proc.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        how = f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    else:
        how = f"exited with status {code}"
    return f"the decoder crashed on this file (its worker process was {how})"


def decoded(jobs: Sequence[Job], spec: DecodeSpec, workers: int) -> Iterator[Decoded]:
    """Decode in worker processes, a few jobs ahead per worker, so memory stays flat however large the library.

    The parent knows which job each worker is on: a worker that dies (a decoder crash, the OOM killer) or outlives
    the time limit (a hang inside C code, which SIGALRM cannot interrupt) costs only that file, recorded as its
    failure; a fresh worker takes over the jobs it had queued and the run goes on.
    """
    if workers <= 1:  # decoding in the main process: Ctrl-C must still reach it
        _init_decoding()
        for job in jobs:
            yield _decode(job, spec)
        return
    hard_limit_s = spec.timeout_s + _HARD_LIMIT_GRACE_S
    todo = deque(jobs)
    pool = [_Worker(spec) for _ in range(min(workers, len(todo)))]
    try:
        for worker in pool:
            while todo and len(worker.jobs) < _AHEAD_PER_WORKER:
                worker.send(todo.popleft())
        while any(w.jobs for w in pool):
            busy = [w for w in pool if w.jobs]
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=0.5))
            for i, worker in enumerate(pool):
                if not worker.jobs:
                    continue
                failed: str | None = None
                if worker.conn in ready or worker.conn.poll():
                    try:
                        outcome = worker.receive()
                    except (EOFError, OSError):
                        worker.proc.join(1)
                        failed = _died(worker)
                    else:
                        yield outcome
                        if todo:
                            worker.send(todo.popleft())
                        continue
                elif not worker.proc.is_alive():
                    failed = _died(worker)
                elif time.monotonic() - worker.since > hard_limit_s:
                    failed = (f"decoding took longer than {spec.timeout_s:g} s (audio.decode_timeout_s) and did not "
                              "stop: its worker was killed")
                if failed is None:
                    continue
                culprit, *queued = worker.jobs
                worker.kill()
                pool[i] = fresh = _Worker(spec)
                for job in queued:
                    fresh.send(job)
                yield Decoded(culprit, None, f"{culprit.track.path}: {failed}", False)
    finally:
        # a stuck worker (or the rest of an interrupted run) must not keep the command alive
        for worker in pool:
            worker.kill()
