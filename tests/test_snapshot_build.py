"""The snapshot build streams the table: the files are those of the whole table written at once (read_all, np.save,
one pq.write_table), whatever the batches, and the build's memory does not grow with the table."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import IndexSettings
from recsys.index import ann, hubness
from recsys.index.ann import build_ivf, build_snapshot, load_snapshot
from recsys.index.hubness import HUB_FILE, hub_stats
from recsys.index.store import TableDamaged, TrackRow, TrackStore
from recsys.library.text import search_label

DIM = 16
TAGS = ["rock", "jazz", "calm"]


def _rows(n: int, first: int = 0, encoder_id: str = "enc", seed: int = 0) -> list[TrackRow]:
    """Tracks of several kinds: CUE tracks (one file, start offsets), untagged artists/titles (the label is the file
    name), text beyond ASCII, rows without tags or track numbers."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = []
    for i, v in zip(range(first, first + n), vectors, strict=True):
        cue = i % 5 == 0
        path = f"/m/album {i // 12}.flac" if cue else f"/m/Ärtist {i % 9}/{i:05d} söng.ogg"
        rows.append(TrackRow(
            key=f"{path}#{i}" if cue else path, path=path, start_s=float(i % 12) * 61.5 if cue else 0.0,
            content_id=f"c{i}", size=i, mtime_ns=i, duration_s=200.0 + i % 3,
            artist=None if i % 7 == 0 else f"Ärtist {i % 9}", album="al", title=None if i % 11 == 0 else f"song {i}",
            genre="", year=None if i % 4 == 0 else 1990 + i % 30, track_number=None if i % 3 == 0 else i % 12,
            encoder_id=encoder_id, vector=v,
            tags=None if i % 6 == 0 else rng.random(len(TAGS)).astype(np.float32)))
    return rows


def _fill(home: Path, n: int, batch: int = 400) -> TrackStore:
    store = TrackStore.open(home)
    rows = _rows(n)
    for start in range(0, n, batch):  # a fragment per commit: the scan crosses fragments
        store.upsert(rows[start:start + batch], tag_names=TAGS)
    store.upsert(_rows(50, first=n, encoder_id="other", seed=1), tag_names=TAGS)  # another encoder's rows stay out
    return store


def _whole_table(store: TrackStore, folder: Path, encoder_id: str, exclude: set[str]) -> np.ndarray:
    """The snapshot files as the build wrote them before it streamed: the table read whole, then written at once."""
    meta, vectors = store.read_all(encoder_id)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(meta), int(store.dim or 0))
    keep = np.array([k not in exclude for k in meta.column("key").to_pylist()], dtype=bool)
    meta, vectors = meta.filter(pa.array(keep)), np.ascontiguousarray(vectors[keep])
    folder.mkdir()
    np.save(folder / "vectors.npy", vectors)
    labels = [search_label(a, t, p, s or 0.0) for a, t, p, s in zip(
        *(meta.column(name).to_pylist() for name in ("artist", "title", "path", "start_s")), strict=True)]
    table = meta.select(ann.SNAPSHOT_COLUMNS).append_column(ann.SEARCH_COLUMN, pa.array(labels, pa.string()))
    pq.write_table(table, folder / "meta.parquet", row_group_size=ann.META_ROW_GROUP)
    if "tags" in meta.column_names:
        np.save(folder / ann.TAGS_FILE, ann._tag_matrix(meta.column("tags"), len(TAGS)))
    return vectors


def _same_files(built: Path, expected: Path, names: list[str]) -> None:
    for name in names:
        assert (built / name).read_bytes() == (expected / name).read_bytes(), name


@pytest.fixture
def small_batches(monkeypatch):
    """Batches that straddle the row groups and the table's fragments."""
    monkeypatch.setattr(ann, "SNAPSHOT_BATCH", 300)
    monkeypatch.setattr(ann, "META_ROW_GROUP", 500)


def test_streamed_build_writes_the_whole_tables_files(tmp_path, small_batches):
    home = tmp_path / "home"
    store = _fill(home, 2600)
    meta, _ = store.read_all("enc")
    keys = meta.column("key").to_pylist()
    exclude = {keys[0], keys[499], keys[500], keys[1234], keys[-1], "/m/not in the table.flac"}
    manifest = build_snapshot(store, home, "enc", exclude=exclude)
    built = (home / "ann").resolve()
    expected = tmp_path / "expected"
    vectors = _whole_table(store, expected, "enc", exclude)
    search = lambda q, k: faiss.knn(q, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)  # noqa: E731
    np.save(expected / HUB_FILE, hub_stats(vectors, search))
    _same_files(built, expected, ["vectors.npy", "meta.parquet", ann.TAGS_FILE, HUB_FILE])
    assert pq.read_table(built / "meta.parquet").equals(pq.read_table(expected / "meta.parquet"))
    assert pq.ParquetFile(built / "meta.parquet").metadata.num_row_groups == 6  # 2,595 rows in groups of 500
    files = {name: (expected / name).stat().st_size for name in ("vectors.npy", "meta.parquet", HUB_FILE,
                                                                 ann.TAGS_FILE)}
    assert {k: v for k, v in manifest.items() if k != "built_at"} == {
        "table_version": store.version, "table_rows": 2650, "encoder_id": "enc", "dim": DIM, "count": 2595,
        "kind": "flat", "params": {}, "settings": ann.index_settings(None), "excluded": ann.excluded_digest(exclude),
        "missing": len(exclude), "hubness": {"k": ann.HUB_K}, "tags": TAGS, "files": files}
    assert json.loads((built / ann.MANIFEST).read_text()) == manifest
    lib = load_snapshot(home)
    assert lib.keys == [k for k in keys if k not in exclude] and lib.tag_names == TAGS


