"""The read-optimised snapshot of the track table under ``<home>/ann``, and nearest-neighbour search over it.

Readers (``recsys similar``, ``recsys playlist``) need only numpy, pyarrow.parquet, json and faiss: importing this
module never imports lancedb (~1.3 s) or torch. The snapshot holds:

- ``manifest.json``: table_version, table_rows, encoder_id, dim, count, kind ('flat' | 'hnsw'), params, built_at;
- ``vectors.npy``: float32 N x D, memory-mapped on load;
- ``meta.parquet``: one row per vector (key, path, start_s, content_id, tags, duration_s), row i <-> vector i;
- ``index.faiss``: the HNSW graph, for kind 'hnsw' only (a flat search runs straight over the memory-mapped vectors);
- ``hub_stats.npy``: one float per vector, its neighbourhood density for hubness reduction (``recsys.index.hubness``).

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
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

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
                 index: faiss.Index | None = None) -> None:
        self.vectors = vectors
        self.encoder_id, self.table_version, self.kind = encoder_id, table_version, kind
        self.folder, self.manifest = folder, manifest or {}
        self.index = index  # the HNSW graph (kind 'hnsw'), opened with the other files
        self.behind: str | None = None  # why this snapshot lags the table, when it does (readers say so)
        self.hub: np.ndarray | None = None  # per-track density for hubness reduction (recsys.index.hubness)
        self._parquet = meta
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
        if name not in self._columns:
            self._columns[name] = self._parquet.read(columns=[name]).column(name)
        return self._columns[name]

    def values(self, name: str) -> list:
        """Column ``name`` as a Python list (built once)."""
        if name not in self._lists:
            self._lists[name] = self.column(name).to_pylist()
        return self._lists[name]

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
        if group not in self._groups:
            self._groups[group] = self._parquet.read_row_group(group)
        table = self._groups[group]
        offset = i - int(self._group_starts[group])
        return {name: table.column(name)[offset].as_py() for name in table.column_names if name != SEARCH_COLUMN}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_manifest(home: Path) -> dict | None:
    """The current snapshot's manifest, or None when no snapshot was built."""
    return _read_json(Path(home) / ANN / MANIFEST)


SNAPSHOT_FILES = ("vectors.npy", "meta.parquet", "index.faiss", HUB_FILE)


