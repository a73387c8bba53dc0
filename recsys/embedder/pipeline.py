"""Decode workers -> batches on the device -> vectors -> the table, incrementally and resumably.

The plan compares the library with the table: unchanged rows of the current encoder are kept, deleted files are
dropped, moved or copied files reuse their vector (same content id), and everything else is decoded in worker
processes while the main process encodes batches on the device and writes rows in batches. A run killed at any moment
loses at most the batch in flight; the next run plans again from what the table holds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from recsys.config import Settings
from recsys.embedder.audio import Clip
from recsys.embedder.decoding import DecodeSpec, Job, decode_spec, decoded, default_workers
from recsys.embedder.lazy import device_label, remember_facts, resolve_for_planning
from recsys.errors import RecsysError
from recsys.index.ann import build_snapshot, read_manifest, snapshot_is_current
from recsys.index.lock import HomeLock
from recsys.index.states import forget, recall, remember
from recsys.index.store import FailureRow, RowState, TrackRow, TrackStore
from recsys.library.content_id import content_id
from recsys.library.sources import Library, load_configured_library
from recsys.library.track import Track


class NoTracksError(RecsysError):
    """The library was found but lists nothing to embed."""


class MissingFilesError(RecsysError):
    """Every file of the library is missing: most likely an unmounted drive, so nothing is deleted."""


@dataclass
class Plan:
    todo: list[Job] = field(default_factory=list)
    reuse: list[tuple[Job, np.ndarray]] = field(default_factory=list)
    up_to_date: int = 0
    known_failed: int = 0
    missing: list[Track] = field(default_factory=list)
    delete_keys: list[str] = field(default_factory=list)


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
    too_long: int = 0
    missing: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    encoder: str = ""
    encoder_id: str = ""
    device: str = ""
    index: dict = field(default_factory=dict)
    library: Library | None = None
    new_failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def decoded_per_s(self) -> float:
        return (self.embedded + self.failed + self.too_long) / self.seconds if self.seconds else 0.0


def _segment_content_id(cid: str, track: Track) -> str:
    """Tracks cut from one file (CUE) share the file's bytes; the start keeps their content ids apart."""
    return f"{cid}@{track.start_s:.3f}" if track.segment else cid


