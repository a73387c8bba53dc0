"""`recsys embed --engine ray`: the same run as :mod:`recsys.pipeline.run`, with decoding and encoding on a Ray cluster.

What stays on this machine (the driver): the plan against the table (:func:`recsys.pipeline.run.start_run`), every
commit and the failures. What goes to the cluster: decoding, as Ray CPU tasks, and encoding, in a pool of actors that
each build the encoder once (one GPU each when the cluster has GPUs). The work is cut into chunks (setting
``embed.ray_chunk``), each committed in ONE atomic commit, so a crash, a lost worker or Ctrl-C keeps every committed
chunk and the next run plans again from the table and does only the rest. While a chunk is committed the next one is
already decoding and encoding.

Two kinds of chunk, never mixed, so each stays one commit:

- new keys (the bulk of a first run): the encoder actors turn their rows into Arrow tables that stay in Ray's object
  store, ``lance_ray.write_lance`` has Ray tasks write them as fragments where they are, and the driver commits one
  Lance Append (:meth:`recsys.index.store.TrackStore.append_with`). No vector crosses to the driver, and the commit's
  cost does not grow with the table (a ``merge_insert`` joins against every key the table holds).
- keys the table already holds (a changed file, rows of another encoder): an Append would add a second row per key,
  and Lance has no distributed ``merge_insert``, so their rows come back to the driver and go in by
  :meth:`~recsys.index.store.TrackStore.upsert` (one ``merge_insert``), as the local engine writes them. Vectors
  reused from moved files go the same way, in one commit before the first chunk.

A crashed or killed worker: a decode task is run again by Ray (``DECODE_RETRIES``), then its files one per task, tried
once each, so the file that crashes its worker is that file's recorded failure (as the local engine records a decoder
crash); an encoder actor is started again and its call retried (``RESTARTS``), beyond that the run stops with one
line, every chunk committed before kept. A file that does not decode is that file's recorded failure.

Ray is imported only here, and only when this engine runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from recsys.embedder.decoding import DecodeSpec, Job, decoded
from recsys.errors import RecsysError
from recsys.index.store import FailureRow, TrackRow, TrackStore, track_batch
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

DEFAULT_CHUNK = 512  # tracks per commit (setting embed.ray_chunk): a crash loses at most the chunk in flight


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

    def encode_table(self, decoded_part: list, dim: int, n_tags: int | None) -> tuple[object, tuple[list, list]]:
        """:meth:`encode` for an Append: the rows as one Arrow table (left in the object store for the write tasks)
        and, apart, what the driver needs: the rows' identities and the clips that did not decode."""
        rows, others = self.encode(decoded_part)
        return (track_batch(rows, dim, n_tags) if rows else None), ([_identity(r) for r in rows], others)

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


Identity = tuple[str, int, int, str]  # (key, size, mtime_ns, content id) of a row written


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
    # keys an Append must not repeat (read after the plan's deletes); none when the first commit resets the table
    # (an encoder of another dimension: every row goes)
    held = set(store.states()) if plan.table_rows and store.dim in (None, dim) else set()
    fresh = [job for job in plan.todo if job.track.key not in held]
    stale = [job for job in plan.todo if job.track.key in held]
    chunks = [(True, c) for c in _chunks(fresh, chunk_size)] + [(False, c) for c in _chunks(stale, chunk_size)]
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    actor_cls = ray.remote(num_gpus=1, num_cpus=0)(_EncoderActor) if gpus else ray.remote(num_cpus=0)(_EncoderActor)
    actors = []
    if chunks:
        actors = [actor_cls.options(max_restarts=RESTARTS, max_task_retries=RESTARTS).remote(
            encoder_spec, str(store.home), device, encoder_id, label, spec.clip_samples, batch_size, built_id)
            for _ in range(max(1, gpus))]
    report.reused = len(plan.reuse)
    stored: list[Identity] = []
    failed_as_planned: list[int] = []
    bar = progress(len(plan.todo)) if (progress and plan.todo) else None
    try:
        if plan.reuse:  # vectors already in hand (moved files): one commit before any chunk
            rows = [row_for(job, vector, encoder_id, job.track.length_s or 0.0, reused_tags.get(job.content_id))
                    for job, vector in plan.reuse]
            _upsert(store, rows, [], dim, None)
            stored += [_identity(r) for r in rows]
        if actors:
            placed = ray.get([actor.placement.remote() for actor in actors])
            held_gpus, tag_names = sorted({gpu for ids, _ in placed for gpu in ids}), placed[0][1]
            report.device = f"ray: {len(actors)} encoder actor(s)" + (f", GPU {held_gpus}" if gpus else ", CPU")
            n_tags = store.batch_tags(dim, tag_names)
            submit = _Submitter(actors, cpus, spec, dim, n_tags)
            in_flight = submit(*chunks[0])
            for i, (append, chunk) in enumerate(chunks):
                parts = in_flight
                if i + 1 < len(chunks):  # the next chunk decodes and encodes while this one is committed
                    in_flight = submit(*chunks[i + 1])
                outcome = _collect(parts, report, submit)
                if before_commit is not None:
                    before_commit(i)
                if append:
                    _append(store, outcome, dim, tag_names)
                else:
                    _upsert(store, outcome.rows, outcome.failures, dim, tag_names)
                report.embedded += len(outcome.written)
                stored += outcome.written
                failed_as_planned += as_planned(plan, outcome.failed, FAILED)
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


RESTARTS = 3  # an encoder actor killed (OOM killer, a lost node) is started again and its call retried this often
DECODE_RETRIES = 2  # a decode task whose worker died is run again this often (then its files one by one, once each)


