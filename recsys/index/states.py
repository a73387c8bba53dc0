"""What the table held after the last complete `recsys embed`, readable without lancedb.

A no-op `recsys embed` and `recsys status` need only each row's file identity and encoder and the failures; opening the
table for them costs the lancedb import (~1.3 s, most of their start-up). So a finished embed run writes that state to
``<home>/tracks.states.parquet`` with the table version it was read at. It is used only while the stamp names that same
version (every commit of the tracks table moves the stamp on), and a run deletes it before its first write, so a run
that is killed half-way (failures recorded, say) leaves none: readers then open the table as before.
"""

from __future__ import annotations

from datetime import timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recsys.atomic import atomic_path
from recsys.index.store import FailureRow, RowState, TrackStore, read_stamp

STATES = "tracks.states.parquet"
_VERSION = b"table_version"
_SCHEMA = pa.schema([("failure", pa.bool_()), ("key", pa.string()), ("path", pa.string()),
                     ("content_id", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                     ("encoder_id", pa.string()), ("error", pa.string()), ("failed_at", pa.timestamp("us", "UTC"))])


def forget(home: Path) -> None:
    """Before a writer's first change: until it finishes, readers open the table."""
    (Path(home) / STATES).unlink(missing_ok=True)


def remember(home: Path, store: TrackStore) -> None:
    """After a writer's last change, under the home lock: the states and failures as the table holds them now."""
    states, failures = store.states(), store.failures()
    rows = [{"failure": False, "key": s.key, "path": s.path, "content_id": s.content_id, "size": s.size,
             "mtime_ns": s.mtime_ns, "encoder_id": s.encoder_id} for s in states.values()]
    rows += [{"failure": True, "key": f.key, "path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "error": f.error,
              "failed_at": f.failed_at} for f in failures]
    table = pa.Table.from_pylist(rows, schema=_SCHEMA).replace_schema_metadata({_VERSION: str(store.version)})
    with atomic_path(Path(home) / STATES) as tmp:
        pq.write_table(table, tmp)


def recall(home: Path) -> tuple[dict[str, RowState], list[FailureRow]] | None:
    """(states by key, failures) as the last finished run left them, or None when the table moved on since."""
    path = Path(home) / STATES
    stamp = read_stamp(home)
    try:
        table = pq.ParquetFile(path).read()  # read_table would import pyarrow.dataset and pandas (~1 s)
    except (OSError, pa.ArrowException):
        return None
    version = (table.schema.metadata or {}).get(_VERSION)
    if stamp is None or version is None or version.decode() != str(stamp.get("table_version")):
        return None
    cols = {name: table.column(name).to_pylist() for name in _SCHEMA.names}
    states: dict[str, RowState] = {}
    failures: list[FailureRow] = []
    for i, failure in enumerate(cols["failure"]):
        if failure:
            at = cols["failed_at"][i]
            failures.append(FailureRow(key=cols["key"][i], path=cols["path"][i], size=cols["size"][i],
                                       mtime_ns=cols["mtime_ns"][i], error=cols["error"][i],
                                       failed_at=at.astimezone(timezone.utc) if at is not None else at))
        else:
            states[cols["key"][i]] = RowState(cols["key"][i], cols["path"][i], cols["content_id"][i], cols["size"][i],
                                              cols["mtime_ns"][i], cols["encoder_id"][i])
    return states, failures