def plan_embedding(
    tracks: Sequence[Track],
    states: dict[str, RowState],
    failures: dict[str, FailureRow],
    encoder_id: str,
    retry_failed: bool = False,
    vectors_by_content_id: Callable[[list[str]], dict[str, np.ndarray]] | None = None,
) -> Plan:
    """Decide per track: keep, reuse a vector, skip a known failure, or decode; and which rows to drop."""
    plan = Plan()
    candidates: list[Job] = []
    listed: set[str] = set()
    for track in tracks:
        listed.add(track.key)
        try:
            st = os.stat(track.path)
        except OSError:
            plan.missing.append(track)
            continue
        row = states.get(track.key)
        if (
            row is not None
            and row.encoder_id == encoder_id
            and row.size == st.st_size
            and row.mtime_ns == st.st_mtime_ns
            and row.path == track.path
        ):
            plan.up_to_date += 1
            continue
        failure = failures.get(track.key)
        if (
            failure is not None
            and not retry_failed
            and failure.size == st.st_size
            and failure.mtime_ns == st.st_mtime_ns
        ):
            plan.known_failed += 1
            continue
        try:
            # reading a FIFO or device listed as a track would block the run: the decoder records it as a failure
            cid = _segment_content_id(content_id(track.path, st.st_size), track) if os.path.isfile(track.path) else ""
        except OSError:
            plan.missing.append(track)
            continue
        candidates.append(Job(track, st.st_size, st.st_mtime_ns, cid))
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
    missing_keys = {t.key for t in plan.missing}
    plan.delete_keys = sorted(k for k in states if k not in listed or k in missing_keys)
    return plan


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
                 write_batch: int) -> None:
        self.encoder, self.encoder_id = encoder, encoder_id
        self.crop_samples, self.batch_size = crop_samples, batch_size
        self.store, self.write_batch = store, write_batch
        self.clips: list[tuple[Job, Clip]] = []
        self.rows: list[TrackRow] = []
        self.failures: list[FailureRow] = []
        self.written = 0

    def add_clip(self, job: Job, clip: Clip) -> None:
        n = len(clip.samples)
        if n >= self.crop_samples - 2:  # resampling may round a full crop a sample or two short
            samples = np.zeros(self.crop_samples, dtype=np.float32)
            samples[: min(n, self.crop_samples)] = clip.samples[: self.crop_samples]
            self.clips.append((job, Clip(samples, clip.sample_rate, clip.start_s, clip.duration_s, clip.decoder)))
            if len(self.clips) >= self.batch_size:
                self._encode(self.clips)
                self.clips = []
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
        import torch

        waves = torch.from_numpy(np.stack([c.samples for _, c in batch]))
        vectors = self.encoder.encode(waves.to(self.device)).detach().float().cpu().numpy()
        for (job, clip), vector in zip(batch, vectors, strict=True):
            self.add_row(_row(job, vector, self.encoder_id, job.track.length_s or clip.duration_s))

    @property
    def device(self):
        return getattr(self.encoder, "device", "cpu")

    def flush_clips(self) -> None:
        if self.clips:
            self._encode(self.clips)
            self.clips = []

    def flush_rows(self) -> None:
        if self.rows:
            self.store.upsert(self.rows)
            self.store.clear_failures([r.key for r in self.rows])
            self.written += len(self.rows)
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
) -> EmbedReport:
    """Bring the table up to date with ``tracks`` for this encoder; Ctrl-C keeps everything finished so far."""
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
    )
    report.up_to_date, report.known_failed, report.missing = plan.up_to_date, plan.known_failed, len(plan.missing)
    if plan.delete_keys:
        store.delete(plan.delete_keys)
        report.deleted = len(plan.delete_keys)
    encoding = _Encoding(encoder, encoder_id, int(round(spec.crop_s * spec.sample_rate)), batch_size, store,
                         write_batch)
    for job, vector in plan.reuse:
        encoding.add_row(_row(job, vector, encoder_id, job.track.length_s or 0.0))
    report.reused = len(plan.reuse)
    bar = progress(len(plan.todo)) if (progress and plan.todo) else _NoProgress()
    try:
        for job, clip, error, too_long in decoded(plan.todo, spec, workers):
            if clip is not None:
                encoding.add_clip(job, clip)
                report.embedded += 1
            elif too_long:
                report.too_long += 1
            else:
                report.failed += 1
                report.new_failures.append((job.track.path, error or "unknown error"))
                encoding.add_failure(
                    FailureRow(key=job.track.key, path=job.track.path, size=job.size, mtime_ns=job.mtime_ns,
                               error=error or "unknown error")
                )
            bar.update(1)
        encoding.flush_clips()
    except KeyboardInterrupt:
        report.interrupted = True
        report.embedded -= len(encoding.clips)  # decoded but not encoded: the next run does them
        encoding.clips = []
    finally:
        bar.close()
        encoding.flush_rows()
        encoding.flush_failures()
        report.seconds = time.monotonic() - started
    return report


