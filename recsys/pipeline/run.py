"""An embedding run: decode workers -> batches on the device -> vectors -> the table, incrementally and resumably.

The plan (:mod:`recsys.pipeline.plan`) says what to do; everything to decode is decoded in worker processes while the
main process encodes batches on the device and writes rows in batches. A run killed at any moment loses at most the
batch in flight; the next run plans again from what the table holds. Ctrl-C and SIGTERM stop a run the same way: what
was decoded is encoded and saved first.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from recsys.embedder.audio import Clip
from recsys.embedder.decoding import FILE_CHANGED, SERVER_UNREACHED, DecodeSpec, Job, decoded
from recsys.errors import RecsysError
from recsys.index.store import FailureRow, TrackRow, TrackStore
from recsys.library.sources import Library
from recsys.library.track import Track
from recsys.pipeline.checked import FAILED, identity, read_checked, write_checked
from recsys.pipeline.plan import Plan, plan_embedding


class EncoderOutputError(RecsysError):
    """An encoder returned vectors the table cannot hold (wrong shape, NaN/Inf, not unit length): nothing is stored."""


# |norm - 1| allowed in an encoder's output: half precision on a GPU rounds a unit vector's norm by up to ~1e-3; an
# encoder that does not normalise is off by far more. Accepted vectors are normalised again exactly before storing.
NORM_TOLERANCE = 1e-2


@dataclass
class EmbedReport:
    """What one `recsys embed` run did; every track of the library lands in exactly one count."""

    total: int = 0
    up_to_date: int = 0
    embedded: int = 0
    reused: int = 0
    deleted: int = 0
    failed: int = 0
    known_failed: int = 0
    stale: int = 0
    too_long: int = 0
    missing: int = 0
    changed: int = 0  # files that kept changing while they were decoded, or a server did not deliver: the next run
    # does them
    content_checked: int = 0  # files whose ctime moved (or --recheck): content id read again (recsys.pipeline.checked)
    rewritten: int = 0  # ... found holding other bytes under the same size and mtime: embedded again
    interrupted: bool = False
    seconds: float = 0.0
    encoder: str = ""
    encoder_id: str = ""
    device: str = ""
    index: dict = field(default_factory=dict)
    library: Library | None = None
    new_failures: list[tuple[str, str]] = field(default_factory=list)
    kept_missing: int = 0  # rows kept although their file is missing (left out of the index; `recsys prune`)
    empty_folders: list[str] = field(default_factory=list)  # music folders that hold nothing now (unmounted?)
    plan: Plan | None = None
    fingerprinted: int = 0  # files fingerprinted for the lists' "one recording" rule (recsys.pipeline.fingerprints)
    fingerprint_failures: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of those with none

    @property
    def decoded_per_s(self) -> float:
        return (self.embedded + self.failed + self.too_long) / self.seconds if self.seconds else 0.0


def _checked_vectors(out: object, batch: Sequence[tuple[Job, object]], dim: int, label: str) -> np.ndarray:
    """The encoder's output for ``batch`` as float32 N x dim unit vectors, or an error naming the encoder: a bad
    vector stored once is served, reused by content id and trained on for good."""
    try:
        if hasattr(out, "detach"):
            out = out.detach().float().cpu().numpy()
        vectors = np.asarray(out, dtype=np.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise EncoderOutputError(f"encoder {label} returned something that is not an array of vectors ({exc}): fix "
                                 "the encoder; nothing of this batch was stored") from None
    n = len(batch)
    if vectors.shape != (n, dim):
        raise EncoderOutputError(f"encoder {label} returned shape {tuple(vectors.shape)} for {n} clip(s), expected "
                                 f"({n}, {dim}) from its dim: fix the encoder; nothing of this batch was stored")
    rows_ok = np.isfinite(vectors).all(axis=1)
    if not rows_ok.all():
        first = batch[int(np.flatnonzero(~rows_ok)[0])][0].track.path
        raise EncoderOutputError(f"encoder {label} returned NaN or infinite values for {int((~rows_ok).sum())} of {n} "
                                 f"clip(s) (first: {first}): fix the encoder; nothing of this batch was stored")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise EncoderOutputError(f"encoder {label} returned vectors that are not unit length (norm {norms[i]:.4g} for "
                                 f"{batch[i][0].track.path}): return L2-normalised vectors; nothing of this batch "
                                 "was stored")
    return (vectors / norms[:, None]).astype(np.float32)


def _checked_tags(out: object, n: int, n_tags: int, label: str) -> np.ndarray:
    """The tag head's output as float32 n x n_tags probabilities, or an error naming the encoder."""
    if hasattr(out, "detach"):
        out = out.detach().float().cpu().numpy()
    probs = np.asarray(out, dtype=np.float32)
    if probs.shape != (n, n_tags) or not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise EncoderOutputError(f"encoder {label} returned tag probabilities of shape {tuple(probs.shape)} (expected "
                                 f"({n}, {n_tags}) in [0, 1]): fix the encoder; nothing of this batch was stored")
    return probs


