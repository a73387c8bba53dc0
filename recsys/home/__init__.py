"""The home folder (``--home``, ``RECSYS_HOME``): what lies where under it, in one place.

::

    <home>/tracks.lance, failures.lance   the LanceDB table of vectors and the failure log (recsys.index.store)
    <home>/tracks.stamp                   table version and row count of the last committed write (STAMP)
    <home>/ann/                           the index snapshot that readers serve from (recsys.index.ann)
    <home>/models/                        encoder runs, current.json, the classifier (MODELS)
    <home>/cache/audio/                   decoded training windows (recsys.training.cache)
    <home>/cache/fingerprints/            each file's acoustic fingerprint by content id (recsys.embedder.fingerprint)
    <home>/cache/library/                 each player database's library less the history, for the taste commands
                                          (recsys.library.kept)
    <home>/mlflow.db, mlartifacts/        MLflow's store (MLFLOW_DB; recsys.tracking)
    <home>/recsys.lock                    one writer at a time (recsys.home.lock)
    <home>/.recsys-home, .recsys-made     the marker (this folder is recsys's) and what recsys made here: the only
                                          paths it removes (recsys.home.claim)

Nothing here imports more than the standard library: `recsys similar` reads the stamp on its fast path.
"""

from __future__ import annotations

import json
from pathlib import Path

STAMP = "tracks.stamp"  # written by recsys.index.store after every commit, read by the index snapshot's readers
MODELS = "models"
MLFLOW_DB = "mlflow.db"


def models_dir(home: Path | str) -> Path:
    """``<home>/models``: encoder runs and the active encoder (recsys.embedder.active), the classifier."""
    return Path(home) / MODELS


def read_stamp(home: Path | str) -> dict | None:
    """``{"table_version": int, "count": int}`` of the last committed write, or None if nothing was written yet (or
    the stamp is unreadable: readers then treat the index as whatever it is)."""
    try:
        data = json.loads((Path(home) / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
