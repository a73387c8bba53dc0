"""The LanceDB tables under the home folder: `tracks` (one vector per track, the source of truth) and `failures`.

Every write is one LanceDB commit (atomic: a process killed mid-write leaves the previous version intact), and after
each commit ``<home>/tracks.stamp`` records the table version and row count, so fast readers (``recsys similar``) can
tell whether the ANN snapshot is current without paying ~1.3 s to import lancedb.

Vector dimension: the `vector` column is a fixed-size list, so a table holds one dimension. An encoder with another
dimension makes every stored vector stale anyway; :meth:`TrackStore.upsert` refuses such rows and the caller must first
call :meth:`TrackStore.reset_vectors`, which overwrites the table (as a new version) with an empty one of the new dim.
Nothing of the old rows is kept: they are all re-embedded.

Tags: when the encoder has a tag head (``recsys.embedder.interface.tag_names``) each row also carries its tag
probabilities in ``tags``, a fixed-size float32 list, named in order by the column's metadata (``names``: so they
travel with a table in a bucket to every machine's home) and by ``<home>/tags.json`` (tables made before). A table made
before tags existed has no such column: the first write with tags adds it (a schema change, one commit) and the older
rows read as null until they are embedded again. Rows of an encoder without a head hold null.

Where the tables live (:class:`TableLocation`, decided by :func:`table_location` alone): in the home folder, or in an
S3 bucket (``store.table: s3://BUCKET/PREFIX``, ``--table``) that several machines embed into, each with its own home
(the stamp, the tag names, the index snapshot and the lock stay there). A writer of a table in a bucket holds its
lease (:class:`recsys.index.object_store.TableLease`) besides its home lock; every commit checks it first.
"""

from __future__ import annotations

import errno
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from recsys.atomic import write_json_atomic
from recsys.errors import RecsysError
from recsys.home import STAMP, read_stamp
from recsys.index import object_store

if TYPE_CHECKING:
    import lancedb

    from recsys.config import Settings


METADATA_CACHE_BYTES = 16 << 20  # Lance's cache of table metadata, per connection (see _connect)

# lancedb is imported on first use (~1.3 s, most of a no-op `recsys embed` or `recsys status`): the classes here are
# the row classes here are used by code that never touches the table.
def _connect(location: TableLocation | Path) -> lancedb.DBConnection:
    import lancedb

    # Lance keeps the metadata of every table version it reads in a per-connection cache (1 GiB by default). A writer
    # commits a version per batch of rows and each lists every fragment so far, so that cache grows with the square
    # of the batches of one run (the whole GiB well before a million tracks); the versions a run reads again are few.
    session = lancedb.Session(metadata_cache_size_bytes=METADATA_CACHE_BYTES)
    if isinstance(location, TableLocation) and location.remote:
        object_store.check_reachable(location.uri, location.storage_options)  # one line, not Lance's retry dump
        return lancedb.connect(location.uri, storage_options=dict(location.storage_options) or None, session=session)
    return lancedb.connect(str(location.uri if isinstance(location, TableLocation) else location), session=session)


