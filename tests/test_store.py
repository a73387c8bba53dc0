"""The LanceDB track table: schema, batched upserts, hostile keys, failures, stamps, kill -9 safety, dim changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from datetime import datetime, timezone

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from recsys.home import read_stamp
from recsys.index.store import FailureRow, StoreError, TrackRow, TrackStore

HOSTILE = ["it's", 'say "hi"', "#1 at 100%", "x' OR '1'='1", "back\\slash'", "ü; DROP TABLE tracks;--", "*", "a''b",
           "/music/AC⚡DC/%20 & 'quote'.flac@12.500"]


def _vec(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _row(key: str, seed: int = 0, encoder_id: str = "enc-a", dim: int = 8, content_id: str | None = None) -> TrackRow:
    return TrackRow(key=key, path=f"/music/{key}", start_s=0.0, content_id=content_id or f"cid-{key}", size=1000 + seed,
                    mtime_ns=10**18 + seed, duration_s=180.5, artist="Artist", album="Album", title=f"T {seed}",
                    genre="Rock", year=None if seed % 2 else 1999, track_number=seed or None, encoder_id=encoder_id,
                    vector=_vec(seed, dim))


def test_schema_and_round_trip(tmp_path):
    store = TrackStore.open(tmp_path / "home")
    assert (store.version, store.count, store.dim, store.states()) == (0, 0, None, {})
    store.upsert([_row("a", 1), _row("b", 2)])
    schema = lancedb.connect(str(tmp_path / "home")).open_table("tracks").schema
    assert schema.field("vector").type == pa.list_(pa.float32(), 8)
    assert schema.field("embedded_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("year").type == pa.int32() and schema.field("size").type == pa.int64()
    assert not schema.field("key").nullable
    meta, vectors = store.read_all()
    assert meta.column("key").to_pylist() == ["a", "b"] and "vector" not in meta.column_names
    assert meta.column("year").to_pylist() == [None, 1999]
    np.testing.assert_array_equal(vectors, np.stack([_vec(1), _vec(2)]))
    state = store.states()["b"]
    assert (state.path, state.content_id, state.size, state.mtime_ns, state.encoder_id) == \
        ("/music/b", "cid-b", 1002, 10**18 + 2, "enc-a")


def test_upsert_replaces_by_key_in_one_commit(tmp_path):
    store = TrackStore.open(tmp_path)
    store.upsert([_row(f"k{i}", i) for i in range(64)])
    v1 = store.version
    store.upsert([_row("k3", 99), _row("new", 5)])
    assert store.version == v1 + 1  # a batch is one commit, not one per row
    assert store.count == 65
    meta, vectors = store.read_all()
    i = meta.column("key").to_pylist().index("k3")
    np.testing.assert_array_equal(vectors[i], _vec(99))
    assert meta.column("title")[i].as_py() == "T 99"


def test_states_are_not_truncated(tmp_path):
    store = TrackStore.open(tmp_path)
    store.upsert([_row(f"k{i}", i) for i in range(150)])  # beyond any default query limit
    assert len(store.states()) == 150 and store.read_all()[1].shape == (150, 8)


def test_delete_with_hostile_keys(tmp_path):
    store = TrackStore.open(tmp_path)
    store.upsert([_row(k, i) for i, k in enumerate(HOSTILE)])
    assert set(store.states()) == set(HOSTILE)
    gone = {"it's", "x' OR '1'='1", "*", "/music/AC⚡DC/%20 & 'quote'.flac@12.500"}
    store.delete([*gone, "not there"])
    assert set(store.states()) == set(HOSTILE) - gone
    store.delete([])
    assert store.count == len(HOSTILE) - len(gone)


def test_vectors_by_content_id_only_for_the_encoder(tmp_path):
    store = TrackStore.open(tmp_path)
    store.upsert([_row("a", 1, content_id="it's 1"), _row("b", 2, encoder_id="old", content_id="c2")])
    found = store.vectors_by_content_id(["it's 1", "c2", "nope"], "enc-a")
    assert list(found) == ["it's 1"]
    np.testing.assert_array_equal(found["it's 1"], _vec(1))
    meta, vectors = store.read_all("old")
    assert meta.column("key").to_pylist() == ["b"] and vectors.shape == (1, 8)


def test_failures_round_trip(tmp_path):
    store = TrackStore.open(tmp_path)
    assert store.failures() == []
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    store.record_failures([FailureRow("it's", "/m/it's", 10, 20, "cannot decode: bad header", when),
                           FailureRow("b", "/m/b", 1, 2, "too short")])
    store.record_failures([FailureRow("b", "/m/b", 3, 4, "still too short")])
    got = {f.key: f for f in store.failures()}
    assert set(got) == {"it's", "b"}
    assert got["it's"].failed_at == when and got["it's"].error == "cannot decode: bad header"
    assert (got["b"].size, got["b"].error) == (3, "still too short")
    store.clear_failures(["it's"])
    assert [f.key for f in TrackStore.open(tmp_path).failures()] == ["b"]


def test_version_and_stamp_follow_every_commit(tmp_path):
    store = TrackStore.open(tmp_path)
    assert read_stamp(tmp_path) is None
    store.upsert([_row("a", 1), _row("b", 2)])
    assert read_stamp(tmp_path) == {"table_version": store.version, "count": 2}
    before = store.version
    store.delete(["a"])
    assert store.version > before and read_stamp(tmp_path) == {"table_version": store.version, "count": 1}
    store.compact()
    assert read_stamp(tmp_path) == {"table_version": store.version, "count": 1}
    (tmp_path / "tracks.stamp").unlink()  # a run killed between its commit and its stamp
    reopened = TrackStore.open(tmp_path)
    assert read_stamp(tmp_path) == {"table_version": reopened.version, "count": 1}


def test_compact_keeps_rows(tmp_path):
    store = TrackStore.open(tmp_path)
    for b in range(5):
        store.upsert([_row(f"k{b}-{i}", b * 10 + i) for i in range(10)])
    store.compact()
    assert store.count == 50 and TrackStore.open(tmp_path).read_all()[1].shape == (50, 8)


def test_dimension_change_needs_reset(tmp_path):
    store = TrackStore.open(tmp_path)
    store.upsert([_row("a", 1)])
    with pytest.raises(StoreError, match=r"reset_vectors\(16\)"):
        store.upsert([_row("b", 2, dim=16)])
    with pytest.raises(StoreError, match="mix vector sizes"):
        store.upsert([_row("c", 1), _row("d", 2, dim=16)])
    before = store.version
    store.reset_vectors(16)
    assert (store.dim, store.count) == (16, 0) and store.version > before  # versions go on: stamps stay comparable
    store.upsert([_row("b", 2, dim=16)])
    reopened = TrackStore.open(tmp_path)
    assert (reopened.dim, list(reopened.states())) == (16, ["b"])


def test_unwritable_home(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StoreError, match=r"home .*file/home is not writable .*: choose another with --home"):
        TrackStore.open(a_file / "home")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(StoreError, match=r"not writable \(Permission denied\)"):
        TrackStore.open(tmp_path / "readonly")


WRITER = """
import sys
import numpy as np
from pathlib import Path
from recsys.index.store import TrackRow, TrackStore
store = TrackStore.open(Path(sys.argv[1]))
for b in range(100000):
    rows = []
    for i in range(64):
        n = b * 64 + i
        v = np.full(32, n, np.float32)
        rows.append(TrackRow(key=f"k{n}", path="p", start_s=0.0, content_id=str(n), size=n, mtime_ns=n,
                             duration_s=1.0, artist="", album="", title="", genre="", year=None, track_number=None,
                             encoder_id="e", vector=v))
    store.upsert(rows)
    print(b, flush=True)