def test_streamed_indexes_are_built_from_the_same_vectors(tmp_path, small_batches, monkeypatch):
    """HNSW (one thread: its graph is then deterministic) and IVF built from the memory-mapped vectors.npy are the
    indexes built from the vectors in memory."""
    home = tmp_path / "home"
    store = _fill(home, 1200, batch=600)
    expected = tmp_path / "expected"
    vectors = _whole_table(store, expected, "enc", set())
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        build_snapshot(store, home, "enc", exact_max_tracks=100, hnsw_m=8, hnsw_ef_construction=40)
        graph = faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = 40
        graph.add(vectors)
        faiss.write_index(graph, str(expected / "index.faiss"))
        np.save(expected / HUB_FILE, hub_stats(vectors, graph.search))
        _same_files((home / "ann").resolve(), expected, ["vectors.npy", "meta.parquet", "index.faiss", HUB_FILE])
        settings = IndexSettings(exact_max_tracks=0, compressed_min_tracks=0, ivf_train_sample=1000)
        monkeypatch.setattr(ann, "IVF_MIN_TRACKS", 1000)
        manifest = build_snapshot(store, home, "enc", index=settings)
        assert manifest["kind"] == "ivf"
        ivf, params = build_ivf(vectors, settings)
        faiss.write_index(ivf, str(expected / "index.faiss"))
        assert {k: v for k, v in manifest["params"].items() if not k.endswith("_s")} == {
            k: v for k, v in params.items() if not k.endswith("_s")}
        _same_files((home / "ann").resolve(), expected, ["vectors.npy", "meta.parquet", "index.faiss"])
    finally:
        faiss.omp_set_num_threads(threads)


@pytest.mark.parametrize("case", ["no table", "no rows of this encoder", "every row left out"])
def test_streamed_build_of_no_rows(tmp_path, case):
    home = tmp_path / "home"
    store = TrackStore.open(home)
    exclude: set[str] = set()
    if case != "no table":
        store.upsert(_rows(30, encoder_id="enc" if case == "every row left out" else "other"), tag_names=TAGS)
        exclude = {r.key for r in _rows(30)} if case == "every row left out" else set()
    manifest = build_snapshot(store, home, "enc", exclude=exclude)
    expected = tmp_path / "expected"
    _whole_table(store, expected, "enc", exclude)
    np.save(expected / HUB_FILE, np.zeros(0, np.float32))
    names = ["vectors.npy", "meta.parquet", HUB_FILE] + ([ann.TAGS_FILE] if case != "no table" else [])
    _same_files((home / "ann").resolve(), expected, names)
    assert manifest["count"] == 0 and sorted(manifest["files"]) == sorted(names)
    assert len(load_snapshot(home)) == 0


def _build_peak(home: Path, n: int) -> int:
    store = _fill(home, n, batch=n // 4)
    tracemalloc.start()
    try:
        build_snapshot(store, home, "enc")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_build_memory_is_bounded_by_a_batch(tmp_path, monkeypatch):
    """Five times the rows, about the same peak: the build holds a batch of the table's rows (their labels, tags,
    metadata as Python values), not all of them; what grows is the hub statistics' 4 bytes a track. Built whole,
    the peak grows with the table."""
    monkeypatch.setattr(ann, "SNAPSHOT_BATCH", 1000, raising=False)  # main: none
    monkeypatch.setattr(ann, "META_ROW_GROUP", 1000)
    monkeypatch.setattr(hubness, "CHUNK", 1000)  # the hub statistics' searches alike at both sizes
    small = _build_peak(tmp_path / "small", 4000)
    large = _build_peak(tmp_path / "large", 20000)
    assert large < 1.3 * small, (small, large)


def test_a_damaged_table_fails_the_streamed_build_in_one_line(tmp_path, small_batches):
    """A data file truncated under the scan: Lance's error, raised while the batches stream, is the store's one-line
    TableDamaged, and the snapshot before stays whole."""
    store = _fill(tmp_path, 1200)
    before = build_snapshot(store, tmp_path, "enc")
    data = sorted((tmp_path / "tracks.lance" / "data").glob("*.lance"), key=lambda p: p.stat().st_mtime_ns)
    for path in data[1:]:  # the first fragment reads; the failure comes from the stream (Lance reads ahead)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(TableDamaged, match=r"the tracks table in .* is damaged \(.*\): run `recsys repair`$"):
        build_snapshot(TrackStore.open(tmp_path), tmp_path, "enc")
    assert ann.read_manifest(tmp_path) == before and len(load_snapshot(tmp_path)) == 1200
    assert [p.name for p in tmp_path.glob("ann-*")] == [(tmp_path / "ann").resolve().name]