@dataclass(frozen=True)
class TableLocation:
    """Where a home's tables live: its own folder (``uri`` a local path), or a prefix in a bucket
    (``s3://BUCKET/PREFIX``) with the object store's options (endpoint, region, ...; never a credential)."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def remote(self) -> bool:
        return "://" in self.uri

    def table_uri(self, name: str) -> str:
        """The Lance dataset of one table (``tracks``, ``failures``): what lance-ray and pylance open."""
        return f"{self.uri.rstrip('/')}/{name}.lance" if self.remote else str(Path(self.uri) / f"{name}.lance")

    def lease(self, command: str) -> AbstractContextManager:
        """What a writer holds besides the home lock: the table's lease in its bucket (nothing for a local table,
        which the home lock alone protects)."""
        if not self.remote:
            return nullcontext()
        return object_store.TableLease(self.uri, self.storage_options, command)


def table_location(settings: Settings) -> TableLocation:
    """The one rule of where the tables are: ``store.table`` when set (``--table``), else the home folder."""
    if settings.store.table:
        return TableLocation(settings.store.table.rstrip("/"), dict(settings.store.storage_options))
    return TableLocation(str(settings.home_path))


def col(name: str):
    from lancedb.expr import col as lance_col

    return lance_col(name)


def lit(value: object):
    from lancedb.expr import lit as lance_lit

    return lance_lit(value)

TRACKS = "tracks"
FAILURES = "failures"
UTC_US = pa.timestamp("us", tz="UTC")
CLEANUP_AFTER = timedelta(minutes=1)  # compact() drops table versions older than this

META_COLUMNS = ["key", "path", "start_s", "content_id", "size", "mtime_ns", "duration_s", "artist", "album", "title",
                "genre", "year", "track_number", "encoder_id", "embedded_at"]
VECTOR_COLUMNS = [*META_COLUMNS, "vector"]
TAGS_COLUMN = "tags"
TAG_NAMES_FILE = "tags.json"
_NAMES = "names"  # the tags column's metadata key holding its names, in order
SCAN_BATCH = 4096  # rows a streamed read (TrackStore.scan) holds at a time; Lance reads ahead 16 batches
STATE_COLUMNS = ["key", "path", "content_id", "size", "mtime_ns", "encoder_id"]

_TEXT = pa.string()
_FIELD_TYPES: dict[str, pa.DataType] = {
    "key": _TEXT, "path": _TEXT, "start_s": pa.float64(), "content_id": _TEXT, "size": pa.int64(),
    "mtime_ns": pa.int64(), "duration_s": pa.float64(), "artist": _TEXT, "album": _TEXT, "title": _TEXT,
    "genre": _TEXT, "year": pa.int32(), "track_number": pa.int32(), "encoder_id": _TEXT, "embedded_at": UTC_US,
}
FAILURE_SCHEMA = pa.schema([
    pa.field("key", _TEXT, nullable=False), pa.field("path", _TEXT), pa.field("size", pa.int64()),
    pa.field("mtime_ns", pa.int64()), pa.field("error", _TEXT), pa.field("failed_at", UTC_US),
])


class StoreError(RecsysError):
    """The track table cannot be opened or written; the message names the home folder and what to do."""


class TableDamaged(StoreError):
    """The table's files cannot be read back (truncated or deleted data files): `recsys repair` restores it."""


def tracks_schema(dim: int) -> pa.Schema:
    fields = [pa.field(name, _FIELD_TYPES[name], nullable=name != "key") for name in META_COLUMNS]
    fields.insert(len(fields) - 1, pa.field("vector", pa.list_(pa.float32(), dim)))
    return pa.schema(fields)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class TrackRow:
    key: str
    path: str
    start_s: float
    content_id: str
    size: int
    mtime_ns: int
    duration_s: float
    artist: str
    album: str
    title: str
    genre: str
    year: int | None
    track_number: int | None
    encoder_id: str
    vector: np.ndarray
    embedded_at: datetime = field(default_factory=_now)
    tags: np.ndarray | None = None  # tag probabilities, in the order of the home's tag names; None: no tag head


@dataclass
class FailureRow:
    key: str
    path: str
    size: int
    mtime_ns: int
    error: str
    failed_at: datetime = field(default_factory=_now)


@dataclass(frozen=True)
class RowState:
    """What `recsys embed` needs to plan a run: which file each key was embedded from, and with which encoder."""

    key: str
    path: str
    content_id: str
    size: int
    mtime_ns: int
    encoder_id: str


def _unwritable(home: Path, exc: OSError) -> StoreError:
    reason = exc.strerror or type(exc).__name__
    return StoreError(f"home {home} is not writable ({reason}): choose another with --home")


_RUST_SOURCE = re.compile(r",?\s*/\S+\.rs:\d+:\d+")
_LANCE_OS_ERROR = re.compile(r"([^:,()]+) \(os error (\d+)\)")


