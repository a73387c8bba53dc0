"""The plan of an embedding run: the library compared with the table, track by track.

Unchanged rows of the current encoder are kept, moved or copied files reuse their vector (same content id), and
everything else is to be decoded. Rows are never deleted because a file cannot be found (an unmounted share, a run
over a subset of the library): a row whose file is missing is kept, left out of the index, and back in it as soon as
the file is, without decoding it again. Only `recsys prune` removes such rows, and a move's leftover (a missing row
whose content id now lives under another key) is dropped, since its vector is kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.embedder.decoding import Job
from recsys.errors import RecsysError
from recsys.index.store import FailureRow, RowState, TrackStore
from recsys.library import remote
from recsys.library.content_id import track_content_id
from recsys.library.reading import ReadDeadline, ReadTimeout, may_open
from recsys.library.sources import Library
from recsys.library.track import Track, is_under
from recsys.pipeline.checked import FAILED, identity, read_checked
from recsys.pipeline.noop import LibraryDigest


class MissingFilesError(RecsysError):
    """Every file of the library is missing: most likely an unmounted drive, so nothing is deleted."""


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
    library_digest: str = ""  # the listed tracks' file identities as planned on (recsys.pipeline.noop)
    unlisted: list[tuple[str, bool]] = field(default_factory=list)  # (path, exists) of rows the library does not list
    table_rows: int = 0
    failures: list[dict] = field(default_factory=list)  # every failure recorded, as `recsys status` shows them
    content_checked: int = 0  # files whose content id was read again although size and mtime matched their row
    rewritten: int = 0  # ... and found to hold other bytes (rewritten with its timestamps kept): embedded again
    confirmed: list[int] = field(default_factory=list)  # identities seen holding their row's bytes (pipeline.checked)
    ctimes: dict[str, int] = field(default_factory=dict)  # key -> ctime_ns of the files to write, as planned on

    @property
    def nothing_to_do(self) -> bool:
        return not (self.todo or self.reuse or self.delete_keys)


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

    A track whose size and mtime match its row is kept when its identity is in ``checked`` (``recsys.pipeline.checked``;
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


def plan_next_run(store: TrackStore, tracks: Sequence[Track], encoder_id: str, untouched_folders: Sequence[str] = (),
                  states: dict[str, RowState] | None = None) -> Plan:
    """What a plain `recsys embed` (no retry, no recheck) would plan now: `recsys status` shows it, and an embed that
    wrote something plans it again to learn whether it left nothing to do (``recsys.pipeline.noop``). Reads the table
    and stats every track; ``states``: the table's, when the caller already read them."""
    return plan_embedding(tracks, store.states() if states is None else states,
                          {f.key: f for f in store.failures()}, encoder_id, untouched_folders=untouched_folders,
                          checked=read_checked(store.home))


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


def empty_folders(library: Library) -> list[str]:
    """Music folders that hold no track of the library now: unmounted shares (an empty mount point), most likely."""
    return [f for f in library.folders
            if not any(is_under(t.path, os.path.abspath(os.path.expanduser(f))) for t in library.tracks)]