"""


def test_kill_9_mid_writes_leaves_whole_batches(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(6):
            assert proc.stdout.readline(), "writer died"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    store = TrackStore.open(tmp_path)
    meta, vectors = store.read_all()
    assert store.count >= 6 * 64 and store.count % 64 == 0  # only whole, committed batches
    ids = np.array([int(c) for c in meta.column("content_id").to_pylist()])
    assert sorted(ids.tolist()) == list(range(store.count))
    np.testing.assert_array_equal(vectors, np.repeat(ids[:, None], 32, axis=1).astype(np.float32))
    store.upsert([_row("after", 1, encoder_id="e", dim=32)])  # and the table takes new writes
    assert store.count % 64 == 1


def test_lance_metadata_cache_is_capped(tmp_path, monkeypatch):
    """Each commit's version lists every fragment so far, and Lance caches each version's metadata it reads: over a
    run of many batches that cache grew with the square of the batches (1 GiB by default). The store caps it."""
    import recsys.index.store as store_module

    cap = 256 << 10
    sessions = []
    real_session = lancedb.Session

    def session(**kwargs):
        sessions.append(made := real_session(**kwargs))
        return made

    monkeypatch.setattr(store_module, "METADATA_CACHE_BYTES", cap, raising=False)
    monkeypatch.setattr(lancedb, "Session", session)
    store = TrackStore.open(tmp_path)
    for i in range(40):
        store.upsert([_row(f"/m/{i}-{j}.flac", seed=i) for j in range(2)])
    assert store.count == 80
    assert len(sessions) == 1, "the store's connection has no session of its own"
    assert 0 < sessions[0].size_bytes <= cap
