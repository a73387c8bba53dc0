"""The ANN snapshot: build/load/search, exact vs HNSW, atomic swap, staleness by stamp, no slow imports in readers."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.index.ann import (
    AnnError,
    LibraryVectors,
    Searcher,
    build_snapshot,
    load_snapshot,
    read_manifest,
    snapshot_is_current,
)
from recsys.index.store import TrackRow, TrackStore

DIM = 16


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(n // 100, 4), DIM))
    x = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _rows(vectors: np.ndarray, encoder_id: str = "enc", prefix: str = "t", first: int = 0) -> list[TrackRow]:
    return [TrackRow(key=f"{prefix}{i}'", path=f"/m/{prefix}{i}.flac", start_s=0.0, content_id=f"{prefix}c{i}",
                     size=i, mtime_ns=i, duration_s=200.0, artist=f"artist {i % 7}", album="al", title=f"song {i}",
                     genre="", year=2000 + i % 20, track_number=None, encoder_id=encoder_id, vector=v)
            for i, v in enumerate(vectors, start=first)]


def _fill(home: Path, vectors: np.ndarray, encoder_id: str = "enc", prefix: str = "t") -> TrackStore:
    store = TrackStore.open(home)
    rows = _rows(vectors, encoder_id, prefix)
    for start in range(0, len(rows), 512):
        store.upsert(rows[start:start + 512])
    return store


def test_flat_snapshot_is_exact(tmp_path):
    vectors = _clustered(300)
    store = _fill(tmp_path, vectors)
    _fill(tmp_path, _clustered(20, seed=5), encoder_id="other", prefix="o")  # another encoder's rows stay out
    manifest = build_snapshot(store, tmp_path, "enc")
    assert manifest["kind"] == "flat" and manifest["count"] == 300 and manifest["dim"] == DIM
    assert read_manifest(tmp_path) == manifest
    lib = load_snapshot(tmp_path)
    assert isinstance(lib.vectors, np.memmap) and lib.vectors.shape == (300, DIM)
    assert lib.keys == [f"t{i}'" for i in range(300)] and lib.encoder_id == "enc"
    assert lib.row(7) == {"key": "t7'", "path": "/m/t7.flac", "start_s": 0.0, "content_id": "tc7", "artist": "artist 0",
                          "title": "song 7", "album": "al", "genre": "", "year": 2007, "track_number": None,
                          "duration_s": 200.0}
    queries = vectors[[3, 42]]
    found = Searcher(lib, tmp_path).search(queries, 10)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert [[i for i, _ in hits] for hits in found] == truth.tolist()
    assert found[0][0] == (3, pytest.approx(1.0, abs=1e-5))
    assert len(Searcher(lib, tmp_path).search(vectors[0], 1000)[0]) == 300  # k beyond N: all rows


def test_hnsw_agrees_with_exact(tmp_path):
    vectors = _clustered(3000)
    store = _fill(tmp_path, vectors)
    build_snapshot(store, tmp_path, "enc")
    exact = Searcher(load_snapshot(tmp_path), tmp_path)
    manifest = build_snapshot(store, tmp_path, "enc", exact_max_tracks=1000, hnsw_m=16, hnsw_ef_construction=64)
    assert manifest["kind"] == "hnsw" and manifest["params"] == {"m": 16, "ef_construction": 64}
    lib = load_snapshot(tmp_path)
    approx = Searcher(lib, tmp_path, ef_search=64)
    queries = vectors[::30]
    a, e = approx.search(queries, 10), exact.search(queries, 10)
    recall = np.mean([len({i for i, _ in x} & {i for i, _ in y}) / 10 for x, y in zip(a, e, strict=True)])
    assert recall >= 0.95
    for x, y in zip(a, e, strict=True):  # same scores for the rows both found
        ys = dict(y)
        assert all(abs(s - ys[i]) < 1e-5 for i, s in x if i in ys)


def test_staleness_by_stamp(tmp_path):
    store = _fill(tmp_path, _clustered(50))
    assert not snapshot_is_current(tmp_path, "enc")  # nothing built
    build_snapshot(store, tmp_path, "enc")
    assert snapshot_is_current(tmp_path, "enc")
    assert not snapshot_is_current(tmp_path, "another-encoder")
    store.delete(["t3'"])
    assert not snapshot_is_current(tmp_path, "enc")
    build_snapshot(store, tmp_path, "enc")
    assert snapshot_is_current(tmp_path, "enc") and len(load_snapshot(tmp_path).keys) == 49


def test_atomic_swap_keeps_readers_whole(tmp_path):
    vectors = _clustered(200)
    store = _fill(tmp_path, vectors)
    build_snapshot(store, tmp_path, "enc")
    held = load_snapshot(tmp_path)
    first = held.vectors.copy()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_forever():
        while not stop.is_set():
            try:
                lib = load_snapshot(tmp_path)
                assert len(lib.keys) == lib.vectors.shape[0] == lib.manifest["count"]
            except BaseException as exc:  # noqa: BLE001 -- handed to the main thread
                errors.append(exc)
                return

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for n in (150, 120, 180, 100, 160):
            store.delete([f"t{i}'" for i in range(n, 200)])
            build_snapshot(store, tmp_path, "enc")
            store.upsert(_rows(vectors[n:], first=n))
            build_snapshot(store, tmp_path, "enc")
    finally:
        stop.set()
        reader.join()
    assert not errors, errors[0]
    np.testing.assert_array_equal(held.vectors, first)  # an open snapshot survives its replacement
    assert (tmp_path / "ann").is_symlink()
    kept = sorted(p.name for p in tmp_path.glob("ann-*"))  # the current one and the one it replaced; older removed
    assert len(kept) == 2 and (tmp_path / "ann").resolve().name in kept


def test_failed_build_leaves_the_old_snapshot(tmp_path, monkeypatch):
    store = _fill(tmp_path, _clustered(40))
    build_snapshot(store, tmp_path, "enc")
    before = read_manifest(tmp_path)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("recsys.index.ann.pq.ParquetWriter.write_table", broken)  # meta.parquet: the disk is full
    store.delete(["t1'"])
    with pytest.raises(OSError):
        build_snapshot(store, tmp_path, "enc")
    assert read_manifest(tmp_path) == before and len(load_snapshot(tmp_path).keys) == 40
    assert len(list(tmp_path.glob("ann-*"))) == 1  # the half-built folder is gone


def test_missing_and_empty_snapshots(tmp_path):
    with pytest.raises(AnnError, match=r"no index in .*: run `recsys embed`"):
        load_snapshot(tmp_path)
    store = _fill(tmp_path, _clustered(10))
    manifest = build_snapshot(store, tmp_path, "new-encoder")  # no rows of this encoder yet
    assert (manifest["count"], manifest["dim"]) == (0, DIM)
    lib = load_snapshot(tmp_path)
    assert Searcher(lib, tmp_path).search(np.ones(DIM, np.float32), 5) == [[]]
    build_snapshot(store, tmp_path, "enc")
    with pytest.raises(AnnError, match="dimensions"):
        Searcher(load_snapshot(tmp_path), tmp_path).search(np.ones(DIM + 1, np.float32), 5)


READER = """
import sys
import numpy as np
from pathlib import Path
from recsys.index.ann import Searcher, load_snapshot, snapshot_is_current
home = Path(sys.argv[1])
assert snapshot_is_current(home, "enc")
lib = load_snapshot(home)
hits = Searcher(lib, home).search(np.asarray(lib.vectors[0]), 3)
assert hits[0][0][0] == 0, hits
print(lib.kind, sorted(m for m in ("lancedb", "torch", "pandas") if m in sys.modules))
"""


@pytest.mark.parametrize("exact_max", [10_000, 10])
def test_reader_imports_neither_lancedb_nor_torch(tmp_path, exact_max):
    store = _fill(tmp_path, _clustered(100))
    build_snapshot(store, tmp_path, "enc", exact_max_tracks=exact_max)
    out = subprocess.run([sys.executable, "-c", READER, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["flat" if exact_max > 100 else "hnsw", "[]"], out.stderr


def test_readers_never_build_and_say_when_behind(tmp_path):
    """Readers rebuilt and swapped the snapshot without the home lock (an empty one, during an encoder switch): they
    now read the last complete snapshot, build nothing, and say it is behind."""
    from recsys.config import IndexSettings
    from recsys.index.ann import current_snapshot

    store = _fill(tmp_path, _clustered(40))
    build_snapshot(store, tmp_path, "enc")
    folders = sorted(tmp_path.glob("ann-*"))
    store.upsert(_rows(_clustered(30, seed=1), encoder_id="new-encoder", prefix="n"))  # a switch under way
    store.delete([f"t{i}'" for i in range(20)])
    lib = current_snapshot(tmp_path, IndexSettings())
    assert len(lib) == 40 and lib.encoder_id == "enc"
    assert lib.behind and "behind the table" in lib.behind
    assert sorted(tmp_path.glob("ann-*")) == folders  # nothing built, nothing swapped


def test_staleness_covers_index_settings_and_missing_rows(tmp_path):
    from recsys.config import IndexSettings
    from recsys.index.ann import excluded_digest

    store = _fill(tmp_path, _clustered(30))
    build_snapshot(store, tmp_path, "enc", exclude=["t1'", "t2'"])
    assert len(load_snapshot(tmp_path)) == 28 and "t1'" not in load_snapshot(tmp_path).keys
    settings = IndexSettings()
    assert snapshot_is_current(tmp_path, "enc", settings, excluded_digest(["t2'", "t1'"]))
    assert not snapshot_is_current(tmp_path, "enc", settings, excluded_digest(["t1'"]))  # a file came back
    assert not snapshot_is_current(tmp_path, "enc", IndexSettings(hnsw_m=16), excluded_digest(["t1'", "t2'"]))
    assert not snapshot_is_current(tmp_path, "enc", IndexSettings(exact_max_tracks=10))


@pytest.mark.parametrize("damage", ["truncate vectors", "delete meta", "truncate meta", "delete manifest"])
def test_a_damaged_snapshot_is_named_and_not_current(tmp_path, damage):
    """A truncated vectors.npy or a deleted meta.parquet said "run recsys embed", and embed then reported it up to
    date: the snapshot is not current (the next writer rebuilds it) and readers name the damage and `recsys repair`."""
    store = _fill(tmp_path, _clustered(30))
    build_snapshot(store, tmp_path, "enc")
    folder = (tmp_path / "ann").resolve()
    target = folder / {"truncate vectors": "vectors.npy", "delete meta": "meta.parquet",
                       "truncate meta": "meta.parquet", "delete manifest": "manifest.json"}[damage]
    if damage.startswith("truncate"):
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    else:
        target.unlink()
    assert not snapshot_is_current(tmp_path, "enc")
    with pytest.raises(AnnError, match=r"is damaged \(.*\): run `recsys repair`"):
        load_snapshot(tmp_path)


def _styles(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors around overlapping style centres of uneven size (not tight clusters): a track's nearest
    neighbours are close but not tied, as with real embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, dim))
    weights = rng.pareto(1.5, 60) + 0.1
    x = centres[rng.choice(60, n, p=weights / weights.sum())] + 1.2 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_compressed_snapshot_finds_the_exact_neighbours_with_exact_cosines(tmp_path, monkeypatch):
    """Above index.compressed_min_tracks the snapshot is an IVF index of product-quantised codes: through the real
    build/load/search path it finds >= 90% of the exact top 10 for queries not in the library (0.94 measured), and
    the scores it returns are the exact cosines (re-scored from the memory-mapped vectors), best first."""
    from recsys.config import IndexSettings
    from recsys.index import ann

    vectors, queries = _styles(12_000), _styles(300, seed=1)
    monkeypatch.setattr(ann, "RERANK_BYTES", 64 * 100 * 32 * 4)  # re-scored 64 queries at a time: 5 chunks
    store = TrackStore.open(tmp_path)
    rows = _rows(vectors)
    for start in range(0, len(rows), 6000):
        store.upsert(rows[start:start + 6000])
    ix = IndexSettings(exact_max_tracks=100, compressed_min_tracks=10_000, ivf_codes="pq", ivf_nlist=32,
                       ivf_train_sample=4000)
    manifest = build_snapshot(store, tmp_path, "enc", index=ix)
    assert manifest["kind"] == "ivf" and manifest["count"] == 12_000
    assert manifest["params"]["factory"] == "IVF32,PQ8" and manifest["params"]["trained_on"] == 4000
    assert manifest["settings"]["compressed_min_tracks"] == 10_000 and "index.faiss" in manifest["files"]
    assert snapshot_is_current(tmp_path, "enc", ix)
    assert not snapshot_is_current(tmp_path, "enc", IndexSettings(exact_max_tracks=100, ivf_codes="pq", ivf_nlist=32,
                                                                  ivf_train_sample=4000))  # built as another kind
    lib = load_snapshot(tmp_path)
    assert lib.kind == "ivf" and lib.index.ntotal == 12_000
    assert manifest["hubness"] == {"k": 0} and lib.hub is None  # no hub statistics: a search per track
    scores, found = Searcher(lib, tmp_path, nprobe=16, rerank=10).search_arrays(queries, 10)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found.tolist(), exact.tolist(), strict=True)])
    assert recall >= 0.9, recall
    assert (found >= 0).all()
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", vectors[found], queries), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    hits = Searcher(lib, tmp_path).search(vectors[5], 3)[0]
    assert hits[0] == (5, pytest.approx(1.0, abs=1e-5))


def test_the_index_kind_follows_the_track_count():
    """Exact up to exact_max_tracks, HNSW up to compressed_min_tracks, compressed above (and never for a library
    too small to train codes on); a pq_m that does not divide the vector size is a clear error."""
    from recsys.config import IndexSettings
    from recsys.errors import RecsysError
    from recsys.index.ann import index_kind, pq_bytes, settings_match

    default = IndexSettings()
    assert [index_kind(n, default) for n in (30_000, 30_001, 1_000_000, 1_000_001)] == ["flat", "hnsw", "hnsw", "ivf"]
    lowered = IndexSettings(exact_max_tracks=100, compressed_min_tracks=5000)
    assert [index_kind(n, lowered) for n in (100, 4000, 9_999, 10_000)] == ["flat", "hnsw", "hnsw", "ivf"]
    assert pq_bytes(200) == 50 and pq_bytes(90) == 18 and pq_bytes(200, 25) == 25
    with pytest.raises(RecsysError, match=r"index.pq_m = 48 does not divide the vectors' 200 dimensions"):
        pq_bytes(200, 48)
    # a manifest written before the compressed kind existed is current under the default settings
    old = {"exact_max_tracks": 30000, "hnsw_m": 32, "hnsw_ef_construction": 80}
    assert settings_match(old, default) and not settings_match(old, IndexSettings(compressed_min_tracks=10))


def test_tag_matrix_copies_buffers_not_python_floats():
    """tags.npy is built from the column's buffers: nulls (a whole row, one tag) become NaN, sliced and several
    chunks land at their rows, and no Python float per tag is made (at a million tracks those were gigabytes)."""
    import tracemalloc

    import pyarrow as pa

    from recsys.index.ann import _tag_matrix

    tags_type = pa.list_(pa.float32(), 3)
    first = pa.array([[0.1, 0.2, 0.3], None, [0.4, None, 0.6]], tags_type)
    second = pa.array([[9.0, 9.0, 9.0], [0.7, 0.8, 0.9], None], tags_type).slice(1)
    got = _tag_matrix(pa.chunked_array([first, second, pa.array([], tags_type)]), 3)
    nan = np.nan
    want = np.array([[0.1, 0.2, 0.3], [nan] * 3, [0.4, nan, 0.6], [0.7, 0.8, 0.9], [nan] * 3], np.float32)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32

    n, n_tags = 20_000, 50
    values = pa.array(np.random.default_rng(0).random(n * n_tags, dtype=np.float32))
    column = pa.chunked_array([pa.FixedSizeListArray.from_arrays(values, n_tags)])
    tracemalloc.start()
    try:
        matrix = _tag_matrix(column, n_tags)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert matrix.shape == (n, n_tags)
    assert peak < 3 * matrix.nbytes, f"{peak / 2**20:.1f} MB traced for a {matrix.nbytes / 2**20:.0f} MB matrix"


def test_whether_any_track_is_embedded_is_asked_of_the_key_column(tmp_path, monkeypatch):
    """`recsys playlist` checks that some track of the library is embedded: in the key column's Arrow buffers, the
    first keys first, every key only when none of those is there; never by a set of a million keys."""
    keys = [f"/m/{i:03d}.flac" for i in range(10)]
    pq.write_table(pa.table({"key": keys, "path": keys}), tmp_path / "meta.parquet")
    lib = LibraryVectors(np.eye(10, 4, dtype=np.float32), pq.ParquetFile(tmp_path / "meta.parquet"), "enc", 1)
    monkeypatch.setattr(LibraryVectors, "values", lambda self, name: pytest.fail(f"{name} made a Python list"))
    absent = [f"/other/{i:03d}.flac" for i in range(200)]
    assert lib.holds_any("key", [keys[3]])
    assert lib.holds_any("key", [*absent, keys[9]])  # past the first ones asked
    assert not lib.holds_any("key", absent)
    assert not lib.holds_any("key", [])
    assert not lib.holds_any("key", ["/m/\udce9.flac"])  # a name of another encoding is in no Arrow column


def test_prefetch_reads_what_there_is_and_never_fails(tmp_path):
    """Bringing the graph into the page cache is only for speed: a short, empty or missing file is no error."""
    from recsys.index.ann import prefetch

    data = tmp_path / "index.faiss"
    data.write_bytes(b"x" * 1000)
    prefetch(data, 10**9)  # more than the file holds
    prefetch(data, 0)
    prefetch(tmp_path / "missing.faiss", 100)
    assert data.read_bytes() == b"x" * 1000


@pytest.mark.parametrize(("command", "unused"), [
    ("recsys.app.similar", ("recsys.recommender.rank", "urllib.request", "pandas")),
    ("recsys.app.playlist", ("recsys.recommender.classifier", "xml.etree.ElementTree", "pandas")),
])
def test_query_commands_import_only_what_they_use(command, unused):
    """Start-up is most of a query's time at a million tracks: `similar` never imports the ranking nor urllib (an
    existing playlist's sniffing does), `playlist` never the classifier's training nor an XSPF reader."""
    code = f"import sys, recsys.cli, {command}; print(sorted(m for m in {unused!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_columns_read_ahead_are_the_columns_read_after(tmp_path):
    """A reader's first column is read on a thread while the index loads: what it then reads is the column itself,
    and a read that failed on the thread is read again (and reported, if it fails again) by the reader."""
    from recsys.index.ann import ReadAhead

    keys = [f"/m/{i:05d}.flac" for i in range(3000)]
    pq.write_table(pa.table({"key": keys, "path": keys}), tmp_path / "meta.parquet", row_group_size=1000)
    meta = pq.ParquetFile(tmp_path / "meta.parquet")
    lib = LibraryVectors(np.eye(3000, 4, dtype=np.float32), meta, "enc", 1,
                         ahead=ReadAhead(meta, ["key", "no such column"]))
    assert lib.row(2500)["key"] == keys[2500] and lib.column("key").to_pylist() == keys
    assert lib.values("path") == keys

    failing = pq.ParquetFile(tmp_path / "meta.parquet")
    real, calls = failing.read, []

    def fails_once(*args, **kwargs):
        calls.append(kwargs.get("columns"))
        if len(calls) == 1:
            raise OSError("read error on the thread")
        return real(*args, **kwargs)

    failing.read = fails_once
    lib = LibraryVectors(np.eye(3000, 4, dtype=np.float32), failing, "enc", 1, ahead=ReadAhead(failing, ["key"]))
    assert lib.keys == keys and calls == [["key"], ["key"]]
