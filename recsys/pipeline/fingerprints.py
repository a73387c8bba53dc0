"""`recsys embed`'s last phase: the fingerprints the lists' "one recording" rule compares, computed ahead of the
queries.

``similar``, ``path``, ``playlist`` and ``radio`` judge a candidate within
:data:`recsys.library.groups.DUPLICATE_CANDIDATE_COS` of a listed track by the two files' fingerprints
(:func:`recsys.library.groups.one_recording_with`), read from the home's cache without decoding (a query stays
interactive). So after the snapshot is refreshed, every track with a neighbour that close (of other content: identical
content agrees without a fingerprint) and no cached fingerprint is fingerprinted here, in worker processes like the
embedding's decoders, each one cached as soon as it is computed: Ctrl-C keeps what is done and the next embed goes
on. A file marker (:data:`PREPARED`) names the snapshot whose close tracks are all cached, so a no-op embed skips
this phase after one look at two small files. Server songs are not fingerprinted (a whole download each): the lists'
cosine rule judges them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.atomic import write_bytes_atomic
from recsys.config import IndexSettings
from recsys.embedder.decoding import fingerprint_pool, fingerprint_with_deadline
from recsys.embedder.fingerprint import FingerprintCache, row_fingerprint_key
from recsys.index.ann import LibraryVectors, Searcher, current_snapshot, read_manifest
from recsys.library.groups import DUPLICATE_CANDIDATE_COS
from recsys.library.uri import is_remote

PREPARED = "prepared.json"  # in the cache folder: the snapshot whose close tracks all have a cached fingerprint
CHUNK = 1024  # queries searched together
POOL_FROM = 8  # more files than this are fingerprinted in worker processes (spawning them costs a second or so)
NEIGHBOURS = 10  # looked at per track: enough to see past its byte copies (same content, no fingerprint needed)
_MANIFEST_KEYS = ("table_version", "table_rows", "encoder_id", "count", "excluded", "built_at")


@dataclass
class FingerprintReport:
    """What the phase did: files fingerprinted now, those that have none (why), and whether Ctrl-C stopped it."""

    fingerprinted: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0


def close_pairs(lib: LibraryVectors, searcher: Searcher, neighbours: int,
                min_cosine: float = DUPLICATE_CANDIDATE_COS) -> dict[tuple[int, int], float]:
    """Row pairs (i < j) among each track's ``neighbours`` nearest at cosine ``min_cosine`` or closer, with their
    cosine (a batched k-nearest query, no N x N matrix)."""
    vectors = lib.vectors
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(lib), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(lib)))
        cosines, found = searcher.search_arrays(np.asarray(vectors[rows], dtype=np.float32), neighbours + 1)
        for i, row, cos in zip(rows, found, cosines, strict=True):
            for j, c in zip(row, cos, strict=True):
                if j >= 0 and j != i and c >= min_cosine:
                    pairs[(min(int(i), int(j)), max(int(i), int(j)))] = float(c)
    return pairs


def _snapshot_id(manifest: dict) -> str:
    return json.dumps({k: manifest.get(k) for k in _MANIFEST_KEYS}, sort_keys=True, default=str)


def prepared(home: Path, cache: FingerprintCache) -> bool:
    """Whether the current snapshot's close tracks all have a cached fingerprint (the marker names it)."""
    manifest = read_manifest(home)
    if cache.folder is None or manifest is None:
        return cache.folder is None  # no cache to fill (a folder that is not recsys's home), or no snapshot yet
    try:
        return (cache.folder / PREPARED).read_text(encoding="utf-8") == _snapshot_id(manifest)
    except (OSError, UnicodeDecodeError):
        return False


def prepare_fingerprints(home: Path, index: IndexSettings, workers: int, progress: Callable[..., object] | None = None,
                         timeout_s: float = 60.0) -> FingerprintReport:
    """Fingerprint every track of the current snapshot with a neighbour within ``DUPLICATE_CANDIDATE_COS`` and no
    cached fingerprint, in ``workers`` processes (1, or a few files: here) with ``timeout_s`` per file;
    ``progress(total, desc=...)`` makes a bar."""
    started = time.monotonic()
    report = FingerprintReport()
    cache = FingerprintCache(home)
    manifest = read_manifest(home)
    if manifest is None or prepared(home, cache):  # no snapshot: nothing to prepare
        return report
    lib = current_snapshot(home, index)
    searcher = Searcher(lib, home, ef_search=index.hnsw_ef_search, nprobe=index.ivf_nprobe, rerank=index.ivf_rerank)
    rows: set[int] = set()
    for i, j in close_pairs(lib, searcher, NEIGHBOURS):
        a, b = lib.row(i), lib.row(j)
        if not (a.get("content_id") and a.get("content_id") == b.get("content_id")):
            rows.update((i, j))
    todo: dict[str, tuple[str, float, float]] = {}
    for i in sorted(rows):
        meta = lib.row(i)
        key, path = row_fingerprint_key(meta), str(meta.get("path") or "")
        if path and not is_remote(path) and key not in todo and not cache.cached(key):
            todo[key] = (path, float(meta.get("duration_s") or 0.0), float(meta.get("start_s") or 0.0))
    bar = progress(len(todo), desc="fingerprints") if (progress and todo) else None
    complete = True
    try:
        for key, (path, bits, why) in _computed(todo, workers, timeout_s):
            cache.put(key, path, bits, why)
            report.fingerprinted += 1
            if bar is not None:
                bar.update(1)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        report.interrupted = True
    except BrokenProcessPool as exc:  # a worker died (a decoder crash): what is cached stays, the next embed goes on
        complete = False
        cache.failures.append(("fingerprint workers", str(exc) or type(exc).__name__))
    finally:
        if bar is not None:
            bar.close()  # type: ignore[attr-defined]
    report.failures = cache.failures
    if complete and not report.interrupted and cache.folder is not None:
        try:
            write_bytes_atomic(cache.folder / PREPARED, _snapshot_id(manifest).encode())
        except OSError:  # a read-only home: the next embed looks again
            pass
    report.seconds = time.monotonic() - started
    return report


def _computed(todo: dict[str, tuple[str, float, float]], workers: int,
              timeout_s: float) -> Iterator[tuple[str, tuple[str, np.ndarray, str | None]]]:
    """(key, (path, fingerprint, why)) for each file of ``todo``, as they are done; a KeyboardInterrupt stops the
    workers (each finishes its file, which is dropped) and goes up. Each file has the decoders' deadline
    ``timeout_s``."""
    if workers <= 1 or len(todo) <= POOL_FROM:
        for key, (path, duration, start) in todo.items():
            yield key, (path, *fingerprint_with_deadline(path, duration, start, timeout_s))
        return
    workers = min(workers, len(todo))
    pool = fingerprint_pool(workers)
    items = iter(todo.items())
    running: dict[Future, tuple[str, str]] = {}
    try:
        while True:
            while len(running) < 2 * workers and (item := next(items, None)) is not None:
                key, (path, duration, start) = item
                running[pool.submit(fingerprint_with_deadline, path, duration, start, timeout_s)] = (key, path)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                key, path = running.pop(future)
                yield key, (path, *future.result())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
