"""`recsys embed`: decode workers -> batches on the device -> vectors -> the table, incrementally and resumably.

The plan compares the library with the table: unchanged rows of the current encoder are kept, moved or copied files
reuse their vector (same content id), and everything else is decoded in worker processes while the main process
encodes batches on the device and writes rows in batches. A run killed at any moment loses at most the batch in
flight; the next run plans again from what the table holds. Ctrl-C and SIGTERM stop a run the same way: what was
decoded is encoded and saved first.

Rows are never deleted because a file cannot be found (an unmounted share, a run over a subset of the library): a
row whose file is missing is kept, left out of the index, and back in it as soon as the file is, without decoding it
again. Only `recsys prune` removes such rows, and a move's leftover (a missing row whose content id now lives under
another key) is dropped, since its vector is kept.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from recsys.app.checked import FAILED, identity, read_checked, write_checked
from recsys.app.maintenance import missing_keys, refresh_snapshot
from recsys.app.noop import LibraryDigest, NoopRecord, read_record, write_record
from recsys.app.settings import library_inputs
from recsys.config import Settings
from recsys.embedder.audio import Clip
from recsys.embedder.decoding import (
    FILE_CHANGED,
    SERVER_UNREACHED,
    DecodeSpec,
    Job,
    decode_spec,
    decoded,
    default_workers,
)
from recsys.embedder.lazy import device_label, remember_facts, resolve_for_planning
from recsys.errors import RecsysError
from recsys.home.lock import HomeLock
from recsys.index.ann import excluded_digest, read_manifest
from recsys.index.store import FailureRow, RowState, TrackRow, TrackStore
from recsys.library import remote
from recsys.library.content_id import track_content_id
from recsys.library.reading import ReadDeadline, ReadTimeout, may_open
from recsys.library.sources import Library, load_configured_library
from recsys.library.track import Track, is_under


class NoTracksError(RecsysError):
    """The library was found but lists nothing to embed."""


class MissingFilesError(RecsysError):
    """Every file of the library is missing: most likely an unmounted drive, so nothing is deleted."""


class EncoderOutputError(RecsysError):
    """An encoder returned vectors the table cannot hold (wrong shape, NaN/Inf, not unit length): nothing is stored."""


# |norm - 1| allowed in an encoder's output: half precision on a GPU rounds a unit vector's norm by up to ~1e-3; an
# encoder that does not normalise is off by far more. Accepted vectors are normalised again exactly before storing.
NORM_TOLERANCE = 1e-2


@dataclass
class Plan:
    todo: list[Job] = field(default_factory=list)
    reuse: list[tuple[Job, np.ndarray]] = field(default_factory=list)
    up_to_date: int = 0
    known_failed: int = 0
    stale: int = 0  # rows made by another encoder or clip policy, to be embedded again
    missing: list[Track] = field(default_factory=list)  # tracks of the library whose file cannot be found
    missing_keys: list[str] = field(default_factory=list)  # rows kept, but left out of the index: file not found
    delete_keys: list[str] = field(default_factory=list)  # rows of moved files: their vector lives on elsewhere
    library_digest: str = ""  # the listed tracks' file identities as planned on (recsys.app.noop)
    unlisted: list[tuple[str, bool]] = field(default_factory=list)  # (path, exists) of rows the library does not list
    table_rows: int = 0
    failures: list[dict] = field(default_factory=list)  # every failure recorded, as `recsys status` shows them
    content_checked: int = 0  # files whose content id was read again although size and mtime matched their row
    rewritten: int = 0  # ... and found to hold other bytes (rewritten with its timestamps kept): embedded again
    confirmed: list[int] = field(default_factory=list)  # identities seen holding their row's bytes (app.checked)
    ctimes: dict[str, int] = field(default_factory=dict)  # key -> ctime_ns of the files to write, as planned on

    @property
    def nothing_to_do(self) -> bool:
        return not (self.todo or self.reuse or self.delete_keys)


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
    content_checked: int = 0  # files whose ctime moved (or --recheck): content id read again (recsys.app.checked)
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

    @property
    def decoded_per_s(self) -> float:
        return (self.embedded + self.failed + self.too_long) / self.seconds if self.seconds else 0.0


def plan_embedding(
    tracks: Sequence[Track],
    states: dict[str, RowState],
    failures: dict[str, FailureRow],
    encoder_id: str,
    retry_failed: bool = False,
    vectors_by_content_id: Callable[[list[str]], dict[str, np.ndarray]] | None = None,
    untouched_folders: Sequence[str] = (),
    checked: set[int] | None = None,
    recheck: bool = False,
) -> Plan:
    """Decide per track: keep, reuse a vector, skip a known failure, or decode; which rows are missing (kept, out of
    the index) and which are a moved file's leftover (dropped). Rows under ``untouched_folders`` (music folders that
    are empty as a whole: unmounted) are left exactly as they are.

    A track whose size and mtime match its row is kept when its identity is in ``checked`` (``recsys.app.checked``;
    None: no record, every such track trusted); else, and for every one with ``recheck``, its content id is read and
    compared with the row's."""
    plan = Plan(table_rows=len(states), failures=[
        {"path": f.path, "error": f.error, "failed_at": f.failed_at} for f in failures.values()])
    candidates: list[Job] = []
    listed: set[str] = set()
    digest = LibraryDigest(untouched_folders)
    with ReadDeadline() as deadline:
        for track in tracks:
            listed.add(track.key)
            try:
                st = remote.stat(track.path)  # a server's file: its size and date as the server listed them
            except OSError:
                digest.add(track, None)
                plan.missing.append(track)
                continue
            digest.add(track, st)
            job = _planned(plan, track, st, states.get(track.key), failures.get(track.key), encoder_id, retry_failed,
                           checked, recheck, deadline)
            if job is not None:
                candidates.append(job)
    if tracks and len(plan.missing) == len(tracks):
        raise MissingFilesError(
            f"none of the {len(tracks)} music files of the library can be found (first: {tracks[0].path}): "
            "is the music drive mounted? Nothing was changed"
        )
    reusable = vectors_by_content_id([j.content_id for j in candidates]) if vectors_by_content_id else {}
    for job in candidates:
        vector = reusable.get(job.content_id)
        if vector is not None:
            plan.reuse.append((job, vector))
        else:
            plan.todo.append(job)
    plan.library_digest = digest.hexdigest()
    _rows_of_unlisted_or_missing(plan, states, listed, untouched_folders)
    return plan


