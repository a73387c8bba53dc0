"""Keeping a home whole: `recsys prune` and `recsys repair` (both end with the snapshot refresh of
:mod:`recsys.pipeline.refresh`).

`prune` is the only way rows of missing files leave the table
(`embed` keeps them: an unmounted share must not cost its vectors). `repair` is the way out the error messages name
when something in the home is damaged: it restores the table from its newest readable version, or rebuilds it from
the index snapshot; rebuilds the snapshot; and moves a damaged MLflow store or classifier aside.
"""

from __future__ import annotations

import os
import sqlite3
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from recsys.app.settings import library_inputs
from recsys.config import Settings
from recsys.home import MLFLOW_DB, models_dir, read_stamp
from recsys.home.lock import HomeLock
from recsys.index.ann import ANN, AnnError, load_snapshot, read_manifest
from recsys.index.store import (
    TRACKS,
    StoreError,
    TableDamaged,
    TableLocation,
    TrackRow,
    TrackStore,
    roll_back_unreadable,
    table_location,
)
from recsys.library import remote
from recsys.library.content_id import track_content_id
from recsys.library.reading import ReadDeadline, may_open
from recsys.pipeline.refresh import missing_keys, refresh_snapshot

CLASSIFIER_FILES = ("classifier.json", "classifier.npz")


def _snapshot_encoder(home: Path, store: TrackStore) -> str | None:
    """The encoder the snapshot serves: the manifest's, else the one most rows of the table were embedded with."""
    manifest = read_manifest(home)
    if manifest and manifest.get("encoder_id"):
        return str(manifest["encoder_id"])
    counts = Counter(r.encoder_id for r in store.states().values())
    return counts.most_common(1)[0][0] if counts else None


@dataclass
class PruneReport:
    removed: list[str] = field(default_factory=list)  # paths of the rows removed
    failures_removed: int = 0
    index: dict = field(default_factory=dict)


def prune(settings: Settings) -> PruneReport:
    """`recsys prune`: remove the rows (and recorded failures) of files that no longer exist, then refresh the index."""
    home = settings.home_path
    report = PruneReport()
    with HomeLock(home, "recsys prune", library_inputs(settings)), table_location(settings).lease("recsys prune"):
        store = TrackStore.of(settings)
        states = store.states()
        gone = sorted(k for k, r in states.items() if not remote.exists(r.path))
        failed = [f.key for f in store.failures() if not remote.exists(f.path)]
        store.delete(gone)
        store.clear_failures(failed)
        if gone or failed:
            store.compact()
        report.removed = [states[k].path for k in gone]
        report.failures_removed = len(failed)
        encoder = _snapshot_encoder(home, store)
        if encoder is not None:
            report.index = refresh_snapshot(store, settings, encoder, [])
    return report


@dataclass
class RepairReport:
    """One line per part of the home that was checked: what was found and what was done."""

    lines: list[str] = field(default_factory=list)
    to_decode: int = 0  # tracks `recsys embed` must decode again


def _aside(path: Path) -> Path:
    """Move a damaged file out of the way, keeping it (it is the user's history) under a name that says why."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, target)
    return target


def _snapshot_rows(home: Path, skip: set[str], dim: int | None) -> list[TrackRow]:
    """The index snapshot's rows (but ``skip``) whose file still holds the same content (same content id), as table
    rows with the file's size and mtime now; none when the snapshot is unreadable or of another dimension."""
    try:
        lib = load_snapshot(home)
    except AnnError:
        return []
    if not len(lib) or (dim is not None and lib.vectors.shape[1] != dim):
        return []
    rows: list[TrackRow] = []
    now = datetime.now(timezone.utc)
    with ReadDeadline() as deadline:
        for i, m in enumerate(lib.meta.to_pylist()):
            if m["key"] in skip or not m["content_id"]:
                continue
            try:
                st = remote.stat(m["path"])
                segment = "@" in m["content_id"]  # only segments' content ids carry their start
                if not may_open(st) or deadline.read(m["path"], track_content_id, m["path"], st.st_size,
                                                     m["start_s"] or 0.0, segment) != m["content_id"]:
                    continue
            except OSError:
                continue
            tags = None if lib.tags is None or np.isnan(lib.tags[i]).all() else np.asarray(lib.tags[i], np.float32)
            rows.append(_snapshot_row(m, st, lib.encoder_id, lib.vectors[i], now, tags))
    return rows


def _snapshot_row(m: dict, st: os.stat_result, encoder_id: str, vector: np.ndarray, now: datetime,
                  tags: np.ndarray | None = None) -> TrackRow:
    return TrackRow(key=m["key"], path=m["path"], start_s=float(m["start_s"] or 0.0), content_id=m["content_id"],
                    size=st.st_size, mtime_ns=st.st_mtime_ns, duration_s=float(m["duration_s"] or 0.0),
                    artist=m["artist"] or "", album=m["album"] or "", title=m["title"] or "", genre=m["genre"] or "",
                    year=m["year"], track_number=m["track_number"], encoder_id=encoder_id,
                    vector=np.asarray(vector, dtype=np.float32), embedded_at=now, tags=tags)


def _repair_failures(store: TrackStore, report: RepairReport) -> None:
    try:
        store.failures()
    except TableDamaged as exc:
        store.reset_failures()
        report.lines.append(f"failures: damaged ({exc}); cleared: `recsys embed` tries those files again")


