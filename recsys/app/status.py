"""`recsys status`: how the table compares with the library and the current encoder. Only reads: it works on a
read-only home and creates nothing."""

from __future__ import annotations

from recsys.config import Settings
from recsys.embedder.decoding import decode_spec
from recsys.embedder.lazy import resolve_for_planning
from recsys.home.lock import current_holder
from recsys.home.recent import read_recent
from recsys.index.ann import ANN, DAMAGED_HINT, excluded_digest, read_manifest, snapshot_damage, snapshot_is_current
from recsys.index.store import TrackStore, table_location
from recsys.library.sources import load_configured_library
from recsys.pipeline.noop import read_record
from recsys.pipeline.plan import empty_folders, plan_next_run
from recsys.pipeline.refresh import missing_keys


def library_status(settings: Settings) -> dict:
    """`recsys status`: how the table compares with the library and the current encoder, without changing anything.
    When the last no-op embed's record still holds (``recsys.pipeline.noop``), the table is not read at all."""
    home = settings.home_path
    library = load_configured_library(settings)
    resolved = resolve_for_planning(settings.embed.encoder, home, device="cpu")
    eid = decode_spec(settings.audio, resolved.encoder.sample_rate).vector_id(resolved.encoder_id)
    empty = empty_folders(library)
    table = table_location(settings)
    known = read_record(home, eid, library.tracks, empty, settings.index, table)
    if known is not None:
        counts = {"embedded": known.up_to_date, "stale": 0, "not_embedded": 0, "missing": known.missing,
                  "missing_kept": known.missing_kept, "table_rows": known.table_rows}
        failures, current = known.failures, True
    else:
        store = TrackStore.of(settings, writable=False)
        states = store.states()
        plan = plan_next_run(store, library.tracks, eid, empty, states)
        stale = sum(1 for j in plan.todo if j.track.key in states)
        counts = {"embedded": plan.up_to_date, "stale": stale, "not_embedded": len(plan.todo) - stale + len(plan.reuse),
                  "missing": len(plan.missing), "missing_kept": len(plan.missing_keys), "table_rows": len(states)}
        failures = plan.failures
        current = snapshot_is_current(home, eid, settings.index, excluded_digest(missing_keys(store, empty)))
    manifest = read_manifest(home)
    if manifest is None:
        index = {"state": "not built: run `recsys embed`"}
    elif not current and (damage := snapshot_damage((home / ANN).resolve(), manifest)):
        # the words `similar` and `playlist` stop with (by hand status said "out of date" of a deleted index file)
        index = {"state": f"damaged ({damage}): {DAMAGED_HINT}", **manifest}
    else:
        index = {"state": "current" if current else "out of date: run `recsys embed`", **manifest}
    return {
        "home": str(home),
        **({"table": table.uri} if table.remote else {}),
        "writer": current_holder(home),  # a run writing the home now (its counts move), or None
        "library_tracks": len(library.tracks),
        "library_source": library.source(),
        "encoder": resolved.label,
        "encoder_id": eid,
        **{name: counts[name] for name in ("embedded", "stale", "not_embedded", "missing", "missing_kept")},
        "empty_folders": empty,
        "table_rows": counts["table_rows"],
        "failures": failures,
        "left_out": [{"key": key, "reason": reason} for key, reason in library.left_out],
        "unreadable": [{"path": path, "reason": reason} for path, reason in library.scan_errors],
        "skipped_urls": library.skipped_urls,
        "skipped_unavailable": library.skipped_unavailable,
        "duplicate_rows": library.duplicate_rows,
        "index": index,
        "recent_playlists": [w.as_json() for w in read_recent(home)],
    }