def _content_id(track: Track, st: os.stat_result, deadline: ReadDeadline) -> str:
    """The content id of the track's file as ``st`` shows it; '' for what is never opened (a FIFO, a device, an empty
    or pseudo-file: reading it could block; the decoder records it as a failure). Raises OSError (a read cut by the
    deadline included)."""
    if not may_open(st):
        return ""
    return deadline.read(track.path, track_content_id, track.path, st.st_size, track.start_s, track.segment)


def _planned(plan: Plan, track: Track, st: os.stat_result, row: RowState | None, failure: FailureRow | None,
             encoder_id: str, retry_failed: bool, checked: set[int] | None, recheck: bool,
             deadline: ReadDeadline) -> Job | None:
    """One listed track whose file exists, counted in ``plan``; the Job to decode or reuse for, or None."""
    cid: str | None = None
    if (
        row is not None
        and row.encoder_id == encoder_id
        and row.size == st.st_size
        and row.mtime_ns == st.st_mtime_ns
        and row.path == track.path
    ):
        confirmed = identity(track.key, st.st_size, st.st_mtime_ns, st.st_ctime_ns, row.content_id)
        if not recheck and (checked is None or confirmed in checked):
            plan.up_to_date += 1
            plan.confirmed.append(confirmed)
            return None
        # the inode changed since the row's bytes were last seen (or --recheck): are they still the row's?
        try:
            cid = _content_id(track, st, deadline)
        except OSError:  # unreadable now (a share that hangs, a chmod): the row is kept as it is, checked next run
            plan.up_to_date += 1
            return None
        plan.content_checked += 1
        if cid == row.content_id:
            plan.up_to_date += 1
            plan.confirmed.append(confirmed)
            return None
        plan.rewritten += 1  # same size and mtime, other bytes: rewritten with its timestamps kept
    elif row is not None and row.encoder_id != encoder_id:
        plan.stale += 1
    if (
        cid is None
        and failure is not None
        and not retry_failed
        and failure.size == st.st_size
        and failure.mtime_ns == st.st_mtime_ns
    ):
        failed = identity(track.key, st.st_size, st.st_mtime_ns, st.st_ctime_ns, FAILED)
        if checked is None or failed in checked:  # else rewritten since it failed, timestamps kept: tried again
            plan.known_failed += 1
            plan.confirmed.append(failed)
            return None
    if cid is None:
        try:
            cid = _content_id(track, st, deadline)
        except ReadTimeout:
            cid = ""  # the decoder, under its own deadline, records it as this file's failure
        except OSError:
            plan.missing.append(track)
            return None
    plan.ctimes[track.key] = st.st_ctime_ns
    return Job(track, st.st_size, st.st_mtime_ns, cid)


