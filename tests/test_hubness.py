"""Hubness reduction: per-track statistics built with the snapshot (no N x N matrix), a hub demoted from the lists
it crowds, the setting that turns it off."""

from __future__ import annotations

import faiss
import numpy as np

from recsys.app.settings import command_settings
from recsys.app.similar import find_similar
from recsys.app.taste import vote_search
from recsys.index.ann import build_snapshot, load_snapshot, snapshot_is_current
from recsys.index.hubness import HUB_FILE, HUB_K, hub_search, hub_stats
from recsys.index.store import TrackRow, TrackStore

DIM = 16


def _hubby(n: int = 300, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Non-negative, skewed features (as a network's ReLU outputs are), unit length: some tracks sit near the data's
    centre and turn up in many lists (hubs)."""
    x = np.abs(np.random.default_rng(seed).normal(size=(n, dim))) ** 2
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _skewness(o: np.ndarray) -> float:
    o = o.astype(np.float64)
    return float(np.mean((o - o.mean()) ** 3) / o.std() ** 3)


def _exact(x):
    return lambda q, k: faiss.knn(np.ascontiguousarray(q, dtype=np.float32), x, k, metric=faiss.METRIC_INNER_PRODUCT)


def _occurrences(search, x, k=5):
    _, rows = search(x, k + 1)
    return np.bincount(np.concatenate([r[(r >= 0) & (r != q)][:k] for q, r in enumerate(rows)]), minlength=len(x))


def test_csls_demotes_the_hub_and_keeps_cosines():
    x = _hubby()
    hub = hub_stats(x, _exact(x))
    assert hub.shape == (len(x),) and hub.dtype == np.float32
    brute = np.sort(x @ x.T - 3 * np.eye(len(x)), axis=1)[:, ::-1][:, :HUB_K].mean(axis=1)
    np.testing.assert_allclose(hub, brute, atol=1e-5)  # the mean cosine to the 10 nearest others
    plain, reranked = _occurrences(_exact(x), x), _occurrences(hub_search(_exact(x), hub), x)
    assert _skewness(reranked) < _skewness(plain) / 2 and reranked.max() < plain.max()
    assert reranked[plain.argmax()] < plain.max() / 2  # the worst hub leaves most of the lists it crowded
    cosines, rows = hub_search(_exact(x), hub)(x[:3], 5)
    np.testing.assert_allclose(cosines, np.take_along_axis(x[:3] @ x.T, rows, axis=1), atol=1e-5)  # still cosines
    assert hub_search(_exact(x), None) is not None and hub_search(_exact(x), None)(x[:1], 3)[1].tolist() == \
        _exact(x)(x[:1], 3)[1].tolist()


def _home_with(tmp_path, x) -> TrackStore:
    store = TrackStore.open(tmp_path)
    store.upsert([TrackRow(key=f"t{i}", path=f"/m/t{i}.flac", start_s=0.0, content_id=f"c{i}", size=i, mtime_ns=i,
                           duration_s=200.0, artist=f"artist {i}", album="al", title=f"song {i}", genre="", year=2000,
                           track_number=None, encoder_id="enc", vector=v) for i, v in enumerate(x)])
    return store


def test_snapshot_carries_the_statistics_and_similar_uses_them(tmp_path):
    x = _hubby()
    store = _home_with(tmp_path, x)
    manifest = build_snapshot(store, tmp_path, "enc")
    assert manifest["hubness"] == {"k": HUB_K} and HUB_FILE in manifest["files"]
    lib = load_snapshot(tmp_path)
    np.testing.assert_allclose(lib.hub, hub_stats(x, _exact(x)), atol=1e-5)
    assert snapshot_is_current(tmp_path, "enc")

    settings = command_settings(None, str(tmp_path))
    off = command_settings(None, str(tmp_path))
    off.index.hubness = "off"
    worst = f"t{int(_occurrences(_exact(x), x).argmax())}"
    on_lists = [[h.key for h in find_similar(settings, f"/m/t{q}.flac", k=5).neighbours] for q in range(len(x))]
    off_lists = [[h.key for h in find_similar(off, f"/m/t{q}.flac", k=5).neighbours] for q in range(len(x))]
    assert sum(worst in keys for keys in on_lists) < sum(worst in keys for keys in off_lists) / 2
    hub_row = int(worst[1:])
    _, votes_on = vote_search(settings, lib)(x, 6)
    _, votes_off = vote_search(off, lib)(x, 6)
    assert (votes_on == hub_row).sum() < (votes_off == hub_row).sum() / 2
