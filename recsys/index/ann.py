"""The read-optimised snapshot of the track table under ``<home>/ann``, and nearest-neighbour search over it.

Readers (``recsys similar``, ``recsys playlist``) need only numpy, pyarrow.parquet, json and faiss: importing this
module never imports lancedb (~1.3 s) or torch. The snapshot holds:

- ``manifest.json``: table_version, table_rows, encoder_id, dim, count, kind ('flat' | 'hnsw' | 'ivf'), params,
  built_at;
- ``vectors.npy``: float32 N x D, memory-mapped on load;
- ``meta.parquet``: one row per vector (key, path, start_s, content_id, tags, duration_s), row i <-> vector i;
- ``index.faiss``: the HNSW graph (kind 'hnsw'), or the inverted file of compressed codes (kind 'ivf'); a flat search
  runs straight over the memory-mapped vectors;
- ``hub_stats.npy``: one float per vector, its neighbourhood density for hubness reduction (``recsys.index.hubness``);
  not for kind 'ivf': it costs a search per track (hours at 10 M), so a compressed snapshot ranks by cosine alone;
- ``tags.npy``: float32 N x T tag probabilities, row i <-> vector i (NaN for a row stored without them), present when
  the table holds tags; the manifest's ``tags`` names the T columns.

The kind follows the track count: exact up to ``index.exact_max_tracks``, an HNSW graph (about 1 KB a track in
memory) up to ``index.compressed_min_tracks``, and above it the compressed kind: an IVF index of 8-bit (or
product-quantised) codes, one byte a dimension (or less), memory-mapped like the vectors, whose ``ivf_rerank`` x k
best hits are re-scored with the exact cosine read from the memory-mapped vectors: the scores a reader sees are
exact, only the candidate list is approximate.

Each build goes to a fresh folder ``ann-<version>-<random>``, recorded in the home as made by recsys before it is
created (:func:`recsys.home.claim.record_made`); ``ann`` is a symlink swapped to it with one rename, so a
reader sees the old snapshot or the new one, whole, never a mix. A reader resolves the link once and opens every file
from that one folder. Only a writer holding the home lock (``recsys embed``, ``prune``, ``repair``) builds and swaps;
readers (``similar``, ``playlist``) read the last complete snapshot and say when it is behind the table, so a reader
during an encoder switch, a full disk or a crashed build still gets a whole index. The snapshot a swap replaces is
kept until the next swap: a reader that resolved the link just before still finds its files. A swap removes only
snapshot folders it recorded, never a folder by its name: a plain folder named ``ann`` or ``ann-something`` in the
home is someone else's and is left alone.

The manifest records what the snapshot was built from (table version, encoder, index settings, the set of rows left
out because their file is missing) and the size of each of its files: a snapshot that differs in any of them, or
whose files were truncated or deleted, is rebuilt by the next writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.config import IndexSettings
from recsys.errors import RecsysError
from recsys.home import read_stamp
from recsys.home.claim import forget_made, made, record_made
from recsys.index.hubness import HUB_FILE, HUB_K, hub_stats
from recsys.library.text import search_label

if TYPE_CHECKING:  # the store imports lancedb: never at run time from here
    from recsys.index.store import TrackStore

ANN = "ann"
MANIFEST = "manifest.json"
# Measured on the 2-core dev machine (D=128, clustered): exact single-query p50 0.20 ms at 10k rows, 0.47 ms at 20k,
# 0.65 ms at 30k, 2.2 ms at 50k (the vectors outgrow the cache), 10.9 ms at 200k; HNSW (M=32, efConstruction=80,
# efSearch=128) 0.05-0.18 ms with recall@10 >= 0.995 over the same sizes. Exact search keeps p50 < 1 ms up to here.
META_ROW_GROUP = 16384  # rows per parquet row group: a hit's metadata reads one group, not a million rows
LOAD_ATTEMPTS = 3  # a snapshot swapped in while a reader opens the old one: the reader starts over
MISSING_SCORE = np.float32(-np.finfo(np.float32).max)  # the score FAISS gives a missing hit (row -1)
# the inverted lists memory-mapped where this FAISS can, else read: codes are tens of bytes a track
IVF_READ_FLAGS = getattr(faiss, "IO_FLAG_MMAP", 0)
SNAPSHOT_BATCH = 4096  # table rows a snapshot build reads and writes at a time (TrackStore.iter_rows)
ADD_BATCH = 65536  # vectors encoded into the compressed index at a time: its build holds codes, not a copy
PREFETCH_CHUNK = 64 << 20  # bytes of the graph handed to the kernel at a time (prefetch)
RERANK_BYTES = 32 << 20  # candidate vectors gathered at a time for re-scoring: bounded for a batch of thousands
SNAPSHOT_COLUMNS = ["key", "path", "start_s", "content_id", "artist", "title", "album", "genre", "year",
                    "track_number", "duration_s"]


# each track's label made loose (text.search_label), for text queries; snapshots before the rule lack it
SEARCH_COLUMN = "search_label"


class AnnError(RecsysError):
    """The index snapshot is missing or unreadable; the message says what to run."""


DAMAGED_HINT = "run `recsys repair` to rebuild it"


class LibraryVectors:
    """A loaded snapshot: vectors memory-mapped, metadata read column by column on first use.

    At a million tracks reading every metadata column costs more than a query may take in all: a path query needs
    the paths, a text query the artists and titles, a hit a few values of its own row (one row group is read).
    """

    def __init__(self, vectors: np.ndarray, meta: pq.ParquetFile, encoder_id: str, table_version: int,
                 kind: str = "flat", folder: Path | None = None, manifest: dict | None = None,
                 index: faiss.Index | None = None, ahead: ReadAhead | None = None) -> None:
        self.vectors = vectors
        self.encoder_id, self.table_version, self.kind = encoder_id, table_version, kind
        self.folder, self.manifest = folder, manifest or {}
        self.index = index  # the HNSW graph (kind 'hnsw'), opened with the other files
        self.behind: str | None = None  # why this snapshot lags the table, when it does (readers say so)
        self.hub: np.ndarray | None = None  # per-track density for hubness reduction (recsys.index.hubness)
        self.tags: np.ndarray | None = None  # N x T tag probabilities (NaN: none stored), when the encoder has a head
        self.tag_names: list[str] = []
        # (row, row) -> fingerprint agreement of the two files, None when unknown; set by the use cases that make
        # lists (recsys.app.output.with_fingerprints), read by recsys.library.groups.one_recording_with
        self.agreement: Callable[[int, int], float | None] | None = None
        self._parquet = meta
        self._ahead = ahead  # columns being read on a thread: waited for before the file is read again
        self._columns: dict[str, pa.ChunkedArray] = {}
        self._lists: dict[str, list] = {}
        self._groups: dict[int, pa.Table] = {}
        sizes = [meta.metadata.row_group(g).num_rows for g in range(meta.metadata.num_row_groups)]
        self._group_starts = np.cumsum([0, *sizes])

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def column_names(self) -> list[str]:
        return self._parquet.schema_arrow.names

    def column(self, name: str) -> pa.ChunkedArray:
        self._settle()
        if name not in self._columns:
            self._columns[name] = self._parquet.read(columns=[name]).column(name)
        return self._columns[name]

    def _settle(self) -> None:
        """Wait for the columns read ahead (``load_snapshot``'s ``read_ahead``): one reader of the file at a time."""
        if self._ahead is not None:
            for name, column in self._ahead.wait().items():
                self._columns.setdefault(name, column)
            self._ahead = None

    def values(self, name: str) -> list:
        """Column ``name`` as a Python list (built once): a million strings cost about 0.1 s, so a reader that needs
        a few rows asks :meth:`row` or :meth:`rows_with` instead. A column of one chunk (the whole file read at
        once) is converted straight from it: the chunked array's conversion copies the list once more."""
        if name not in self._lists:
            column = self.column(name)
            self._lists[name] = column.chunk(0).to_pylist() if column.num_chunks == 1 else column.to_pylist()
        return self._lists[name]

    def rows_with(self, name: str, wanted: Collection[str]) -> list[int]:
        """The rows whose column ``name`` is one of ``wanted``, in row order: compared in the column's Arrow buffers,
        never as a Python string per row (at a million rows the list costs ten times the comparison)."""
        import pyarrow.compute as pc  # only the lookups need it: not on every reader's start-up

        return row_numbers(pc.is_in(self.column(name), value_set=arrow_strings(wanted)))

    def holds_any(self, name: str, wanted: Sequence[str], first: int = 64) -> bool:
        """Whether column ``name`` holds any of ``wanted``: the ``first`` of them asked first (of a library that is
        embedded nearly any track is), all of them only when none of those is there."""
        return bool(self.rows_with(name, wanted[:first])) or (len(wanted) > first
                                                              and bool(self.rows_with(name, wanted[first:])))

    @property
    def files(self) -> SnapshotFiles:
        """The files the snapshot's rows name, as the write guard asks about them (``recsys.guard.Files``)."""
        return SnapshotFiles(self)

    @property
    def keys(self) -> list[str]:
        return self.values("key")

    @property
    def meta(self) -> pa.Table:
        """Every metadata column (reads what is not read yet)."""
        return pa.table({name: self.column(name) for name in self.column_names})

    def row(self, i: int) -> dict:
        """Row ``i``'s metadata, reading only its row group."""
        group = int(np.searchsorted(self._group_starts, i, side="right")) - 1
        self._settle()
        if group not in self._groups:
            self._groups[group] = self._parquet.read_row_group(group)
        table = self._groups[group]
        offset = i - int(self._group_starts[group])
        return {name: table.column(name)[offset].as_py() for name in table.column_names if name != SEARCH_COLUMN}


class SnapshotFiles:
    """The files a snapshot's rows name, for the write guard (``recsys.guard.Files``): a destination is looked up
    in the path column's Arrow buffers, never by a set of a million Python strings."""

    def __init__(self, lib: LibraryVectors) -> None:
        self._lib = lib

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and bool(self._lib.rows_with("path", [path]))

    def named(self, name: str) -> list[str]:
        """The snapshot's files whose last path component is ``name``."""
        import pyarrow.compute as pc

        wanted = arrow_strings([name])
        if not len(wanted) or not name or "/" in name:  # not UTF-8: no Arrow column holds it
            return []
        paths = self._lib.column("path")
        found = pc.or_(pc.ends_with(paths, pattern="/" + name), pc.equal(paths, wanted[0]))
        return [paths[i].as_py() for i in row_numbers(found)]


def arrow_strings(values: Iterable[str]) -> pa.Array:
    """``values`` as an Arrow string array, built from their UTF-8 bytes: ``pa.array`` of Python strings imports
    pandas (~0.3 s, more than a whole `recsys similar` may take). A value that is not UTF-8 (a file name of another
    encoding, decoded by ``os.fsdecode``) is left out: no Arrow column holds it."""
    data = []
    for value in values:
        try:
            data.append(value.encode("utf-8"))
        except UnicodeEncodeError:
            continue
    offsets = np.cumsum([0, *map(len, data)], dtype=np.int32)  # under 2 GB: a library's keys are ~0.1 GB at 1 M
    return pa.Array.from_buffers(pa.string(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


def row_numbers(mask: pa.ChunkedArray | pa.Array) -> list[int]:
    """The rows where a boolean column is true (null counts as false), in order; without numpy's view of the
    column, which imports pandas."""
    import pyarrow.compute as pc

    found = pc.indices_nonzero(mask)
    if not len(found):
        return []
    return np.frombuffer(found.buffers()[1], np.uint64)[found.offset:found.offset + len(found)].tolist()


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_manifest(home: Path) -> dict | None:
    """The current snapshot's manifest, or None when no snapshot was built."""
    return _read_json(Path(home) / ANN / MANIFEST)


TAGS_FILE = "tags.npy"
SNAPSHOT_FILES = ("vectors.npy", "meta.parquet", "index.faiss", HUB_FILE, TAGS_FILE)


def excluded_digest(keys: Collection[str]) -> str:
    """A short digest of the set of keys left out of a snapshot (rows whose file is missing)."""
    digest = hashlib.blake2b(digest_size=8)
    for key in sorted(keys):
        digest.update(key.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


# the index settings a snapshot is built with (the search-time ef, nprobe and re-ranking depth are read at query time)
BUILD_SETTINGS = ("exact_max_tracks", "hnsw_m", "hnsw_ef_construction", "compressed_min_tracks", "ivf_codes",
                  "ivf_nlist", "pq_m", "ivf_train_sample")
IVF_MIN_TRACKS = 10_000  # fewer cannot train 256-code product quantisers well: such a library stays flat or HNSW
IVF_POINTS_PER_LIST = 39  # FAISS's k-means wants at least this many training points per inverted list


def index_settings(index: IndexSettings | None, exact_max_tracks: int = IndexSettings.exact_max_tracks,
                   hnsw_m: int = 32, hnsw_ef_construction: int = 80) -> dict:
    """The settings a snapshot is built with: ``index``'s, or the defaults with the three given ones."""
    if index is None:
        index = IndexSettings(exact_max_tracks=exact_max_tracks, hnsw_m=hnsw_m,
                              hnsw_ef_construction=hnsw_ef_construction)
    return {name: getattr(index, name) for name in BUILD_SETTINGS}


def settings_match(recorded: object, index: IndexSettings | None) -> bool:
    """True when a manifest's recorded settings are ``index``'s; a setting a manifest predates counts as its
    default (a snapshot is not rebuilt because a newer recsys knows more settings)."""
    return isinstance(recorded, dict) and {**index_settings(None), **recorded} == index_settings(index)


def index_kind(count: int, index: IndexSettings) -> str:
    """'flat' up to ``exact_max_tracks``, 'ivf' (compressed) above ``compressed_min_tracks``, 'hnsw' between."""
    if count <= index.exact_max_tracks:
        return "flat"
    if count > index.compressed_min_tracks and count >= IVF_MIN_TRACKS:
        return "ivf"
    return "hnsw"


def pq_bytes(dim: int, pq_m: int = 0) -> int:
    """The product quantiser's code size: ``pq_m``, or the largest divisor of ``dim`` up to a quarter of it."""
    if pq_m:
        if dim % pq_m:
            divisors = [m for m in range(1, dim + 1) if dim % m == 0]
            raise RecsysError(f"index.pq_m = {pq_m} does not divide the vectors' {dim} dimensions: set it to one "
                              f"of {', '.join(map(str, divisors))}, or 0 to let recsys choose")
        return pq_m
    return max(m for m in range(1, max(1, dim // 4) + 1) if dim % m == 0)


def build_ivf(vectors: np.ndarray | _FileRows, index: IndexSettings, seed: int = 0) -> tuple[faiss.Index, dict]:
    """The compressed index of ``vectors`` (N x D, float32, memory-mapped or read from the file) and its manifest
    params.

    The coarse quantiser and the codes are trained on a random sample of at most ``ivf_train_sample`` rows (build
    time bounded whatever N), and the rows are encoded ``ADD_BATCH`` at a time, so the build holds the sample and
    the codes, never a second copy of the vectors."""
    n, dim = vectors.shape
    n_train = min(n, index.ivf_train_sample)
    nlist = index.ivf_nlist or 2 ** max(0, round(np.log2(np.sqrt(n))))
    nlist = max(1, min(nlist, n_train // IVF_POINTS_PER_LIST))
    codes = f"PQ{pq_bytes(dim, index.pq_m)}" if index.ivf_codes == "pq" else "SQ8"
    factory = f"IVF{nlist},{codes}"
    ivf = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if hasattr(ivf, "do_polysemous_training"):  # minutes of annealing for Hamming filtering, which IP search never uses
        ivf.do_polysemous_training = False
    rows = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False)) if n_train < n else slice(None)
    started, cpu = time.perf_counter(), time.process_time()
    ivf.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    trained, trained_cpu = time.perf_counter(), time.process_time()
    for start in range(0, n, ADD_BATCH):
        ivf.add(np.ascontiguousarray(vectors[start:start + ADD_BATCH], dtype=np.float32))
    params = {"factory": factory, "nlist": nlist, "codes": codes, "trained_on": n_train,
              "train_s": round(trained - started, 2), "add_s": round(time.perf_counter() - trained, 2),
              "train_cpu_s": round(trained_cpu - cpu, 2), "add_cpu_s": round(time.process_time() - trained_cpu, 2)}
    return ivf, params


def snapshot_damage(folder: Path, manifest: dict) -> str | None:
    """What is wrong with the snapshot's files (deleted, truncated, grown), or None when each has its recorded size."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        return "its manifest predates file checks"
    for name, size in files.items():
        try:
            actual = (folder / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} is {actual} bytes, {size} were written"
    return None


def snapshot_is_current(home: Path, encoder_id: str, index: IndexSettings | None = None,
                        excluded: str | None = None) -> bool:
    """True when the snapshot is whole and was built from the table version the stamp names, for this encoder (and,
    when given, these index settings and this set of left-out rows); no lancedb."""
    home = Path(home)
    manifest = read_manifest(home)
    stamp = read_stamp(home)
    if manifest is None or stamp is None:
        return False
    if manifest.get("encoder_id") != encoder_id or manifest.get("table_version") != stamp.get("table_version"):
        return False
    if index is not None and not settings_match(manifest.get("settings"), index):
        return False
    if excluded is not None and manifest.get("excluded", excluded_digest(())) != excluded:
        return False
    if "hubness" not in manifest:  # built before the hub statistics: the next writer adds them
        return False
    return snapshot_damage((home / ANN).resolve(), manifest) is None


def build_snapshot(store: TrackStore, home: Path, encoder_id: str,
                   exact_max_tracks: int = IndexSettings.exact_max_tracks, hnsw_m: int = 32,
                   hnsw_ef_construction: int = 80, exclude: Collection[str] = (),
                   index: IndexSettings | None = None) -> dict:
    """Write a snapshot of the rows of ``encoder_id`` (but the keys in ``exclude``: files missing now) and swap it
    in; returns its manifest. The caller holds the home lock.

    ``index`` gives every index setting; without it the defaults with the three given ones. The kind follows the
    row count (:func:`index_kind`): exact, an HNSW graph, or the compressed IVF index.
    """
    ix = index or IndexSettings(exact_max_tracks=exact_max_tracks, hnsw_m=hnsw_m,
                                hnsw_ef_construction=hnsw_ef_construction)
    home = Path(home)
    version = store.version  # read before the rows: if a write slips in between, the snapshot reads as stale
    table_rows = store.count
    dim = int(store.dim or 0)
    left_out = set(exclude)
    excluded = pa.array(sorted(left_out), pa.string())
    count = sum(batch.num_rows - _excluded_in(batch, excluded)
                for batch in store.scan(encoder_id, ["key"], SNAPSHOT_BATCH))  # the rows are written by count
    kind = index_kind(count, ix)
    params = {"m": ix.hnsw_m, "ef_construction": ix.hnsw_ef_construction} if kind == "hnsw" else {}
    manifest = {"table_version": version, "table_rows": table_rows, "encoder_id": encoder_id, "dim": dim,
                "count": count, "kind": kind, "params": params, "settings": index_settings(ix),
                "excluded": excluded_digest(left_out), "missing": len(left_out),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _check_link(home)
    folder = _new_folder(home, version)
    try:
        tag_names = store.tag_names
        n_tags = len(tag_names) if store.n_tags and tag_names else 0
        _write_rows(store, folder, encoder_id, excluded, count, dim, n_tags)
        # the index and the hub statistics read the file: the build holds no copy of the vectors of its own
        vectors = np.load(folder / "vectors.npy", mmap_mode="r") if count else np.zeros((0, dim), np.float32)
        if kind == "hnsw":
            graph = faiss.IndexHNSWFlat(dim, ix.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = ix.hnsw_ef_construction
            graph.add(vectors)
            faiss.write_index(graph, str(folder / "index.faiss"))
        elif kind == "ivf":
            with _FileRows(folder / "vectors.npy") as rows:  # read, not mapped: the writer holds codes alone
                ivf, params = build_ivf(rows, ix)
            manifest["params"] = params
            faiss.write_index(ivf, str(folder / "index.faiss"))
            del ivf
        if kind == "ivf":  # no hub statistics: a search per track, hours at 10 M; lists rank by cosine
            manifest["hubness"] = {"k": 0}
        else:
            search = graph.search if kind == "hnsw" else (
                lambda q, k: faiss.knn(q, vectors, k, metric=faiss.METRIC_INNER_PRODUCT))
            np.save(folder / HUB_FILE, hub_stats(vectors, search))
            manifest["hubness"] = {"k": HUB_K}
        if n_tags:
            manifest["tags"] = tag_names
        manifest["files"] = {name: (folder / name).stat().st_size for name in SNAPSHOT_FILES
                             if (folder / name).exists()}
        for name in manifest["files"]:  # on disk before the swap: a crash after it never exposes a torn file
            _fsync(folder / name)
        (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        _fsync(folder / MANIFEST)
        _swap_in(home, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            forget_made(home, [folder.name])
        raise
    return manifest


def _excluded_in(batch: pa.RecordBatch, excluded: pa.Array) -> int:
    """How many of ``batch``'s rows have a key in ``excluded``."""
    import pyarrow.compute as pc  # the writer's alone: not on every reader's start-up

    return int(pc.sum(pc.is_in(batch.column("key"), value_set=excluded)).as_py() or 0) if len(excluded) else 0


def _write_rows(store: TrackStore, folder: Path, encoder_id: str, excluded: pa.Array, count: int, dim: int,
                n_tags: int) -> None:
    """vectors.npy, meta.parquet (with the search labels) and, with ``n_tags``, tags.npy of the ``count`` rows of
    ``encoder_id`` whose key is not in ``excluded``, read from the table ``SNAPSHOT_BATCH`` rows at a time: the
    build holds a batch and a row group, never the table (the files are what writing it whole would write)."""
    import pyarrow.compute as pc

    schema = store.row_schema(SNAPSHOT_COLUMNS).append(pa.field(SEARCH_COLUMN, pa.string()))
    columns = SNAPSHOT_COLUMNS + (["tags"] if n_tags else [])
    written, pending, held = 0, [], 0
    with (open(folder / "vectors.npy", "wb") as vector_file,
          open(folder / TAGS_FILE, "wb") if n_tags else nullcontext() as tag_file,
          pq.ParquetWriter(folder / "meta.parquet", schema) as meta_file):
        _npy_header(vector_file, (count, dim))
        if tag_file is not None:
            _npy_header(tag_file, (count, n_tags))
        for batch, vectors in store.iter_rows(encoder_id, columns, SNAPSHOT_BATCH):
            if _excluded_in(batch, excluded):
                keep = pc.invert(pc.is_in(batch.column("key"), value_set=excluded))
                batch, vectors = batch.filter(keep), vectors[keep.to_numpy(zero_copy_only=False)]
            written += batch.num_rows
            if written > count:
                break
            vector_file.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
            if tag_file is not None:
                tag_file.write(_tag_matrix(pa.chunked_array([batch.column("tags")]), n_tags).tobytes())
            labels = [search_label(a, t, p, s or 0.0) for a, t, p, s in zip(
                *(batch.column(name).to_pylist() for name in ("artist", "title", "path", "start_s")), strict=True)]
            pending.append(pa.Table.from_batches([batch.select(SNAPSHOT_COLUMNS)]).append_column(
                SEARCH_COLUMN, pa.array(labels, pa.string())))
            held += batch.num_rows
            if held >= META_ROW_GROUP:  # whole row groups out, the rest carried: the groups of one table written
                table = pa.concat_tables(pending)
                full = held - held % META_ROW_GROUP
                meta_file.write_table(table.slice(0, full), row_group_size=META_ROW_GROUP)
                pending, held = [table.slice(full)], held - full
        if written != count:  # only a writer without the home lock (or the bucket's lease) changes it
            raise AnnError(f"the table in {store.location.table_uri('tracks')} changed while the index snapshot was "
                           f"built ({written} rows read, {count} counted): run the command again")
        if held or not count:
            meta_file.write_table(pa.concat_tables(pending) if pending else schema.empty_table(),
                                  row_group_size=META_ROW_GROUP)


class _FileRows:
    """The rows of a float32 C-ordered .npy file, read with ``pread`` a slice or a set of rows at a time. Rows read
    from a memory map stay mapped into the writer (its RSS grows by the whole file, 0.8 KB a track at D=200, though
    the kernel may reclaim them); rows read this way are the caller's arrays, freed with them."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # closed by __exit__
        version = np.lib.format.read_magic(self._file)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        self.shape, _, self.dtype = read_header(self._file)
        self._start, self._row = self._file.tell(), self.dtype.itemsize * int(np.prod(self.shape[1:]))

    def __len__(self) -> int:
        return int(self.shape[0])

    def _read(self, first: int, count: int) -> np.ndarray:
        data = os.pread(self._file.fileno(), count * self._row, self._start + first * self._row)
        return np.frombuffer(data, self.dtype).reshape(count, *self.shape[1:])

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            first, stop, _ = key.indices(len(self))
            return self._read(first, max(stop - first, 0))
        out = np.empty((len(key), *self.shape[1:]), self.dtype)
        for i, row in enumerate(key):
            out[i] = self._read(int(row), 1)[0]
        return out

    def __enter__(self) -> _FileRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _npy_header(file: BinaryIO, shape: tuple[int, int]) -> None:
    """The header np.save writes for a float32 C-ordered array of ``shape``; its data follows row by row."""
    np.lib.format.write_array_header_1_0(file, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                "fortran_order": False, "shape": shape})


def _check_link(home: Path) -> None:
    """Refuse (before any work) a ``<home>/ann`` recsys did not make: a plain folder cannot be swapped atomically,
    and it is not recsys's to delete."""
    link = home / ANN
    if link.exists() and not link.is_symlink():
        raise AnnError(f"{link} is a folder recsys did not make (its index is a link): move it out of {home}; "
                       "recsys never deletes it")


def _new_folder(home: Path, version: int) -> Path:
    """A fresh ``ann-<version>-<random>``, recorded as made by recsys before it exists (so a killed build's leftover
    is known to be recsys's, and nothing unrecorded is ever removed)."""
    while True:
        folder = home / f"{ANN}-{version}-{secrets.token_hex(4)}"
        if folder.exists() or folder.is_symlink() or folder.name in made(home):
            continue  # a name taken (by anyone): never record what recsys did not make
        record_made(home, [folder.name])
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made by someone else in between: not ours
            forget_made(home, [folder.name])
            continue
        except OSError:
            forget_made(home, [folder.name])
            raise
        return folder


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_in(home: Path, folder: Path) -> None:
    """Point ``home/ann`` at ``folder`` with an atomic rename, then remove the snapshots older than the one it
    replaced (that one stays until the next swap: a reader may have resolved the link to it a moment ago)."""
    link = home / ANN
    _check_link(home)
    previous = link.resolve().name if link.is_symlink() else None
    tmp_link = home / f".{ANN}-link-{os.getpid()}"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(folder.name)
    os.replace(tmp_link, link)
    gone = []
    for name in made(home):
        # A finished snapshot is replaced; an unfinished one is a killed build's leftover (one writer at a time).
        if not name.startswith(f"{ANN}-") or name in (folder.name, previous):
            continue
        old = home / name
        if not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)  # a reader with files open keeps its data (POSIX unlink)
        if not old.exists() and not old.is_symlink():
            gone.append(name)
    forget_made(home, gone)


def _damaged(home: Path, what: str) -> AnnError:
    return AnnError(f"the index snapshot in {home / ANN} is damaged ({what}): {DAMAGED_HINT}")


def _tag_matrix(column: pa.ChunkedArray, n_tags: int) -> np.ndarray:
    """The ``tags`` column as float32 N x n_tags, NaN rows where a track has none. Copied chunk by chunk from the
    column's buffers: a Python float per tag would cost gigabytes at a million tracks."""
    out = np.full((len(column), n_tags), np.nan, np.float32)
    start = 0
    for chunk in column.chunks:
        n = len(chunk)
        if n:
            values = chunk.values.slice(chunk.offset * n_tags, n * n_tags).to_numpy(zero_copy_only=False)
            rows = out[start:start + n]
            rows[:] = values.reshape(n, n_tags)
            if chunk.null_count:  # a null row's slots hold whatever the writer left there
                rows[~chunk.is_valid().to_numpy(zero_copy_only=False)] = np.nan
        start += n
    return out


def prefetch(path: Path, nbytes: int) -> None:
    """Bring the first ``nbytes`` of ``path`` into the page cache in large sequential reads, handed straight to
    /dev/null (no copy into Python). Why: FAISS copies an HNSW graph (the file's start; the vectors after it stay
    mapped) out of its mapping a page fault at a time, which from a cold cache is several times slower than the
    disk reading the region in order (`similar` cold, benchmarks/RESULTS.md); with the file cached this costs
    milliseconds. A system without ``sendfile`` to a file skips it: only the speed differs."""
    if nbytes <= 0:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # the read that follows says what is wrong
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            done = 0
            while done < nbytes:
                sent = os.sendfile(null, fd, done, min(nbytes - done, PREFETCH_CHUNK))
                if not sent:
                    break
                done += sent
        finally:
            os.close(null)
    except (OSError, AttributeError):  # no sendfile to a file here: FAISS reads it as it did
        pass
    finally:
        os.close(fd)


class ReadAhead:
    """Metadata columns read on a thread while FAISS reads the graph: both release the GIL, so on two cores the
    column a reader needs first (the labels of a text query, the keys of a playlist) costs no wall time of its own.
    A failed read is left to the reader, which reads the column again and reports what is wrong."""

    def __init__(self, meta: pq.ParquetFile, names: Sequence[str]) -> None:
        self._names = [name for name in dict.fromkeys(names) if name in meta.schema_arrow.names]
        self._read: dict[str, pa.ChunkedArray] = {}
        self._thread = threading.Thread(target=self._run, args=(meta,), daemon=True) if self._names else None
        if self._thread is not None:
            self._thread.start()

    def _run(self, meta: pq.ParquetFile) -> None:
        try:
            table = meta.read(columns=self._names)
        except Exception:  # the reader reads it again and says what is wrong
            return
        self._read = {name: table.column(name) for name in self._names}

    def wait(self) -> dict[str, pa.ChunkedArray]:
        """The columns read (none when the read failed), once the thread is done."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self._read


def load_snapshot(home: Path, read_ahead: Sequence[str] = ()) -> LibraryVectors:
    """The current snapshot, every file opened (vectors memory-mapped); a swap meanwhile makes it start over.
    ``read_ahead``: metadata columns the caller reads first, read while the index loads (:class:`ReadAhead`)."""
    home = Path(home)
    for attempt in range(LOAD_ATTEMPTS):
        last = attempt == LOAD_ATTEMPTS - 1
        folder = (home / ANN).resolve()
        manifest = _read_json(folder / MANIFEST)
        if manifest is None:
            if not last and (home / ANN).is_symlink():
                continue  # the folder was replaced between resolving the link and reading it
            if (home / ANN).exists():
                raise _damaged(home, f"{MANIFEST} is missing or unreadable")
            break
        damage = snapshot_damage(folder, manifest) if "files" in manifest else None
        ahead = None
        try:
            if damage is not None:
                raise OSError(damage)
            vectors = np.load(folder / "vectors.npy", mmap_mode="r")
            meta = pq.ParquetFile(folder / "meta.parquet")  # not pq.read_table: that imports pandas (~0.2 s)
            ahead = ReadAhead(meta, read_ahead)
            index = None
            if manifest.get("kind") == "hnsw":
                # the graph's vectors memory-mapped, not read: 0.09 s instead of 0.5 s at a million rows
                graph = folder / "index.faiss"
                prefetch(graph, graph.stat().st_size - vectors.size * vectors.itemsize)
                index = faiss.read_index(str(graph), getattr(faiss, "IO_FLAG_MMAP_IFC", 0))
            elif manifest.get("kind") == "ivf":
                index = faiss.read_index(str(folder / "index.faiss"), IVF_READ_FLAGS)
            if vectors.ndim != 2 or len(vectors) != meta.metadata.num_rows:
                raise ValueError(f"vectors.npy holds {len(vectors)} rows, meta.parquet {meta.metadata.num_rows}")
        except (OSError, ValueError, RuntimeError) as exc:
            if ahead is not None:
                ahead.wait()
            if not last and (home / ANN).resolve() != folder:
                continue  # the folder was replaced between resolving the link and opening its files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise _damaged(home, first) from None
        lib = LibraryVectors(vectors, meta, encoder_id=manifest["encoder_id"],
                             table_version=int(manifest["table_version"]), kind=manifest.get("kind", "flat"),
                             folder=folder, manifest=manifest, index=index, ahead=ahead)
        if HUB_FILE in manifest.get("files", {}):  # snapshots built before hubness reduction lack it
            lib.hub = np.load(folder / HUB_FILE)
        if TAGS_FILE in manifest.get("files", {}):
            lib.tags, lib.tag_names = np.load(folder / TAGS_FILE, mmap_mode="r"), list(manifest.get("tags", []))
        return lib
    raise AnnError(f"no index in {home}: run `recsys embed`")


def current_snapshot(home: Path, index: IndexSettings, read_ahead: Sequence[str] = ()) -> LibraryVectors:
    """The last complete snapshot, for readers: never built here (only a writer holding the home lock builds), so
    a reader always gets a whole index; ``behind`` says when the table or the index settings moved on since.
    ``read_ahead``: the metadata columns the reader needs first (``load_snapshot``)."""
    home = Path(home)
    if read_manifest(home) is None and not (home / ANN).exists():
        raise AnnError(f"nothing is embedded in {home} yet: run `recsys embed` first")
    lib = load_snapshot(home, read_ahead)
    stamp = read_stamp(home) or {}
    if stamp.get("table_version") not in (None, lib.table_version):
        lib.behind = ("the index is behind the table (a run was interrupted or is still going): results leave out "
                      "the latest changes until `recsys embed` finishes")
    elif not settings_match(lib.manifest.get("settings", index_settings(index)), index):
        lib.behind = "the index was built with other index settings: `recsys embed` rebuilds it with the new ones"
    return lib


class Searcher:
    """Top-k by cosine (inner product of L2-normalised vectors) over a loaded snapshot.

    ``ef_search`` is the HNSW search breadth; ``nprobe`` the inverted lists a compressed index searches and
    ``rerank`` x k the hits of it that are re-scored with their exact cosine."""

    def __init__(self, lib: LibraryVectors, home: Path, ef_search: int = 128,
                 nprobe: int = IndexSettings.ivf_nprobe, rerank: int = IndexSettings.ivf_rerank) -> None:
        self.lib = lib
        self._index = lib.index
        self.rerank = max(1, int(rerank))
        if lib.kind in ("hnsw", "ivf") and self._index is None:
            raise _damaged(Path(home), "index.faiss was not opened")
        if lib.kind == "ivf":
            faiss.extract_index_ivf(self._index).nprobe = int(nprobe)
        elif self._index is not None:
            self._index.hnsw.efSearch = ef_search

    def search(self, query: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """For each query row, up to k (row, cosine) pairs, best first."""
        scores, rows = self.search_arrays(query, k)
        return [[(int(i), float(s)) for i, s in zip(r, sc, strict=True) if i >= 0] for r, sc in zip(rows, scores,
                                                                                                      strict=True)]

    def search_arrays(self, query: np.ndarray, k: int, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batched top-k: (cosines, rows), each (queries, k), best first; row -1 where the index found fewer than k.

        ``ef_search`` overrides the HNSW search breadth for this call (a batch of many queries that needs fewer
        neighbours than a user's query can search narrower)."""
        queries = np.ascontiguousarray(np.atleast_2d(query), dtype=np.float32)
        n = len(self.lib.vectors)
        k = min(int(k), n)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if queries.shape[1] != self.lib.vectors.shape[1]:
            raise AnnError(f"query has {queries.shape[1]} dimensions, the index {self.lib.vectors.shape[1]}: "
                           "re-embed with the index's encoder (`recsys embed`)")
        if self._index is None:
            return faiss.knn(queries, np.asarray(self.lib.vectors), k, metric=faiss.METRIC_INNER_PRODUCT)
        if self.lib.kind == "ivf":
            return self._reranked(queries, k)
        if ef_search is None:
            return self._index.search(queries, k)
        default, self._index.hnsw.efSearch = self._index.hnsw.efSearch, max(int(ef_search), k)
        try:
            return self._index.search(queries, k)
        finally:
            self._index.hnsw.efSearch = default

    def _reranked(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The compressed index's ``rerank`` x k best candidates re-scored with their exact cosine (rows read from
        the memory-mapped vectors, in file order), the k best of them kept."""
        depth = min(len(self.lib.vectors), k * self.rerank)
        _, candidates = self._index.search(queries, depth)
        chunk = max(1, RERANK_BYTES // (depth * queries.shape[1] * 4))
        scores = np.full((len(queries), k), MISSING_SCORE, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        for start in range(0, len(queries), chunk):
            cand = candidates[start:start + chunk]
            valid = cand >= 0
            unique = np.unique(cand[valid])
            if not len(unique):
                continue
            vecs = np.asarray(self.lib.vectors[unique], dtype=np.float32)
            exact = np.einsum("qcd,qd->qc", vecs[np.searchsorted(unique, np.where(valid, cand, unique[0]))],
                              queries[start:start + chunk])
            exact[~valid] = MISSING_SCORE
            best = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            top = np.take_along_axis(exact, best, axis=1)
            found = np.take_along_axis(valid, best, axis=1)
            scores[start:start + len(cand), :best.shape[1]] = top
            rows[start:start + len(cand), :best.shape[1]] = np.where(found, np.take_along_axis(cand, best, axis=1), -1)
        return scores, rows
