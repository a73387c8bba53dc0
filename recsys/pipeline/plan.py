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
from recsys.index.store import FailureRow, RowState
from recsys.library import remote
from recsys.library.content_id import track_content_id
from recsys.library.sources import Library
from recsys.library.track import Track, is_under
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
) -> Plan:
    """Decide per track: keep, reuse a vector, skip a known failure, or decode; which rows are missing (kept, out of
    the index) and which are a moved file's leftover (dropped). Rows under ``untouched_folders`` (music folders that
    are empty as a whole: unmounted) are left exactly as they are."""
    plan = Plan(table_rows=len(states), failures=[
        {"path": f.path, "error": f.error, "failed_at": f.failed_at} for f in failures.values()])
    candidates: list[Job] = []
    listed: set[str] = set()
    digest = LibraryDigest(untouched_folders)
    for track in tracks:
        listed.add(track.key)
        try:
            st = remote.stat(track.path)  # a server's file: its size and date as the server listed them
        except OSError:
            digest.add(track, None)
            plan.missing.append(track)
            continue
        digest.add(track, st)
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
        if row is not None and row.encoder_id != encoder_id:
            plan.stale += 1
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
            cid = (track_content_id(track.path, st.st_size, track.start_s, track.segment)
                   if remote.is_file(track.path) else "")
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
    plan.library_digest = digest.hexdigest()
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
    return plan


def empty_folders(library: Library) -> list[str]:
    """Music folders that hold no track of the library now: unmounted shares (an empty mount point), most likely."""
    return [f for f in library.folders
            if not any(is_under(t.path, os.path.abspath(os.path.expanduser(f))) for t in library.tracks)]