# ---- the run --------------------------------------------------------------------------------------------------------


def full_crop(clip: Clip, crop_samples: int) -> Clip | None:
    """``clip`` padded to exactly ``crop_samples`` when it is a full crop (batched with others), None when the track
    is shorter (encoded on its own, with what it has): resampling may round a full crop a sample or two short."""
    n = len(clip.samples)
    if n < crop_samples - 2:
        return None
    samples = np.zeros(crop_samples, dtype=np.float32)
    samples[: min(n, crop_samples)] = clip.samples[:crop_samples]
    return Clip(samples, clip.sample_rate, clip.start_s, clip.duration_s, clip.decoder)


def encode_batch(encoder, batch: list[tuple[Job, Clip]], encoder_id: str, label: str, device,
                 tag_names: tuple[str, ...] | None) -> list[TrackRow]:
    """Encode clips of one length together and return their rows (checked by :func:`_checked_vectors`), with the
    tag probabilities when the encoder has a tag head (``tag_names``)."""
    import torch

    waves = torch.from_numpy(np.stack([c.samples for _, c in batch]))
    probs = None
    try:
        if tag_names:
            out, probs = encoder.encode_with_tags(waves.to(device))
        else:
            out = encoder.encode(waves.to(device))
    except Exception as exc:  # a plug-in's bug: one line naming it, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderOutputError(f"encoder {label} failed on a batch ({type(exc).__name__}: {first}): fix "
                                 "the encoder or choose another with --encoder") from None
    vectors = _checked_vectors(out, batch, int(encoder.dim), label)
    tags = None if probs is None else _checked_tags(probs, len(batch), len(tag_names), label)
    return [row_for(job, vector, encoder_id, job.track.length_s or clip.duration_s, None if tags is None else tags[i])
            for i, ((job, clip), vector) in enumerate(zip(batch, vectors, strict=True))]


def row_for(job: Job, vector: np.ndarray, encoder_id: str, duration_s: float,
            tags: np.ndarray | None = None) -> TrackRow:
    t = job.track
    return TrackRow(
        key=t.key,
        path=t.path,
        start_s=float(t.start_s),
        content_id=job.content_id,
        size=job.size,
        mtime_ns=job.mtime_ns,
        duration_s=float(duration_s),
        artist=t.artist,
        album=t.album,
        title=t.title,
        genre=t.genre,
        year=t.year,
        track_number=t.track_number,
        encoder_id=encoder_id,
        vector=np.asarray(vector, dtype=np.float32),
        embedded_at=datetime.now(timezone.utc),
        tags=tags,
    )