def _rows_of_unlisted_or_missing(plan: Plan, states: dict[str, RowState], listed: set[str],
                                 untouched_folders: Sequence[str]) -> None:
    """Which rows are missing (kept, out of the index) and which are a moved file's leftover (dropped)."""
    missing_listed = {t.key for t in plan.missing}
    living = {j.content_id for j, _ in plan.reuse} | {
        r.content_id for k, r in states.items() if k in listed and k not in missing_listed}
    for key, row in sorted(states.items()):
        if any(is_under(row.path, folder) for folder in untouched_folders):
            continue
        if key in listed:
            gone = key in missing_listed
        else:
            gone = not remote.exists(row.path)
            plan.unlisted.append((row.path, not gone))
        if gone:
            if row.content_id and row.content_id in living:
                plan.delete_keys.append(key)  # moved or renamed: its vector was reused under the new key
            else:
                plan.missing_keys.append(key)


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


# ---- the run --------------------------------------------------------------------------------------------------------


def _row(job: Job, vector: np.ndarray, encoder_id: str, duration_s: float) -> TrackRow:
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
    )


class _Encoding:
    """Collects decoded clips into equal-length batches for the device and finished rows into write batches."""

    def __init__(self, encoder, encoder_id: str, crop_samples: int, batch_size: int, store: TrackStore,
                 write_batch: int, label: str, critical: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.encoder, self.encoder_id, self.label = encoder, encoder_id, label
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
        n = len(clip.samples)
        if n >= self.crop_samples - 2:  # resampling may round a full crop a sample or two short
            samples = np.zeros(self.crop_samples, dtype=np.float32)
            samples[: min(n, self.crop_samples)] = clip.samples[: self.crop_samples]
            self.clips.append((job, Clip(samples, clip.sample_rate, clip.start_s, clip.duration_s, clip.decoder)))
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
        import torch

        waves = torch.from_numpy(np.stack([c.samples for _, c in batch]))
        try:
            out = self.encoder.encode(waves.to(self.device))
        except Exception as exc:  # a plug-in's bug: one line naming it, not a traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EncoderOutputError(f"encoder {self.label} failed on a batch ({type(exc).__name__}: {first}): fix "
                                     "the encoder or choose another with --encoder") from None
        vectors = _checked_vectors(out, batch, int(self.encoder.dim), self.label)
        for (job, clip), vector in zip(batch, vectors, strict=True):
            self.add_row(_row(job, vector, self.encoder_id, job.track.length_s or clip.duration_s))
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
            self.store.upsert(self.rows)
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
    (``recsys.app.checked``)."""
    started = time.monotonic()
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
    if plan.delete_keys:
        store.delete(plan.delete_keys)
        report.deleted = len(plan.delete_keys)
    interrupts = _Interrupts()
    encoding = _Encoding(encoder, encoder_id, spec.clip_samples, batch_size, store, write_batch,
                         label or str(getattr(encoder, "name", type(encoder).__name__)), interrupts.critical)
    for job, vector in plan.reuse:
        encoding.add_row(_row(job, vector, encoder_id, job.track.length_s or 0.0))
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
                        elif too_long:
                            report.too_long += 1
                        elif error in (FILE_CHANGED, SERVER_UNREACHED):
                            report.changed += 1
                        else:
                            report.failed += 1
                            report.new_failures.append(_named_failure(job.track, error or "unknown error"))
                            failed_as_planned.extend(_as_planned(plan, [(job.track.key, job.size, job.mtime_ns,
                                                                         job.content_id)], FAILED))
                            encoding.add_failure(
                                FailureRow(key=job.track.key, path=job.track.path, size=job.size,
                                           mtime_ns=job.mtime_ns, error=error or "unknown error")
                            )
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
        write_checked(store.home, [*plan.confirmed, *_as_planned(plan, encoding.stored), *failed_as_planned])
    return report


def _as_planned(plan: Plan, outcomes: list[tuple[str, int, int, str]], recorded: str | None = None) -> Iterator[int]:
    """The identities of rows written (or failures recorded: ``recorded`` is then FAILED) from the very file the plan
    saw: a file that changed while it was decoded is recorded under its new size and mtime, but its ctime was not
    seen, so the next run checks it."""
    planned = {job.track.key: job for job in plan.todo} | {job.track.key: job for job, _ in plan.reuse}
    for key, size, mtime_ns, cid in outcomes:
        job = planned.get(key)
        if job is not None and (job.size, job.mtime_ns, job.content_id) == (size, mtime_ns, cid):
            yield identity(key, size, mtime_ns, plan.ctimes[key], cid if recorded is None else recorded)


def empty_folders(library: Library) -> list[str]:
    """Music folders that hold no track of the library now: unmounted shares (an empty mount point), most likely."""
    return [f for f in library.folders
            if not any(is_under(t.path, os.path.abspath(os.path.expanduser(f))) for t in library.tracks)]


def embed_library(
    settings: Settings, retry_failed: bool = False, progress: Callable[[int], object] | None = None,
    recheck: bool = False,
) -> EmbedReport:
    """`recsys embed`: read the library, embed what is new or changed, and refresh the index. ``recheck``: compare
    every file's content with its row's (``recsys embed --recheck``), not only those whose ctime moved."""
    library = load_configured_library(settings)
    if not library.tracks:
        where = library.db_path or ", ".join(library.folders)
        raise NoTracksError(f"the library at {where} holds no playable tracks (is the music drive mounted?): add "
                            "music to it (or check --library); nothing was changed")
    home = settings.home_path
    started = time.monotonic()
    with HomeLock(home, "recsys embed", library_inputs(settings)):
        resolved = resolve_for_planning(settings.embed.encoder, home, settings.embed.device)  # torch only to encode
        remember_facts(settings.embed.encoder, home, resolved)
        encoder = resolved.encoder
        spec = decode_spec(settings, encoder.sample_rate)
        eid = spec.vector_id(resolved.encoder_id)
        empty = empty_folders(library)
        known = None if recheck else read_record(home, eid, library.tracks, empty, settings.index)  # no table read
        if known is not None and not (retry_failed and known.known_failed):
            return EmbedReport(
                total=len(library.tracks), up_to_date=known.up_to_date, known_failed=known.known_failed,
                stale=known.stale, missing=known.missing, kept_missing=known.missing_kept,
                seconds=time.monotonic() - started, encoder=resolved.label, encoder_id=eid,
                device=device_label(encoder), index=read_manifest(home) or {}, library=library, empty_folders=empty)
        store = TrackStore.open(home)
        report = embed_tracks(
            library.tracks,
            store,
            encoder,
            eid,
            spec,
            workers=default_workers(settings.embed.workers),
            batch_size=settings.embed.batch_size,
            write_batch=settings.embed.write_batch,
            retry_failed=retry_failed,
            progress=progress,
            label=resolved.label,
            untouched_folders=empty,
            recheck=recheck,
        )
        report.library, report.encoder, report.device = library, resolved.label, device_label(encoder)
        report.empty_folders = empty
        if not report.interrupted:
            if report.embedded or report.reused or report.deleted:
                store.compact()
            missing = missing_keys(store, empty)
            refresh_snapshot(store, settings, eid, missing)
            report.index = read_manifest(home) or {}
            plan = report.plan
            if plan is not None and plan.nothing_to_do and not (report.failed or report.changed or report.too_long):
                write_record(home, eid, plan.library_digest, plan.unlisted, NoopRecord(
                    up_to_date=plan.up_to_date, known_failed=plan.known_failed, stale=plan.stale,
                    missing=len(plan.missing), missing_kept=len(plan.missing_keys), table_rows=plan.table_rows,
                    excluded=excluded_digest(missing), failures=plan.failures))
    return report
