"""The snapshot refresh every writer ends with (`embed`, `prune`, `repair`), and the rows it leaves out.

Only a writer holding the home lock builds and swaps the index snapshot (readers never do: see ``index/ann.py``); this
is the one place that decides whether it must be rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence

from recsys.config import Settings
from recsys.index.ann import build_snapshot, excluded_digest, read_manifest, snapshot_is_current
from recsys.index.store import TrackStore
from recsys.library import remote
from recsys.library.track import is_under


def missing_keys(store: TrackStore, untouched_folders: Sequence[str] = ()) -> list[str]:
    """Keys of the rows whose file cannot be found now (kept in the table, left out of the index), but those under
    ``untouched_folders`` (music folders empty as a whole, i.e. unmounted: left exactly as they were)."""
    return sorted(k for k, r in store.states().items()
                  if not any(is_under(r.path, f) for f in untouched_folders) and not remote.exists(r.path))


def refresh_snapshot(store: TrackStore, settings: Settings, encoder_id: str, missing: Sequence[str],
                     force: bool = False) -> dict:
    """Rebuild the index snapshot when it does not match the table, the encoder, the index settings or the set of
    missing files, or is damaged; the caller holds the home lock."""
    home, ix = settings.home_path, settings.index
    if force or not snapshot_is_current(home, encoder_id, ix, excluded_digest(missing)):
        build_snapshot(store, home, encoder_id, exclude=missing, index=ix)
    return read_manifest(home) or {}