def _identity(row: TrackRow) -> Identity:
    return row.key, row.size, row.mtime_ns, row.content_id


class _Submitter:
    """Sends one chunk to the cluster: its parts (one per CPU) decoded by tasks and encoded by the actors in turn.

    An Append chunk's rows stay in the object store as Arrow tables (the write tasks read them from there); an
    upsert chunk's rows come back to this machine, where its ``merge_insert`` runs."""

    def __init__(self, actors: list, cpus: int, spec: DecodeSpec, dim: int, n_tags: int | None) -> None:
        import ray

        self.actors, self.cpus, self.spec, self.dim, self.n_tags = actors, cpus, spec, dim, n_tags
        self.decode = ray.remote(num_cpus=1, max_retries=DECODE_RETRIES)(_decode_part)
        self.decode_alone = ray.remote(num_cpus=1, max_retries=0)(_decode_part)
        self.sent = 0

    def __call__(self, append: bool, chunk: list[Job]) -> list[_Part]:
        return [self.part(append, chunk[k::self.cpus]) for k in range(min(self.cpus, len(chunk)))]

    def part(self, append: bool, jobs: list[Job], alone: bool = False) -> _Part:
        """One part in flight; ``alone``: one file of a part whose worker kept dying, tried once (a worker that dies
        on it is that file's failure, as a decode worker's death is in the local engine)."""
        decode = self.decode_alone if alone else self.decode
        actor, decoded_part = self.actors[self.sent % len(self.actors)], decode.remote(jobs, self.spec)
        self.sent += 1
        if append:
            table, meta = actor.encode_table.options(num_returns=2).remote(decoded_part, self.dim, self.n_tags)
            return _Part(append, jobs, table, meta)
        return _Part(append, jobs, None, actor.encode.remote(decoded_part))


@dataclass
class _Part:
    """One part of a chunk in flight: its jobs, the ref of its Arrow table (Append chunks) and of what the driver
    reads: the rows (upsert chunks) or their identities, and the clips that did not decode."""

    append: bool
    jobs: list[Job]
    table: object
    meta: object


class _Outcome:
    """One chunk as the driver commits it: the rows (upsert chunks) or the Arrow tables left in the object store
    (Append chunks), what they hold, and the failures to record."""

    def __init__(self) -> None:
        self.rows: list[TrackRow] = []
        self.tables: list = []  # ObjectRefs of Arrow tables
        self.written: list[Identity] = []
        self.failures: list[FailureRow] = []
        self.failed: list[Identity] = []


def _collect(parts: list[_Part], report: EmbedReport, submit: _Submitter, outcome: _Outcome | None = None) -> _Outcome:
    """Wait for a chunk's parts. A part whose decode task crashed its worker beyond Ray's retries (a file that
    crashes the decoder, the OOM killer) is decoded again one file per task, so that only the file that crashes
    its worker is lost, recorded as that file's failure, as the local engine records it."""
    import ray

    outcome = outcome or _Outcome()
    for part in parts:
        try:
            rows, others = ray.get(part.meta)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError) as exc:
            if len(part.jobs) > 1:
                _collect([submit.part(part.append, [job], alone=True) for job in part.jobs], report, submit, outcome)
                continue
            (job,) = part.jobs
            how = ("Ray stopped its worker for lack of memory" if isinstance(exc, ray.exceptions.OutOfMemoryError)
                   else "its Ray worker process died")
            rows, others = [], [(job, f"{job.track.path}: the decoder crashed on this file ({how})", False)]
        if not part.append:
            outcome.rows += rows
            outcome.written += [_identity(r) for r in rows]
        elif rows:
            outcome.tables.append(part.table)
            outcome.written += rows
        for job, error, too_long in others:
            if (failure := count_not_decoded(report, job, error, too_long)) is not None:
                outcome.failed.append((job.track.key, job.size, job.mtime_ns, job.content_id))
                outcome.failures.append(failure)
    return outcome


def _append(store: TrackStore, outcome: _Outcome, dim: int, tag_names: tuple[str, ...] | None) -> None:
    """An Append chunk: the workers write its tables as fragments, one commit; then its failures."""
    if outcome.tables:
        def write(uri: str, schema, storage_options: dict[str, str] | None) -> None:
            import lance_ray
            import ray

            _quiet_data()
            # the write tasks claim no CPU: the next chunk's decode tasks hold them all, and a write waiting for one
            # would stall the run behind them
            lance_ray.write_lance(ray.data.from_arrow_refs(outcome.tables), uri, schema=schema, mode="append",
                                  storage_options=storage_options, ray_remote_args={"num_cpus": 0})

        store.append_with(write, dim, tag_names)
        store.clear_failures([key for key, *_ in outcome.written])
    if outcome.failures:
        store.record_failures(outcome.failures)


def _quiet_data() -> None:
    """Ray Data's progress bars and per-write log lines off: the CLI's own progress bar reports the run."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its warning that progress bars are off, among others


def _upsert(store: TrackStore, rows: list[TrackRow], failures: list[FailureRow], dim: int,
            tag_names: tuple[str, ...] | None) -> None:
    """Rows that may replace others (stale keys, reused vectors): one ``merge_insert`` commit; then the failures."""
    if rows:
        if store.dim is not None and store.dim != dim:
            store.reset_vectors(dim)  # a new encoder of another dimension: every old vector is stale
        store.upsert(rows, tag_names)
        store.clear_failures([r.key for r in rows])
    if failures:
        store.record_failures(failures)
