"""`recsys embed --engine ray`: the same run as :mod:`recsys.pipeline.run`, with decoding and encoding on a Ray cluster.

What stays on this machine (the driver): the plan against the table (:func:`recsys.pipeline.run.start_run`), every
commit and the failures. What goes to the cluster: decoding, as Ray CPU tasks, and encoding, in a pool of actors that
each build the encoder once (one GPU each when the cluster has GPUs). The work is cut into chunks and each chunk's rows
are written by the driver in ONE commit (``TrackStore.upsert``: a Lance ``merge_insert``, atomic), so a crash, a lost
worker or Ctrl-C keeps every committed chunk and the next run plans again from the table and does only the rest.

Ray is imported only here, and only when this engine runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from recsys.embedder.decoding import DecodeSpec, Job, decoded
from recsys.errors import RecsysError
from recsys.index.store import FailureRow, TrackRow, TrackStore
from recsys.library.track import Track
from recsys.pipeline.checked import FAILED, write_checked
from recsys.pipeline.run import (
    EmbedReport,
    as_planned,
    count_not_decoded,
    encode_batch,
    full_crop,
    row_for,
    start_run,
)

DEFAULT_CHUNK = 512  # tracks per commit: a crash loses at most one chunk's work


class RayEngineError(RecsysError):
    """Ray is not installed, or the cluster cannot be reached."""


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Join the cluster at ``address`` (``auto``, ``HOST:PORT``), or start a local Ray with this machine's cores, for
    one run; a session already running in this process is used as it is (and left running).

    A local start writes nothing to the user's home: no auth token (``RAY_AUTH_MODE=disabled``; Ray >= 2.59 writes
    ``~/.ray/auth_token`` otherwise) and its session files in a temporary folder, removed when the run ends.
    """
    try:
        import ray
    except ImportError:
        raise RayEngineError("--engine ray needs the ray extra: pip install 'recsys[ray]' (or use --engine local)") \
            from None
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp = None if address else tempfile.mkdtemp(prefix="recsys-ray-")
    try:
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RayEngineError(f"cannot join the Ray cluster at {address or 'local'} ({first}): start it with "
                                 "`ray start --head`, or leave out --address for a local Ray") from None
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _decode_part(jobs: list[Job], spec: DecodeSpec) -> list:
    """A Ray task: decode ``jobs`` in the worker's own process (one file's failure is that file's outcome)."""
    return list(decoded(jobs, spec, 1))


class _EncoderActor:
    """Holds the encoder once; encodes the decoded clips of one part into rows (full crops in batches, short tracks
    each on its own, as the local engine does)."""

    def __init__(self, spec: str, home: str, device: str, encoder_id: str, label: str, clip_samples: int,
                 batch_size: int, built_id: str) -> None:
        from recsys.embedder.active import resolve_encoder

        resolved = resolve_encoder(spec, Path(home), device)
        self.other = None  # another node sees another checkpoint (or none) under that name: said by placement()
        if resolved.encoder_id != built_id:
            self.other = (f"the encoder {label} built on a Ray node is not the driver's (id {resolved.encoder_id}, "
                          f"expected {built_id}): make the same checkpoint and home readable at the same paths on "
                          "every node")
        self.encoder, self.encoder_id, self.label = resolved.encoder, encoder_id, label
        self.clip_samples, self.batch_size = clip_samples, batch_size
        from recsys.embedder.interface import tag_names

        self.tag_names = tag_names(self.encoder)  # the tag head, when the encoder has one (musicnn)

    def placement(self) -> tuple[list, tuple[str, ...] | None]:
        """The GPU ids this actor holds and its encoder's tag names; raises when it built another encoder than the
        driver's."""
        import ray

        if self.other:
            raise RayEngineError(self.other)
        return list(ray.get_gpu_ids()), self.tag_names

    def encode(self, decoded_part: list) -> tuple[list[TrackRow], list]:
        device = getattr(self.encoder, "device", "cpu")
        rows: list[TrackRow] = []
        others = []  # (job, error, too_long) of the clips that did not decode
        full = []
        for job, clip, error, too_long in decoded_part:
            if clip is None:
                others.append((job, error, too_long))
                continue
            fitted = full_crop(clip, self.clip_samples)
            if fitted is None:
                rows += encode_batch(self.encoder, [(job, clip)], self.encoder_id, self.label, device,
                                     self.tag_names)
            else:
                full.append((job, fitted))
        for i in range(0, len(full), self.batch_size):
            rows += encode_batch(self.encoder, full[i:i + self.batch_size], self.encoder_id, self.label, device,
                                 self.tag_names)
        return rows, others


def _chunks(jobs: Sequence[Job], size: int) -> list[list[Job]]:
    return [list(jobs[i:i + size]) for i in range(0, len(jobs), size)]