class _Encoding:
    """Collects decoded clips into equal-length batches for the device and finished rows into write batches."""

    def __init__(self, encoder, encoder_id: str, crop_samples: int, batch_size: int, store: TrackStore,
                 write_batch: int, label: str, critical: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.encoder, self.encoder_id, self.label = encoder, encoder_id, label
        # None: no tag head (or nothing encoded yet: asking a lazy encoder would load it), rows hold no tags
        self.tag_names: tuple[str, ...] | None = None
        self._head_checked = False
        self.critical = critical  # sections a signal must not cut: encoding a batch, writing rows
        self.crop_samples, self.batch_size = crop_samples, batch_size
        self.store, self.write_batch = store, write_batch
        self.clips: list[tuple[Job, Clip]] = []
        self.rows: list[TrackRow] = []
        self.failures: list[FailureRow] = []
        self.encoded = 0  # decoded clips turned into rows (reused vectors are not counted)
        self.written = 0
        self.stored: list[tuple[str, int, int, str]] = []  # (key, size, mtime_ns, content id) of every row written

    def add_clip(self, job: Job, clip: Clip) -> None:
        full = full_crop(clip, self.crop_samples)
        if full is not None:
            self.clips.append((job, full))
            if len(self.clips) >= self.batch_size:
                self.flush_clips()
        else:  # a short track is encoded on its own, with what it has
            self._encode([(job, clip)])

    def add_row(self, row: TrackRow) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.write_batch:
            self.flush_rows()

    def add_failure(self, row: FailureRow) -> None:
        self.failures.append(row)
        if len(self.failures) >= self.write_batch:
            self.flush_failures()

    def _encode(self, batch: list[tuple[Job, Clip]]) -> None:
        with self.critical():
            self._encode_batch(batch)

    def _encode_batch(self, batch: list[tuple[Job, Clip]]) -> None:
        if not self._head_checked:
            from recsys.embedder.interface import tag_names  # torch: imported when encoding, not with the module

            self.tag_names, self._head_checked = tag_names(self.encoder), True
        for row in encode_batch(self.encoder, batch, self.encoder_id, self.label, self.device, self.tag_names):
            self.add_row(row)
        self.encoded += len(batch)

    @property
    def device(self):
        return getattr(self.encoder, "device", "cpu")

    def flush_clips(self) -> None:
        if self.clips:
            batch, self.clips = self.clips, []
            self._encode(batch)

    def flush_rows(self) -> None:
        with self.critical():
            self._flush_rows()

    def _flush_rows(self) -> None:
        if self.rows:
            dim = len(self.rows[0].vector)
            if self.store.dim is not None and self.store.dim != dim:
                # A new encoder of another dimension: its first checked batch replaces the old vectors (all stale).
                # Not before, so an encoder that fails on its first batch costs no stored vector.
                self.store.reset_vectors(dim)
            self.store.upsert(self.rows, self.tag_names)
            self.store.clear_failures([r.key for r in self.rows])
            self.written += len(self.rows)
            self.stored.extend((r.key, r.size, r.mtime_ns, r.content_id) for r in self.rows)
            self.rows = []

    def flush_failures(self) -> None:
        if self.failures:
            self.store.record_failures(self.failures)
            self.failures = []


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


class _Interrupts:
    """Ctrl-C and SIGTERM (systemd stopping the service, `kill`) both stop a run as KeyboardInterrupt, but never in the
    middle of encoding a batch or writing rows: a signal there waits for the section to end. So the rows counted are
    exactly the rows saved, whenever the signal lands."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False
        self.done = False  # the run is saving its last rows: later signals change nothing

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.depth or self.done:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def critical(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending and not self.done:
            self.pending = False
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        try:
            previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: signals cannot be handled here
            yield
            return
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _named_failure(track: Track, error: str) -> tuple[str, str]:
    """(what failed, why) for people: a CUE segment by its key (the file and its start), so the segments of one file
    that fail each get their own line, not the file's name once per segment."""
    if not track.segment:
        return track.path, error
    prefix = f"{track.path}: "
    return track.key, error[len(prefix):] if error.startswith(prefix) else error


def count_not_decoded(report: EmbedReport, job: Job, error: str | None, too_long: bool) -> FailureRow | None:
    """Count a file that gave no clip; the failure row to record when it is a failure (not too long, not a file
    that changed or a server that did not deliver: the next run does those)."""
    if too_long:
        report.too_long += 1
        return None
    if error in (FILE_CHANGED, SERVER_UNREACHED):
        report.changed += 1
        return None
    report.failed += 1
    report.new_failures.append(_named_failure(job.track, error or "unknown error"))
    return FailureRow(key=job.track.key, path=job.track.path, size=job.size, mtime_ns=job.mtime_ns,
                      error=error or "unknown error")


def start_run(tracks: Sequence[Track], store: TrackStore, encoder_id: str, *, retry_failed: bool,
              untouched_folders: Sequence[str], recheck: bool) -> tuple[EmbedReport, Plan, dict]:
    """Plan against the table (on this machine, whatever engine encodes) and delete the rows the plan drops; the
    report starts with the plan's counts; the tags of the reused vectors by content id."""
    report = EmbedReport(total=len(tracks), encoder_id=encoder_id)
    failures = {f.key: f for f in store.failures()}
    plan = plan_embedding(
        tracks,
        store.states(),
        failures,
        encoder_id,
        retry_failed=retry_failed,
        vectors_by_content_id=lambda cids: store.vectors_by_content_id(cids, encoder_id),
        untouched_folders=untouched_folders,
        checked=read_checked(store.home),
        recheck=recheck,
    )
    report.up_to_date, report.known_failed, report.missing = plan.up_to_date, plan.known_failed, len(plan.missing)
    report.stale, report.content_checked, report.rewritten = plan.stale, plan.content_checked, plan.rewritten
    report.kept_missing = len(plan.missing_keys)
    report.plan = plan
    # a moved file keeps its tags with its vector: read before the moved rows are deleted
    reused_tags = store.tags_by_content_id([job.content_id for job, _ in plan.reuse], encoder_id)
    if plan.delete_keys:
        store.delete(plan.delete_keys)
        report.deleted = len(plan.delete_keys)
    return report, plan, reused_tags


def embed_tracks(
    tracks: Sequence[Track],
    store: TrackStore,
    encoder,
    encoder_id: str,
    spec: DecodeSpec,
    *,
    workers: int = 1,
    batch_size: int = 32,
    write_batch: int = 64,
    retry_failed: bool = False,
    progress: Callable[[int], object] | None = None,
    label: str | None = None,
    untouched_folders: Sequence[str] = (),
    recheck: bool = False,
) -> EmbedReport:
    """Bring the table up to date with ``tracks`` for this encoder; Ctrl-C or SIGTERM keeps everything decoded so
    far (the clips waiting for a full batch are encoded first, and no signal cuts a batch or a write, so the count
    reported is the count saved). ``recheck``: read every file's content id, whatever its size, mtime and ctime say
    (``recsys.pipeline.checked``)."""
    started = time.monotonic()
    report, plan, reused_tags = start_run(tracks, store, encoder_id, retry_failed=retry_failed,
                                          untouched_folders=untouched_folders, recheck=recheck)
    interrupts = _Interrupts()
    encoding = _Encoding(encoder, encoder_id, spec.clip_samples, batch_size, store, write_batch,
                         label or str(getattr(encoder, "name", type(encoder).__name__)), interrupts.critical)
    for job, vector in plan.reuse:
        encoding.add_row(row_for(job, vector, encoder_id, job.track.length_s or 0.0, reused_tags.get(job.content_id)))
    report.reused = len(plan.reuse)
    bar = progress(len(plan.todo)) if (progress and plan.todo) else _NoProgress()
    failed_as_planned: list[int] = []
    try:
        with interrupts.installed(), closing(decoded(plan.todo, spec, workers)) as outcomes:
            try:
                for job, clip, error, too_long in outcomes:  # a signal lands while waiting for the decoders
                    with interrupts.critical():
                        if clip is not None:
                            encoding.add_clip(job, clip)
                        elif (failure := count_not_decoded(report, job, error, too_long)) is not None:
                            failed_as_planned.extend(as_planned(plan, [(job.track.key, job.size, job.mtime_ns,
                                                                         job.content_id)], FAILED))
                            encoding.add_failure(failure)
                        bar.update(1)
            except KeyboardInterrupt:
                report.interrupted = True
                outcomes.close()  # the workers stop now, not after the last batch is encoded
            interrupts.done = True  # saving what is decoded: a signal now only marks the run interrupted
            encoding.flush_clips()
            encoding.flush_rows()
            encoding.flush_failures()
        report.interrupted = report.interrupted or interrupts.pending
    finally:
        bar.close()
        encoding.flush_rows()
        encoding.flush_failures()
        report.embedded = encoding.encoded
        report.seconds = time.monotonic() - started
        write_checked(store.home, [*plan.confirmed, *as_planned(plan, encoding.stored), *failed_as_planned])
    return report


def as_planned(plan: Plan, outcomes: list[tuple[str, int, int, str]], recorded: str | None = None) -> Iterator[int]:
    """The identities of rows written (or failures recorded: ``recorded`` is then FAILED) from the very file the plan
    saw: a file that changed while it was decoded is recorded under its new size and mtime, but its ctime was not
    seen, so the next run checks it."""
    planned = {job.track.key: job for job in plan.todo} | {job.track.key: job for job, _ in plan.reuse}
    for key, size, mtime_ns, cid in outcomes:
        job = planned.get(key)
        if job is not None and (job.size, job.mtime_ns, job.content_id) == (size, mtime_ns, cid):
            yield identity(key, size, mtime_ns, plan.ctimes[key], cid if recorded is None else recorded)
