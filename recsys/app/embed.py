"""`recsys embed`: read the library, bring the table up to date with it (:mod:`recsys.pipeline`), refresh the index.

A no-op run (the record of :mod:`recsys.pipeline.noop` still holds) reads no table. Every run that leaves the table
complete writes that record, so the first no-op run after one that did work is as fast as the second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from recsys.app.settings import library_inputs
from recsys.config import Settings
from recsys.embedder.decoding import decode_spec, default_workers
from recsys.embedder.lazy import device_label, remember_facts, resolve_for_planning
from recsys.errors import RecsysError
from recsys.home.lock import HomeLock
from recsys.index.ann import excluded_digest, read_manifest
from recsys.index.store import TrackStore, table_location
from recsys.library.sources import load_configured_library
from recsys.library.track import Track
from recsys.pipeline.fingerprints import prepare_fingerprints
from recsys.pipeline.noop import NoopRecord, read_record, write_record
from recsys.pipeline.plan import Plan, empty_folders, plan_next_run
from recsys.pipeline.refresh import missing_keys, refresh_snapshot
from recsys.pipeline.run import EmbedReport, embed_tracks


class NoTracksError(RecsysError):
    """The library was found but lists nothing to embed."""


def embed_library(
    settings: Settings, retry_failed: bool = False, progress: Callable[..., object] | None = None,
    recheck: bool = False, engine: str = "local", address: str | None = None,
) -> EmbedReport:
    """`recsys embed`: read the library, embed what is new or changed, and refresh the index. ``recheck``: compare
    every file's content with its row's (``recsys embed --recheck``), not only those whose ctime moved. ``engine``
    ``ray``: decode and encode on a Ray cluster (:mod:`recsys.pipeline.ray_engine`; ``address`` joins a running one),
    planning, commits and the index staying here."""
    library = load_configured_library(settings)
    if not library.tracks:
        where = library.db_path or ", ".join(library.folders)
        raise NoTracksError(f"the library at {where} holds no playable tracks (is the music drive mounted?): add "
                            "music to it (or check --library); nothing was changed")
    home = settings.home_path
    table = table_location(settings)
    started = time.monotonic()
    with HomeLock(home, "recsys embed", library_inputs(settings)), table.lease("recsys embed"):
        resolved = resolve_for_planning(settings.embed.encoder, home, settings.embed.device,  # torch only to encode
                                        settings.embed.runtime)
        remember_facts(settings.embed.encoder, home, resolved)
        encoder = resolved.encoder
        spec = decode_spec(settings.audio, encoder.sample_rate)
        eid = spec.vector_id(resolved.encoder_id)
        empty = empty_folders(library)
        # no table read (for a table in a bucket, only its versions)
        known = None if recheck else read_record(home, eid, library.tracks, empty, settings.index, table)
        if known is not None and not (retry_failed and known.known_failed):
            report = EmbedReport(
                total=len(library.tracks), up_to_date=known.up_to_date, known_failed=known.known_failed,
                stale=known.stale, missing=known.missing, kept_missing=known.missing_kept,
                seconds=time.monotonic() - started, encoder=resolved.label, encoder_id=eid,
                device=device_label(encoder), index=read_manifest(home) or {}, library=library, empty_folders=empty)
            _fingerprint(settings, report, progress)  # a run stopped in that phase goes on; else one look at a marker
            return report
        store = TrackStore.of(settings)
        if engine == "ray":
            from recsys.pipeline.ray_engine import embed_tracks_ray, ray_session

            with ray_session(address):
                report = embed_tracks_ray(
                    library.tracks, store, settings.embed.encoder, settings.embed.device, eid, int(encoder.dim),
                    spec, label=resolved.label, built_id=resolved.encoder_id, batch_size=settings.embed.batch_size,
                    chunk_size=settings.embed.ray_chunk, retry_failed=retry_failed, untouched_folders=empty,
                    recheck=recheck, progress=progress)
        else:
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
        report.library, report.encoder = library, resolved.label
        report.device = report.device or device_label(encoder)  # the Ray engine names its actors' devices
        report.empty_folders = empty
        if not report.interrupted:
            if report.embedded or report.reused or report.deleted:
                store.compact()
            missing = missing_keys(store, empty)
            refresh_snapshot(store, settings, eid, missing)
            report.index = read_manifest(home) or {}
            plan = report.plan
            if plan is not None and not plan.nothing_to_do:
                plan = _plan_left(store, library.tracks, eid, empty)
            if plan is not None and plan.nothing_to_do:
                write_record(home, eid, plan.library_digest, plan.unlisted, NoopRecord(
                    up_to_date=plan.up_to_date, known_failed=plan.known_failed, stale=plan.stale,
                    missing=len(plan.missing), missing_kept=len(plan.missing_keys), table_rows=plan.table_rows,
                    excluded=excluded_digest(missing), failures=plan.failures), table)
            _fingerprint(settings, report, progress)
    return report


def _fingerprint(settings: Settings, report: EmbedReport, progress: Callable[..., object] | None) -> None:
    """The lists' fingerprints for the refreshed snapshot (``embed.fingerprints``; :mod:`recsys.pipeline.fingerprints`)
    into ``report``."""
    if not settings.embed.fingerprints:
        return
    done = prepare_fingerprints(settings.home_path, settings.index, default_workers(settings.embed.workers), progress,
                                settings.audio.decode_timeout_s)
    report.fingerprinted, report.fingerprint_failures = done.fingerprinted, done.failures
    report.interrupted = report.interrupted or done.interrupted


def _plan_left(store: TrackStore, tracks: Sequence[Track], encoder_id: str, empty: Sequence[str]) -> Plan | None:
    """What the next plain run would plan, right after this one wrote its rows (one more read of the table's states
    and one stat per track, in a run that decoded): the record is written only from a plan that had nothing to do,
    as a no-op run would. None where it would have to read file contents (a file whose ctime moved during the run:
    the next run checks it and records it) or cannot plan (every file gone meanwhile)."""
    try:
        plan = plan_next_run(store, tracks, encoder_id, empty)
    except RecsysError:
        return None
    return None if plan.content_checked else plan