def _open_rolled_back(home: Path, report: RepairReport, table: TableLocation) -> tuple[TrackStore, str | None]:
    """The store, its tables first rolled back past versions whose manifest cannot be read (a truncated newest
    manifest made every command fail); with what the roll-back did to the tracks table, for its report line. A table
    in a bucket is opened as it is: recsys moves nothing aside there."""
    how = None
    for gone in [] if table.remote else roll_back_unreadable(home, _aside):
        if gone.version is None:
            what = f"no version of it can be opened (kept as {gone.moved_to.name}); started a new table"
        else:
            what = (f"version {gone.version} cannot be opened (its manifest is damaged; kept as "
                    f"{gone.moved_to.parent.name}/{gone.moved_to.name})")
        if gone.table == TRACKS:
            how = what if how is None else f"{how}; {what}"
        else:
            report.lines.append(f"failures: {what}: `recsys embed` tries again the files it held since")
    store = TrackStore.open(home, location=table)
    if how is not None and store.version:
        how += f"; rolled back to version {store.version}"
    return store, how


def _repair_table(home: Path, store: TrackStore, report: RepairReport, expected: int = 0,
                  rolled_back: str | None = None) -> TrackStore:
    """Restore the newest readable version (or start a new table when none is), then give back from the index
    snapshot the rows that version lacks; what neither holds must be decoded again. ``expected``: the rows the last
    commit stamped; ``rolled_back``: what opening the table needed (versions moved aside), already done."""
    damage = store.damage()
    expected = max(store.count, expected)
    if damage is None and rolled_back is None:
        report.lines.append(f"table: whole ({store.count} rows)")
        return store
    if damage is None:
        rows = store.count
        how = f"{rolled_back} ({rows} rows; the last commit held {expected})"
    else:
        good = store.last_good_version()
        if good is not None:
            version, rows = good
            store.restore_version(version)
            how = f"restored its last readable version ({version}, {rows} rows)"
        elif store.location.remote:
            raise StoreError(f"no version of the table at {store.location.table_uri(TRACKS)} can be read: move it "
                             "aside in the bucket with your S3 tool and run `recsys embed` to make a new one")
        else:
            moved = _aside(home / f"{TRACKS}.lance")
            store = TrackStore.open(home)
            rows = 0
            how = f"no version is readable (kept as {moved.name}); started a new table"
        if rolled_back is not None:
            how = f"{rolled_back}; {how}"
    recovered = _snapshot_rows(home, set(store.states()), store.dim)
    for start in range(0, len(recovered), 1024):
        store.upsert(recovered[start:start + 1024])
    lost = max(0, expected - rows - len(recovered))
    report.to_decode += lost
    report.lines.append(f"table: damaged; {how}; {len(recovered)} track(s) recovered from the index snapshot"
                        + (f": {lost} track(s) must be decoded again" if lost else ""))
    return store


def _repair_mlflow(home: Path, report: RepairReport) -> None:
    db = home / MLFLOW_DB
    if not db.exists():
        return
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            conn.execute("SELECT count(*) FROM experiments").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        verdict = str(exc)
    if verdict == "ok":
        report.lines.append(f"{MLFLOW_DB}: whole")
        return
    moved = _aside(db)
    report.lines.append(f"{MLFLOW_DB}: damaged ({verdict}); moved to {moved.name}, the next training starts a new "
                        "store (runs logged before are in the moved file)")


def _repair_classifier(home: Path, report: RepairReport) -> None:
    models = models_dir(home)
    files = [models / name for name in CLASSIFIER_FILES]
    if not any(f.exists() for f in files):
        return
    try:
        import json

        json.loads(files[0].read_text(encoding="utf-8"))
        with np.load(files[1], allow_pickle=False) as data:
            for name in data.files:
                data[name]  # noqa: B018 - reading each array is the check
        report.lines.append("classifier: whole")
        return
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for f in files:
        if f.exists():
            _aside(f)
    report.lines.append(f"classifier: damaged ({reason}); moved aside: playlists rank by similarity until "
                        "`recsys train-classifier` trains a new one")


def repair(settings: Settings) -> RepairReport:
    """`recsys repair`: check every part of the home, restore or rebuild what is damaged, and say what was done."""
    home = settings.home_path
    report = RepairReport()
    started = time.monotonic()
    table = table_location(settings)
    with HomeLock(home, "recsys repair", library_inputs(settings)), table.lease("recsys repair"):
        stamped = int((read_stamp(home) or {}).get("count") or 0)  # before opening: that rewrites the stamp
        store, rolled_back = _open_rolled_back(home, report, table)
        _repair_failures(store, report)
        if store.version:
            store = _repair_table(home, store, report, stamped, rolled_back)
        elif rolled_back is not None:
            report.lines.append(f"table: {rolled_back}")
        encoder = _snapshot_encoder(home, store) if store.version else None
        if encoder is not None:
            manifest = refresh_snapshot(store, settings, encoder, missing_keys(store), force=True)
            report.lines.append(f"index: rebuilt ({manifest.get('kind')}, {manifest.get('count')} tracks)")
        elif (home / ANN).exists():
            report.lines.append("index: nothing embedded to rebuild it from: run `recsys embed`")
        _repair_mlflow(home, report)
        _repair_classifier(home, report)
    report.lines.append(f"done in {time.monotonic() - started:.1f} s"
                        + (f"; run `recsys embed` to decode the {report.to_decode} track(s) again"
                           if report.to_decode else ""))
    return report