def embed_tracks_ray(
    tracks: Sequence[Track],
    store: TrackStore,
    encoder_spec: str,
    device: str,
    encoder_id: str,
    dim: int,
    spec: DecodeSpec,
    *,
    label: str,
    built_id: str,
    batch_size: int = 32,
    chunk_size: int = DEFAULT_CHUNK,
    retry_failed: bool = False,
    untouched_folders: Sequence[str] = (),
    recheck: bool = False,
    progress: Callable[[int], object] | None = None,
    before_commit: Callable[[int], None] | None = None,
) -> EmbedReport:
    """Bring the table up to date with ``tracks`` on the Ray session already started (:func:`ray_session`).

    ``built_id``: the id of the encoder the driver resolved; every actor checks it builds the same one.
    ``before_commit(i)`` is called before chunk ``i``'s commit (tests inject a crash there)."""
    import ray

    started = time.monotonic()
    report, plan, reused_tags = start_run(tracks, store, encoder_id, retry_failed=retry_failed,
                             untouched_folders=untouched_folders, recheck=recheck)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    actor_cls = ray.remote(num_gpus=1, num_cpus=0)(_EncoderActor) if gpus else ray.remote(num_cpus=0)(_EncoderActor)
    decode = ray.remote(num_cpus=1, max_retries=2)(_decode_part)
    jobs = list(plan.todo)
    actors = []
    if jobs:
        actors = [actor_cls.options(max_restarts=1, max_task_retries=1).remote(
            encoder_spec, str(store.home), device, encoder_id, label, spec.clip_samples, batch_size, built_id)
            for _ in range(max(1, gpus))]
    pending_rows: list[TrackRow] = [row_for(job, vector, encoder_id, job.track.length_s or 0.0,
                                            reused_tags.get(job.content_id)) for job, vector in plan.reuse]
    tag_names = None
    report.reused = len(plan.reuse)
    stored: list[tuple[str, int, int, str]] = []
    failed_as_planned: list[int] = []
    bar = progress(len(jobs)) if (progress and jobs) else None
    chunks = _chunks(jobs, chunk_size) or [[]]
    try:
        if actors:
            placed = ray.get([actor.placement.remote() for actor in actors])
            held, tag_names = sorted({gpu for ids, _ in placed for gpu in ids}), placed[0][1]
            report.device = f"ray: {len(actors)} encoder actor(s)" + (f", GPU {held}" if gpus else ", CPU")
        for i, chunk in enumerate(chunks):
            parts = [chunk[k::cpus] for k in range(min(cpus, len(chunk)))] if chunk else []
            encoded = [actors[n % len(actors)].encode.remote(decode.remote(part, spec))
                       for n, part in enumerate(parts)]
            rows, failures, failed_ids, new_rows = list(pending_rows), [], [], 0
            for part_rows, others in ray.get(encoded):
                rows += part_rows
                new_rows += len(part_rows)
                for job, error, too_long in others:
                    if (failure := count_not_decoded(report, job, error, too_long)) is not None:
                        failed_ids.append((job.track.key, job.size, job.mtime_ns, job.content_id))
                        failures.append(failure)
            if before_commit is not None:
                before_commit(i)
            _commit(store, rows, failures, dim, tag_names)
            pending_rows = []
            report.embedded += new_rows
            stored += [(r.key, r.size, r.mtime_ns, r.content_id) for r in rows]
            failed_as_planned += as_planned(plan, failed_ids, FAILED)
            if bar is not None:
                bar.update(len(chunk))
    except KeyboardInterrupt:
        report.interrupted = True
    except ray.exceptions.RayError as exc:  # an encoder's bug, a worker lost beyond its retries: committed chunks stay
        cause = getattr(exc, "cause", None)
        if isinstance(cause, RecsysError):
            raise type(cause)(str(cause)) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayEngineError(f"the Ray run stopped ({first[:200]}); every chunk committed before is kept: run "
                             "`recsys embed --engine ray` again to do the rest") from None
    finally:
        for actor in actors:  # free their GPU slots now, not when a traceback that holds them is collected
            ray.kill(actor)
        if bar is not None:
            bar.close()
        report.seconds = time.monotonic() - started
        write_checked(store.home, [*plan.confirmed, *as_planned(plan, stored), *failed_as_planned])
    return report


def _commit(store: TrackStore, rows: list[TrackRow], failures: list[FailureRow], dim: int,
            tag_names: tuple[str, ...] | None) -> None:
    """One chunk: its rows in one commit of the tracks table, then its failures (as the local engine records them)."""
    if rows:
        if store.dim is not None and store.dim != dim:
            store.reset_vectors(dim)  # a new encoder of another dimension: every old vector is stale
        store.upsert(rows, tag_names)
        store.clear_failures([r.key for r in rows])
    if failures:
        store.record_failures(failures)
