"""The record of a plan that had nothing to do, so the next no-op `recsys embed` and `recsys status` skip the table.

Planning compares every track of the library with the table's rows; on a large library that is seconds of reading
rows (after ~2 s of importing lancedb) only to learn that nothing changed. So when a run leaves nothing to do (its
plan had nothing to do, or, once it wrote, the plan the next run would make has nothing to do), `recsys embed` writes
``<home>/embed-plan.json``: that plan's counts, the failures recorded, and what the plan was made from:

- the table's files (path, size and mtime of every file under ``tracks.lance`` and ``failures.lance``): every commit,
  restore, compaction or deletion adds or changes files there, and so does damage; for a table in a bucket
  (``store.table``), which other machines may write, the version of each table (one request each, no listing);
- the vector id of the encoder and clip policy;
- a digest of every listed track's key, path and file identity (size, mtime, ctime: a file rewritten with its
  timestamps kept changes its ctime, see ``recsys.pipeline.checked``) or its absence, taken from the very
  ``stat`` calls the plan decided on, and of the music folders left untouched (empty: unmounted);
- the paths of the rows the library does not list, and whether each file existed (a file found missing makes its row
  a "missing" one, left out of the index; the rule that such rows are kept until `recsys prune` is the plan's);
- the digest of the rows left out of the index snapshot.

A plan is a function of exactly these (the rows and failures are the table's, which its files pin down), so when a
later run finds every one of them equal (one ``stat`` per track, as planning does) and the snapshot current, the plan
would be the same: nothing to do. Any difference, or a record that cannot be read, and the table is read as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from recsys.atomic import write_json_atomic
from recsys.config import IndexSettings
from recsys.index.ann import snapshot_is_current
from recsys.index.store import TableLocation, table_versions
from recsys.library import remote
from recsys.library.track import Track

RECORD = "embed-plan.json"
_FORMAT = 1
_TABLES = ("tracks.lance", "failures.lance")


class LibraryDigest:
    """The digest of the listed tracks' file identities, fed one track at a time by whoever stats them."""

    def __init__(self, untouched_folders: Sequence[str] = ()) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self._hash.update(json.dumps(sorted(untouched_folders)).encode("utf-8", "surrogateescape"))

    def add(self, track: Track, st: os.stat_result | None) -> None:
        identity = "-" if st is None else f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        self._hash.update(f"{track.key}\0{track.path}\0{identity}\n".encode("utf-8", "surrogateescape"))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def library_digest(tracks: Sequence[Track], untouched_folders: Sequence[str] = ()) -> str:
    """What :class:`LibraryDigest` gives for the tracks' files as they are now (one stat per file)."""
    digest = LibraryDigest(untouched_folders)
    for track in tracks:
        try:
            st = remote.stat(track.path)
        except OSError:
            st = None
        digest.add(track, st)
    return digest.hexdigest()


def table_files(home: Path, location: TableLocation | None = None) -> list[list]:
    """Every file of the tables as [relative path, size, mtime_ns], sorted; for tables in a bucket, their versions."""
    if location is not None and location.remote:
        return table_versions(location)
    found: list[list] = []
    for name in _TABLES:
        for folder, _, files in os.walk(home / name):
            for file in files:
                path = os.path.join(folder, file)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                found.append([os.path.relpath(path, home), st.st_size, st.st_mtime_ns])
    return sorted(found)


@dataclass
class NoopRecord:
    """What a no-op plan found; ``failures`` as `recsys status` shows them."""

    up_to_date: int
    known_failed: int
    stale: int
    missing: int
    missing_kept: int
    table_rows: int
    excluded: str  # digest of the rows left out of the snapshot (files missing)
    failures: list[dict]


def write_record(home: Path, encoder_id: str, library: str, unlisted: Sequence[tuple[str, bool]],
                 record: NoopRecord, location: TableLocation | None = None) -> None:
    """Remember a plan that had nothing to do (the writer holds the home lock and wrote nothing since planning)."""
    failures = [{**f, "failed_at": f["failed_at"].isoformat() if isinstance(f["failed_at"], datetime) else None}
                for f in record.failures]
    try:
        write_json_atomic(home / RECORD, {
            "format": _FORMAT, "encoder_id": encoder_id, "library": library, "tables": table_files(home, location),
            "unlisted": [[path, exists] for path, exists in unlisted],
            "counts": {name: getattr(record, name) for name in
                       ("up_to_date", "known_failed", "stale", "missing", "missing_kept", "table_rows")},
            "excluded": record.excluded, "failures": failures,
        })
    except OSError:
        pass  # only a shortcut: without it the next run reads the table, as it always did


def read_record(home: Path, encoder_id: str, tracks: Sequence[Track], untouched_folders: Sequence[str],
                index: IndexSettings | None, location: TableLocation | None = None) -> NoopRecord | None:
    """The record, when everything a plan depends on is as it was then (so the plan would have nothing to do), else
    None. Reads nothing of the table (but the versions of one in a bucket) and writes nothing."""
    try:
        data = json.loads((home / RECORD).read_text(encoding="utf-8"))
        if data.get("format") != _FORMAT or data.get("encoder_id") != encoder_id:
            return None
        counts, excluded = data["counts"], str(data["excluded"])
        failures = [{**f, "failed_at": datetime.fromisoformat(f["failed_at"]) if f["failed_at"] else None}
                    for f in data["failures"]]
        unlisted = [(str(path), bool(exists)) for path, exists in data["unlisted"]]
        record = NoopRecord(**{name: int(counts[name]) for name in
                               ("up_to_date", "known_failed", "stale", "missing", "missing_kept", "table_rows")},
                            excluded=excluded, failures=failures)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if data.get("tables") != table_files(home, location):
        return None
    if any(remote.exists(path) != exists for path, exists in unlisted):
        return None
    if not snapshot_is_current(home, encoder_id, index, excluded):
        return None
    if data.get("library") != library_digest(tracks, untouched_folders):
        return None
    return record