def excluded_digest(keys: Collection[str]) -> str:
    """A short digest of the set of keys left out of a snapshot (rows whose file is missing)."""
    digest = hashlib.blake2b(digest_size=8)
    for key in sorted(keys):
        digest.update(key.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def index_settings(index: IndexSettings | None, exact_max_tracks: int = IndexSettings.exact_max_tracks,
                   hnsw_m: int = 32, hnsw_ef_construction: int = 80) -> dict:
    """The settings a snapshot is built with (the search-time ef is not one: it is read at query time)."""
    if index is not None:
        exact_max_tracks, hnsw_m, hnsw_ef_construction = index.exact_max_tracks, index.hnsw_m, \
            index.hnsw_ef_construction
    return {"exact_max_tracks": int(exact_max_tracks), "hnsw_m": int(hnsw_m),
            "hnsw_ef_construction": int(hnsw_ef_construction)}


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
    if index is not None and manifest.get("settings") != index_settings(index):
        return False
    if excluded is not None and manifest.get("excluded", excluded_digest(())) != excluded:
        return False
    if "hubness" not in manifest:  # built before the hub statistics: the next writer adds them
        return False
    return snapshot_damage((home / ANN).resolve(), manifest) is None


def build_snapshot(store: TrackStore, home: Path, encoder_id: str,
                   exact_max_tracks: int = IndexSettings.exact_max_tracks, hnsw_m: int = 32,
                   hnsw_ef_construction: int = 80, exclude: Collection[str] = ()) -> dict:
    """Write a snapshot of the rows of ``encoder_id`` (but the keys in ``exclude``: files missing now) and swap it
    in; returns its manifest. The caller holds the home lock.

    Above ``exact_max_tracks`` rows the snapshot carries an HNSW graph (approximate; ~0.2 ms at 200k rows on 2 CPU
    cores); at or below it searches are exact.
    """
    home = Path(home)
    version = store.version  # read before the rows: if a write slips in between, the snapshot reads as stale
    table_rows = store.count
    meta, vectors = store.read_all(encoder_id)
    dim = int(vectors.shape[1]) or int(store.dim or 0)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(meta), dim)
    left_out = set(exclude)
    if left_out:
        keep = np.array([k not in left_out for k in meta.column("key").to_pylist()], dtype=bool)
        meta, vectors = meta.filter(pa.array(keep)), np.ascontiguousarray(vectors[keep])
    kind = "hnsw" if len(meta) > exact_max_tracks else "flat"
    params = {"m": hnsw_m, "ef_construction": hnsw_ef_construction} if kind == "hnsw" else {}
    manifest = {"table_version": version, "table_rows": table_rows, "encoder_id": encoder_id, "dim": dim,
                "count": len(meta), "kind": kind, "params": params,
                "settings": index_settings(None, exact_max_tracks, hnsw_m, hnsw_ef_construction),
                "excluded": excluded_digest(left_out), "missing": len(left_out),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _check_link(home)
    folder = _new_folder(home, version)
    try:
        np.save(folder / "vectors.npy", vectors)
        labels = [search_label(a, t, p, s or 0.0) for a, t, p, s in zip(
            *(meta.column(name).to_pylist() for name in ("artist", "title", "path", "start_s")), strict=True)]
        table = meta.select(SNAPSHOT_COLUMNS).append_column(SEARCH_COLUMN, pa.array(labels, pa.string()))
        pq.write_table(table, folder / "meta.parquet", row_group_size=META_ROW_GROUP)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = hnsw_ef_construction
            index.add(vectors)
            faiss.write_index(index, str(folder / "index.faiss"))
        search = index.search if kind == "hnsw" else (
            lambda q, k: faiss.knn(q, vectors, k, metric=faiss.METRIC_INNER_PRODUCT))
        np.save(folder / HUB_FILE, hub_stats(vectors, search))
        manifest["hubness"] = {"k": HUB_K}
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


def load_snapshot(home: Path) -> LibraryVectors:
    """The current snapshot, every file opened (vectors memory-mapped); a swap meanwhile makes it start over."""
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
        try:
            if damage is not None:
                raise OSError(damage)
            vectors = np.load(folder / "vectors.npy", mmap_mode="r")
            meta = pq.ParquetFile(folder / "meta.parquet")  # not pq.read_table: that imports pandas (~0.2 s)
            index = None
            if manifest.get("kind") == "hnsw":
                # the graph's vectors memory-mapped, not read: 0.09 s instead of 0.5 s at a million rows
                index = faiss.read_index(str(folder / "index.faiss"), getattr(faiss, "IO_FLAG_MMAP_IFC", 0))
            if vectors.ndim != 2 or len(vectors) != meta.metadata.num_rows:
                raise ValueError(f"vectors.npy holds {len(vectors)} rows, meta.parquet {meta.metadata.num_rows}")
        except (OSError, ValueError, RuntimeError) as exc:
            if not last and (home / ANN).resolve() != folder:
                continue  # the folder was replaced between resolving the link and opening its files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise _damaged(home, first) from None
        lib = LibraryVectors(vectors, meta, encoder_id=manifest["encoder_id"],
                             table_version=int(manifest["table_version"]), kind=manifest.get("kind", "flat"),
                             folder=folder, manifest=manifest, index=index)
        if HUB_FILE in manifest.get("files", {}):  # snapshots built before hubness reduction lack it
            lib.hub = np.load(folder / HUB_FILE)
        return lib
    raise AnnError(f"no index in {home}: run `recsys embed`")


def current_snapshot(home: Path, index: IndexSettings) -> LibraryVectors:
    """The last complete snapshot, for readers: never built here (only a writer holding the home lock builds), so
    a reader always gets a whole index; ``behind`` says when the table or the index settings moved on since."""
    home = Path(home)
    if read_manifest(home) is None and not (home / ANN).exists():
        raise AnnError(f"nothing is embedded in {home} yet: run `recsys embed` first")
    lib = load_snapshot(home)
    stamp = read_stamp(home) or {}
    if stamp.get("table_version") not in (None, lib.table_version):
        lib.behind = ("the index is behind the table (a run was interrupted or is still going): results leave out "
                      "the latest changes until `recsys embed` finishes")
    elif lib.manifest.get("settings", index_settings(index)) != index_settings(index):
        lib.behind = "the index was built with other index settings: `recsys embed` rebuilds it with the new ones"
    return lib


class Searcher:
    """Top-k by cosine (inner product of L2-normalised vectors) over a loaded snapshot."""

    def __init__(self, lib: LibraryVectors, home: Path, ef_search: int = 128) -> None:
        self.lib = lib
        self._index = lib.index
        if lib.kind == "hnsw" and self._index is None:
            raise _damaged(Path(home), "index.faiss was not opened")
        if self._index is not None:
            self._index.hnsw.efSearch = ef_search

    def search(self, query: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """For each query row, up to k (row, cosine) pairs, best first."""
        scores, rows = self.search_arrays(query, k)
        return [[(int(i), float(s)) for i, s in zip(r, sc, strict=True) if i >= 0] for r, sc in zip(rows, scores,
                                                                                                      strict=True)]

    def search_arrays(self, query: np.ndarray, k: int, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batched top-k: (cosines, rows), each (queries, k), best first; row -1 where HNSW found fewer than k.

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
        if ef_search is None:
            return self._index.search(queries, k)
        default, self._index.hnsw.efSearch = self._index.hnsw.efSearch, max(int(ef_search), k)
        try:
            return self._index.search(queries, k)
        finally:
            self._index.hnsw.efSearch = default