def embed_library(
    settings: Settings, retry_failed: bool = False, progress: Callable[[int], object] | None = None
) -> EmbedReport:
    """`recsys embed`: read the library, embed what is new or changed, and refresh the index."""
    library = load_configured_library(settings)
    if not library.tracks:
        where = library.db_path or ", ".join(library.folders)
        raise NoTracksError(f"the library at {where} holds no playable tracks: add music to it (or check --library)")
    home = settings.home_path
    with HomeLock(home, "recsys embed"):
        resolved = resolve_for_planning(settings.embed.encoder, home, settings.embed.device)  # torch only to encode
        encoder, eid = resolved.encoder, resolved.encoder_id
        quick = _nothing_to_do(library, home, eid, retry_failed)
        if quick is not None:
            quick.encoder, quick.device = resolved.label, device_label(encoder)
            return quick
        forget(home)  # until this run finishes, readers open the table
        store = TrackStore.open(home)
        remember_facts(settings.embed.encoder, home, resolved)
        if store.dim is not None and store.dim != encoder.dim:
            store.reset_vectors(encoder.dim)
        report = embed_tracks(
            library.tracks,
            store,
            encoder,
            eid,
            decode_spec(settings, encoder.sample_rate),
            workers=default_workers(settings.embed.workers),
            batch_size=settings.embed.batch_size,
            write_batch=settings.embed.write_batch,
            retry_failed=retry_failed,
            progress=progress,
        )
        report.library, report.encoder, report.device = library, resolved.label, device_label(encoder)
        if not report.interrupted:
            if report.embedded or report.reused or report.deleted:
                store.compact()
            if not snapshot_is_current(home, eid):
                ix = settings.index
                build_snapshot(store, home, eid, exact_max_tracks=ix.exact_max_tracks, hnsw_m=ix.hnsw_m,
                               hnsw_ef_construction=ix.hnsw_ef_construction)
            report.index = read_manifest(home) or {}
            remember(home, store)
    return report


def _nothing_to_do(library: Library, home, encoder_id: str, retry_failed: bool) -> EmbedReport | None:
    """The report of a run with nothing to decode, reuse or drop, from the state the last finished run remembered
    (no lancedb, no torch: a no-op `recsys embed` starts in well under a second); None when there is work, or when
    the table or the index moved on since."""
    remembered = recall(home)
    if remembered is None or not snapshot_is_current(home, encoder_id):
        return None
    states, failures = remembered
    plan = plan_embedding(library.tracks, states, {f.key: f for f in failures}, encoder_id, retry_failed=retry_failed)
    if plan.todo or plan.reuse or plan.delete_keys:
        return None
    return EmbedReport(total=len(library.tracks), up_to_date=plan.up_to_date, known_failed=plan.known_failed,
                       missing=len(plan.missing), encoder_id=encoder_id, library=library,
                       index=read_manifest(home) or {})


def library_status(settings: Settings) -> dict:
    """`recsys status`: how the table compares with the library and the current encoder, without changing anything."""
    home = settings.home_path
    library = load_configured_library(settings)
    resolved = resolve_for_planning(settings.embed.encoder, home, device="cpu")
    eid = resolved.encoder_id
    remembered = recall(home)  # the table as the last finished run left it, when nothing changed it since
    if remembered is None:
        store = TrackStore.open(home, writable=False)
        remembered = store.states(), store.failures()
    states, failures = remembered
    plan = plan_embedding(library.tracks, states, {f.key: f for f in failures}, eid)
    stale = sum(1 for j in plan.todo if j.track.key in states)
    manifest = read_manifest(home)
    if manifest is None:
        index = {"state": "not built: run `recsys embed`"}
    else:
        current = snapshot_is_current(home, eid)
        index = {"state": "current" if current else "out of date: run `recsys embed`", **manifest}
    return {
        "home": str(home),
        "library_tracks": len(library.tracks),
        "library_source": str(library.db_path or ", ".join(library.folders)),
        "encoder": resolved.label,
        "encoder_id": eid,
        "embedded": plan.up_to_date,
        "stale": stale,
        "not_embedded": len(plan.todo) - stale + len(plan.reuse),
        "missing": len(plan.missing),
        "table_rows": len(states),
        "failures": [{"path": f.path, "error": f.error, "failed_at": f.failed_at} for f in failures],
        "left_out": [{"key": key, "reason": reason} for key, reason in library.left_out],
        "unreadable": [{"path": path, "reason": reason} for path, reason in library.scan_errors],
        "skipped_urls": library.skipped_urls,
        "skipped_unavailable": library.skipped_unavailable,
        "index": index,
    }