def _write_failed(home: Path, exc: Exception, location: TableLocation | None = None) -> StoreError:
    """A failed table write as one line. Lance reports file-system errors as RuntimeError text ending in its own
    Rust source path; the OS error inside it is what the user can act on. A table in a bucket: the request that
    failed (the network, the server), and that every commit before is kept."""
    if location is not None and location.remote and not isinstance(exc, PermissionError):
        first = _RUST_SOURCE.sub("", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return StoreError(f"writing the table at {location.uri} failed ({first[:200]}): check that the object store "
                          "is reachable and run the command again (everything committed before is kept)")
    if isinstance(exc, OSError) and exc.errno is not None:
        code, reason = exc.errno, exc.strerror or str(exc)
    else:
        found = _LANCE_OS_ERROR.search(str(exc))
        if found is None:
            if isinstance(exc, OSError):
                return _unwritable(home, exc)
            raise exc  # not a file-system problem: a bug, reported as one
        code, reason = int(found.group(2)), found.group(1).strip()
    if code == errno.ENOSPC:
        return StoreError(f"the disk holding {home} is full ({reason}): free some space and run the command again "
                          "(everything committed before is kept)")
    return _unwritable(home, OSError(code, reason))


class TrackStore:
    """The tables of one home folder (or of the bucket it names). One writer at a time: callers hold
    :class:`recsys.home.lock.HomeLock`, and for a table in a bucket its lease (:meth:`TableLocation.lease`)."""

    def __init__(self, home: Path, db: lancedb.DBConnection | None, location: TableLocation | None = None) -> None:
        self.home = home
        self.location = location or TableLocation(str(home))
        self._db = db
        self._tracks = self._open(TRACKS)
        self._failures = self._open(FAILURES)

    @classmethod
    def of(cls, settings: Settings, writable: bool = True) -> TrackStore:
        """The tables the settings name (:func:`table_location`): what every command opens."""
        return cls.open(settings.home_path, writable, table_location(settings))

    @classmethod
    def open(cls, home: Path, writable: bool = True, location: TableLocation | None = None) -> TrackStore:
        """Open (creating the folder if needed) the tables of ``home`` (or at ``location``); tables themselves appear
        on first write.

        ``writable=False`` is for read-only work (`recsys status`): nothing is created or repaired, so a read-only or
        not yet created home is read as it is. Writing a table in a bucket needs its lease held."""
        home = Path(home).expanduser()
        if location is not None and location.remote:
            if writable and object_store.lease_held(location.uri) is None:
                raise StoreError(f"writing the table at {location.uri} needs its lease: a writer takes it with "
                                 "TableLocation.lease() (a bug in recsys if you see this)")
        else:
            location = None
        if not writable:  # lancedb.connect creates the folder: a home not yet made is read as empty
            if location is not None:
                return cls(home, _connect(location), location)
            return cls(home, _connect(home) if home.is_dir() else None)
        try:
            home.mkdir(parents=True, exist_ok=True)
            probe = tempfile.TemporaryFile(dir=home)  # mkdir succeeds on an existing read-only folder: try a write
            probe.close()
        except OSError as exc:
            raise _unwritable(home, exc) from None
        store = cls(home, _connect(location or home), location)
        if store._tracks is not None:
            stamp = read_stamp(home)
            if stamp is None or stamp.get("table_version") != store.version:
                store._write_stamp()  # a run killed between commit and stamp: repair before anyone trusts it
        return store

    def _open(self, name: str):
        if self._db is None:
            return None
        try:
            return self._db.open_table(name)
        except ValueError:  # lancedb: "Table 'x' was not found"
            return None
        except (RuntimeError, OSError) as exc:  # its newest version's manifest cannot be read (truncated, damaged)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = _RUST_SOURCE.sub("", first)[:200]  # Lance's own source file and line: nothing for the user
            raise TableDamaged(f"the {name} table in {self.location.table_uri(name)} cannot be opened ({first}): run "
                               "`recsys repair`, which rolls it back to its newest readable version") from None

    # ---- reading --------------------------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return 0 if self._tracks is None else int(self._tracks.version)

    @property
    def count(self) -> int:
        return 0 if self._tracks is None else int(self._tracks.count_rows())

    @property
    def dim(self) -> int | None:
        if self._tracks is None:
            return None
        return int(self._tracks.schema.field("vector").type.list_size)

    @property
    def n_tags(self) -> int | None:
        """How many tags the ``tags`` column holds per row; None when the table has no such column."""
        if self._tracks is None or TAGS_COLUMN not in self._tracks.schema.names:
            return None
        return int(self._tracks.schema.field(TAGS_COLUMN).type.list_size)

    @property
    def tag_names(self) -> list[str] | None:
        """The names of the ``tags`` column's entries, in order (the column's metadata, else ``<home>/tags.json``);
        None when there are none."""
        if self.n_tags is not None:
            kept = (self._tracks.schema.field(TAGS_COLUMN).metadata or {}).get(_NAMES.encode())
            try:
                names = json.loads(kept) if kept else None
            except ValueError:
                names = None
            if isinstance(names, list) and len(names) == self.n_tags:
                return [str(n) for n in names]
        return read_tag_names(self.home)

    def tags_of(self, keys: Iterable[str]) -> dict[str, np.ndarray | None]:
        """The tag probabilities of rows by key (None for a row without them)."""
        wanted = sorted(set(keys))
        if self.n_tags is None or not wanted:
            return {k: None for k in wanted}
        table = self._select(["key", TAGS_COLUMN], col("key").isin(wanted))
        values = table.column(TAGS_COLUMN).to_pylist()
        return {k: None if v is None else np.asarray(v, np.float32)
                for k, v in zip(table.column("key").to_pylist(), values, strict=True)}

    def tags_by_content_id(self, content_ids: Iterable[str], encoder_id: str) -> dict[str, np.ndarray]:
        """The stored tags of the current encoder's rows by content id (moved files keep theirs with the vector)."""
        wanted = sorted(set(content_ids))
        if self.n_tags is None or not wanted:
            return {}
        table = self._select(["content_id", TAGS_COLUMN],
                             col("content_id").isin(wanted) & (col("encoder_id") == lit(encoder_id)))
        return {cid: np.asarray(v, np.float32) for cid, v in zip(table.column("content_id").to_pylist(),
                                                                 table.column(TAGS_COLUMN).to_pylist(), strict=True)
                if v is not None}

    def _select(self, columns: list[str], where=None) -> pa.Table:
        def read() -> pa.Table:
            query = self._tracks.search()
            if where is not None:
                query = query.where(where)
            return query.select(columns).limit(None).to_arrow()

        return self._reading(TRACKS, read)

    def _reading(self, name: str, action):
        """Run a read; LanceDB's internal text about unreadable files becomes one line naming the way out."""
        try:
            return action()
        except (RuntimeError, OSError, pa.ArrowException) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            if self.location.remote:  # most likely the network: not worth a repair before trying again
                raise StoreError(f"reading the {name} table at {self.location.table_uri(name)} failed "
                                 f"({_RUST_SOURCE.sub('', first)}): check that the object store is reachable and run "
                                 "again; if it keeps failing, `recsys repair`") from None
            raise TableDamaged(f"the {name} table in {self.location.table_uri(name)} is damaged ({first}): run "
                               "`recsys repair`") from None

    def states(self) -> dict[str, RowState]:
        """Every row's file identity and encoder, without reading vectors."""
        if self._tracks is None:
            return {}
        table = self._select(STATE_COLUMNS)
        cols = [table.column(name).to_pylist() for name in STATE_COLUMNS]
        return {values[0]: RowState(*values) for values in zip(*cols, strict=True)}

    def vectors_by_content_id(self, content_ids: Iterable[str], encoder_id: str) -> dict[str, np.ndarray]:
        """Vectors of the current encoder for files seen before under another path (moved or renamed files)."""
        wanted = sorted(set(content_ids))
        if self._tracks is None or not wanted:
            return {}
        table = self._select(["content_id", "vector"],
                             col("content_id").isin(wanted) & (col("encoder_id") == lit(encoder_id)))
        if table.num_rows == 0:
            return {}
        vectors = _vectors(table.column("vector"), self.dim or 0)
        return {cid: vectors[i].copy() for i, cid in enumerate(table.column("content_id").to_pylist())}

    def read_all(self, encoder_id: str | None = None) -> tuple[pa.Table, np.ndarray]:
        """(metadata, float32 N x D vectors) of all rows or of one encoder's rows; row i <-> vector i."""
        if self._tracks is None:
            return pa.table({name: pa.array([], _FIELD_TYPES[name]) for name in META_COLUMNS}), \
                np.zeros((0, 0), np.float32)
        where = None if encoder_id is None else col("encoder_id") == lit(encoder_id)
        table = self._select(VECTOR_COLUMNS + ([TAGS_COLUMN] if self.n_tags else []), where)
        vectors = _vectors(table.column("vector"), self.dim or 0)
        return table.drop_columns(["vector"]), vectors

    def iter_rows(self, encoder_id: str | None, columns: Sequence[str],
                  batch_rows: int = SCAN_BATCH) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """(metadata ``columns``, float32 n x D vectors) of all rows or of one encoder's rows, ``batch_rows`` at most
        at a time: what :meth:`read_all` returns, in the same order, with memory bounded by a batch instead of the
        table (whose vector column and its float32 copy outgrow a machine at millions of tracks). Row i of a batch
        <-> vector i."""
        dim = self.dim or 0
        for batch in self.scan(encoder_id, [*columns, "vector"], batch_rows):
            yield batch.drop_columns(["vector"]), _vectors(pa.chunked_array([batch.column("vector")]), dim)

    def scan(self, encoder_id: str | None, columns: Sequence[str],
             batch_rows: int = SCAN_BATCH) -> Iterator[pa.RecordBatch]:
        """``columns`` of all rows or of one encoder's rows, streamed at most ``batch_rows`` at a time in the table's
        order (the order of :meth:`read_all`); a damaged table raises :class:`TableDamaged` as the other reads do."""
        if self._tracks is None:
            return
        query = self._tracks.search()
        if encoder_id is not None:
            query = query.where(col("encoder_id") == lit(encoder_id))
        query = query.select(list(columns)).limit(None)
        batches = iter(self._reading(TRACKS, lambda: query.to_batches(batch_rows)))
        while (batch := self._reading(TRACKS, lambda: next(batches, None))) is not None:
            if batch.num_rows:
                yield batch

    def row_schema(self, columns: Sequence[str]) -> pa.Schema:
        """The Arrow schema of ``columns`` as :meth:`scan` and :meth:`read_all` return them (also of a table with no
        rows yet)."""
        if self._tracks is None:
            return pa.schema([pa.field(name, _FIELD_TYPES[name]) for name in columns])
        return self._reading(TRACKS, lambda: self._tracks.search().select(list(columns)).limit(None).output_schema())

    def failures(self) -> list[FailureRow]:
        if self._failures is None:
            return []
        rows = self._reading(FAILURES, lambda: self._failures.search().limit(None).to_arrow().to_pylist())
        return [FailureRow(**{name: row[name] for name in FAILURE_SCHEMA.names}) for row in rows]

    def damage(self) -> str | None:
        """Why the table cannot be read whole (every column of every row), or None when it can. Streamed (:meth:`scan`):
        reading it whole to find out held the table's vectors twice over (16 GB at 10 M tracks)."""
        try:
            for _ in self.scan(None, VECTOR_COLUMNS + ([TAGS_COLUMN] if self.n_tags else [])):
                pass
        except TableDamaged as exc:
            return str(exc)
        return None

    def last_good_version(self) -> tuple[int, int] | None:
        """(version, rows) of the newest table version whose every row reads back, or None (each version is a
        complete snapshot of the table; compaction keeps only the last minute's)."""
        if self._tracks is None:
            return None
        latest = self.version
        try:
            versions = sorted((int(v["version"]) for v in self._tracks.list_versions()), reverse=True)
        except (RuntimeError, OSError):
            return None
        try:
            for version in versions:
                try:
                    self._tracks.checkout(version)
                    query = self._tracks.search().select(VECTOR_COLUMNS).limit(None)
                    rows = sum(batch.num_rows for batch in query.to_batches(SCAN_BATCH))  # streamed, as damage()
                except (RuntimeError, OSError, ValueError, pa.ArrowException):
                    continue
                return version, rows
            return None
        finally:
            try:
                self._tracks.checkout_latest()
            except (RuntimeError, OSError):
                self._tracks.checkout(latest)

    def restore_version(self, version: int) -> None:
        """Make ``version`` the newest (as a new commit: history is kept)."""
        self._guard(lambda: self._tracks.restore(version))
        self._write_stamp()

    # ---- writing: each call is one commit, then the stamp ---------------------------------------------------------

    def upsert(self, rows: Sequence[TrackRow], tag_names: Sequence[str] | None = None) -> None:
        """Insert or replace rows by key in one commit (callers batch ~64 rows: a commit per row is slow).

        ``tag_names``: the names of the rows' ``tags`` (recorded in ``<home>/tags.json``); rows with tags need them."""
        if not rows:
            return
        dims = {int(np.asarray(r.vector).shape[-1]) for r in rows}
        if len(dims) != 1:
            raise StoreError(f"rows for {self.home} mix vector sizes {sorted(dims)}: one encoder per batch")
        dim = dims.pop()
        if self._tracks is None:
            self._tracks = self._guard(lambda: self._db.create_table(TRACKS, schema=tracks_schema(dim)))
        elif dim != self.dim:
            raise StoreError(f"table in {self.home} holds {self.dim}-d vectors, got {dim}-d: call reset_vectors({dim})"
                             " first (a new encoder makes all old vectors stale)")
        n_tags = self._prepare_tags(rows, tag_names)
        data = track_batch(_dedupe(rows), dim, n_tags)
        self._guard(lambda: self._tracks.merge_insert("key").when_matched_update_all()
                    .when_not_matched_insert_all().execute(data))
        self._write_stamp()

    def _prepare_tags(self, rows: Sequence[TrackRow], tag_names: Sequence[str] | None) -> int | None:
        """The table's tag count after adding the ``tags`` column when these are the first rows with tags."""
        sizes = {int(np.asarray(r.tags).shape[-1]) for r in rows if r.tags is not None}
        if not sizes:
            return self.n_tags
        tag_names = tag_names or self.tag_names  # rows reused with their tags: the names already kept
        if len(sizes) != 1 or tag_names is None or len(tag_names) not in sizes:
            raise StoreError(f"rows for {self.home} carry {sorted(sizes)} tags for {len(tag_names or ())} tag names: "
                             "one encoder per batch, with its tag names")
        return self._ensure_tags(sizes.pop(), tag_names)

    def _ensure_tags(self, n: int, tag_names: Sequence[str]) -> int:
        """The ``tags`` column of ``n`` entries (added when the table has none yet) and their names recorded."""
        names = {_NAMES: json.dumps(list(tag_names))}
        if self.n_tags is None:
            self._guard(lambda: self._tracks.add_columns(pa.field(TAGS_COLUMN, pa.list_(pa.float32(), n),
                                                                  metadata=names)))
        elif self.n_tags != n:
            raise StoreError(f"table in {self.home} holds {self.n_tags} tags per track, got {n}: call "
                             "reset_vectors first (a new encoder makes all old rows stale)")
        elif self.tag_names != list(tag_names) or _NAMES.encode() not in (
                self._tracks.schema.field(TAGS_COLUMN).metadata or {}):
            self._guard(lambda: self._tracks.replace_field_metadata(TAGS_COLUMN, names))
        if read_tag_names(self.home) != list(tag_names):
            write_json_atomic(self.home / TAG_NAMES_FILE, {"tags": list(tag_names)})
        return n

    def batch_tags(self, dim: int, tag_names: Sequence[str] | None) -> int | None:
        """How many tags each row of a :func:`track_batch` for this table holds: the encoder's tag count, else the
        table's own (rows without a head hold null there), else None; a table of another dim is reset first."""
        if tag_names:
            return len(tag_names)
        return self.n_tags if self.dim == dim else None

    def append_with(self, write: Callable[[str, pa.Schema, dict[str, str] | None], None], dim: int,
                    tag_names: Sequence[str] | None) -> None:
        """New rows written by someone else in ONE Append commit: ``write(uri, schema, storage_options)`` writes
        rows of exactly ``schema`` (a :func:`track_batch` of :meth:`batch_tags` tags) into the table at ``uri`` and
        commits them (``lance_ray.write_lance``: Ray workers write the fragments, the caller commits once).

        Only for keys the table does not hold: an Append never replaces a row (stale keys go through
        :meth:`upsert`). The table is made ready first, as :meth:`upsert` makes it: created, reset to ``dim`` (a
        new encoder of another dimension), its ``tags`` column added."""
        if self._tracks is None:
            self._tracks = self._guard(lambda: self._db.create_table(TRACKS, schema=tracks_schema(dim)))
        elif dim != self.dim:
            self.reset_vectors(dim)
        if tag_names:
            self._ensure_tags(len(tag_names), tag_names)
        table, options = self._tracks, dict(self._db.storage_options or {}) or None  # the connection's (S3 endpoint...)
        self._guard(lambda: write(table.uri, table.schema, options))
        self._guard(table.checkout_latest)
        self._write_stamp()

    def delete(self, keys: Iterable[str]) -> None:
        """Delete rows by key, in one commit; keys are matched as typed literals, never pasted into SQL."""
        wanted = sorted(set(keys))
        if self._tracks is None or not wanted:
            return
        self._guard(lambda: self._tracks.delete(col("key").isin(wanted)))
        self._write_stamp()

    def reset_vectors(self, dim: int) -> None:
        """Replace the table by an empty one of ``dim``-d vectors (a new version; old rows are not kept)."""
        self._tracks = self._guard(
            lambda: self._db.create_table(TRACKS, schema=tracks_schema(int(dim)), mode="overwrite"))
        self._write_stamp()

    def record_failures(self, rows: Sequence[FailureRow]) -> None:
        """Insert or replace failures by key, in one commit."""
        if not rows:
            return
        if self._failures is None:
            self._failures = self._guard(lambda: self._db.create_table(FAILURES, schema=FAILURE_SCHEMA))
        latest = {r.key: r for r in rows}
        data = pa.Table.from_pylist(
            [{name: getattr(r, name) for name in FAILURE_SCHEMA.names} for r in latest.values()], schema=FAILURE_SCHEMA)
        self._guard(lambda: self._failures.merge_insert("key").when_matched_update_all()
                    .when_not_matched_insert_all().execute(data))
        self._write_stamp()

    def reset_failures(self) -> None:
        """Drop the failures table (a damaged one): its files are simply tried again."""
        self._guard(lambda: self._db.drop_table(FAILURES))
        self._failures = None

    def clear_failures(self, keys: Iterable[str]) -> None:
        wanted = sorted(set(keys))
        if self._failures is None or not wanted:
            return
        self._guard(lambda: self._failures.delete(col("key").isin(wanted)))

    def compact(self) -> None:
        """Merge the many small fragments of batched commits and drop superseded versions' files.

        Old versions go after a minute (not LanceDB's default 7 days): a full re-embed would otherwise keep every
        replaced vector on disk for a week. The minute spares a concurrent reader (`recsys status`) mid-read.
        """
        for table in (self._tracks, self._failures):
            if table is not None:
                self._guard(lambda t=table: t.optimize(cleanup_older_than=CLEANUP_AFTER))
        if self._tracks is not None:
            self._write_stamp()

    def _write_stamp(self) -> None:
        try:  # a file of the home, wherever the table is
            write_json_atomic(self.home / STAMP, {"table_version": self.version, "count": self.count})
        except OSError as exc:
            raise _write_failed(self.home, exc) from None

    def _guard(self, action):
        lease = object_store.lease_held(self.location.uri) if self.location.remote else None
        if lease is not None:
            lease.check()  # a writer that lost its lease commits nothing more
        try:
            return action()
        except (OSError, RuntimeError, ValueError) as exc:
            if isinstance(exc, ValueError) and not self.location.remote:
                raise
            raise _write_failed(self.home, exc, self.location) from None


def table_versions(location: TableLocation) -> list[list]:
    """``[[table, version], ...]`` of the tables at ``location``: what pins a table in a bucket for the no-op record
    (``recsys.pipeline.noop``), as its files pin a local one (every commit, restore and compaction is a version)."""
    db = _connect(location)
    found: list[list] = []
    for name in (TRACKS, FAILURES):
        try:
            found.append([name, int(db.open_table(name).version)])
        except ValueError:  # not made yet
            continue
    return found


@dataclass(frozen=True)
class RolledBack:
    """A table version whose manifest could not be read, moved aside by :func:`roll_back_unreadable`."""

    table: str
    version: int | None  # None: no version of the table could be read, the whole table was moved aside
    moved_to: Path


def _manifest_version(path: Path) -> int | None:
    """The version a manifest file holds: Lance names them ``<n>.manifest``, or ``<2**64 - 1 - n>.manifest`` (newer
    tables, so the newest sorts first)."""
    if path.suffix != ".manifest" or not path.stem.isdigit():
        return None
    number = int(path.stem)
    return 2**64 - 1 - number if number >= 2**63 else number


def roll_back_unreadable(home: Path, aside: Callable[[Path], Path]) -> list[RolledBack]:
    """Make each table open again when its newest versions' manifests cannot be read (truncated by a crash or a full
    disk): move those manifests aside with ``aside`` (never deleted; Lance ignores any file in ``_versions`` that does
    not end in ``.manifest``), newest first, until the table opens; its previous versions are complete snapshots.
    When no version is left, the whole table folder is moved aside. Returns what was moved (nothing when every table
    opens)."""
    home = Path(home).expanduser()
    moved: list[RolledBack] = []
    for name in (TRACKS, FAILURES):
        folder = home / f"{name}.lance" / "_versions"
        while True:
            try:
                _connect(home).open_table(name)
                break
            except ValueError:  # not there at all
                break
            except (RuntimeError, OSError) as exc:
                if isinstance(exc, OSError) or _LANCE_OS_ERROR.search(str(exc)):
                    raise _write_failed(home, exc) from None  # the file system's refusal (permissions, I/O): no damage
            manifests = sorted((v, p) for p in folder.glob("*.manifest") if (v := _manifest_version(p)) is not None)
            if len(manifests) < 2:  # nothing older to roll back to: the table starts anew
                moved.append(RolledBack(name, None, aside(home / f"{name}.lance")))
                break
            version, path = manifests[-1]
            moved.append(RolledBack(name, version, aside(path)))
    return moved


def _dedupe(rows: Sequence[TrackRow]) -> list[TrackRow]:
    """The last row per key: merge_insert rejects a batch that matches one target row twice."""
    return list({r.key: r for r in rows}.values())


def track_batch(rows: list[TrackRow], dim: int, n_tags: int | None = None) -> pa.Table:
    """Rows as an Arrow table of the tracks schema (with a ``tags`` column of ``n_tags`` when not None)."""
    columns = {name: pa.array([getattr(r, name) for r in rows], _FIELD_TYPES[name]) for name in META_COLUMNS}
    flat = np.stack([np.asarray(r.vector, dtype=np.float32).reshape(dim) for r in rows]).reshape(-1)
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
    schema = tracks_schema(dim)
    if n_tags is not None:
        tags_type = pa.list_(pa.float32(), n_tags)
        columns[TAGS_COLUMN] = pa.array([None if r.tags is None else np.asarray(r.tags, np.float32).tolist()
                                         for r in rows], tags_type)
        schema = schema.append(pa.field(TAGS_COLUMN, tags_type))
    return pa.table(columns, schema=schema)


def read_tag_names(home: Path) -> list[str] | None:
    """The tag names recorded in ``<home>/tags.json`` (None when absent or unreadable)."""
    try:
        names = json.loads((Path(home) / TAG_NAMES_FILE).read_text(encoding="utf-8")).get("tags")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def _vectors(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """A fixed-size-list column as a contiguous float32 N x D array."""
    if len(column) == 0:
        return np.zeros((0, dim), np.float32)
    flat = pa.concat_arrays([chunk.flatten() for chunk in column.chunks]).to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat, dtype=np.float32).reshape(len(column), dim)
