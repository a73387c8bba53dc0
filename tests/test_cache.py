import os

import numpy as np

from recsys.embedder.cache import NPY_HEADER, FeatureCache, Frontend
from recsys.embedder.encoders import CNN_DEFAULTS
from recsys.library.sources import load_library

WINDOW_S = 6.0


def _build(lib, **kwargs):
    cache = FeatureCache(lib.home, Frontend.of(CNN_DEFAULTS, WINDOW_S, "center"))
    tracks = load_library(lib.db, []).tracks
    options = {"max_bytes": 1e9, "seed": 0, "max_duration_s": 900.0, "timeout_s": 60.0, "workers": 1, **kwargs}
    return cache, tracks, cache.build(tracks, **options)


def test_build_then_reuse_without_decoding(small_library):
    cache, tracks, first = _build(small_library)
    assert first.built == 12 and first.reused == 0 and first.failed == 0
    fe = cache.frontend
    assert fe.bytes_per_track == fe.frames(WINDOW_S) * 96 * 2 + NPY_HEADER
    assert first.size_bytes <= 12 * fe.bytes_per_track
    entry = cache.for_tracks(tracks)[0]
    data = entry.load(cache.folder)
    assert data.dtype == np.float16 and data.shape == (fe.frames(WINDOW_S), 96) and isinstance(data, np.memmap)
    _, _, second = _build(small_library)
    assert second.reused == 12 and second.built == 0


def test_changed_file_is_rebuilt_alone(small_library):
    _, tracks, _ = _build(small_library)
    path = tracks[3].path
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, _, report = _build(small_library)
    assert report.built == 1 and report.reused == 11


def test_damaged_entry_is_rebuilt_alone(small_library):
    cache, tracks, _ = _build(small_library)
    entry = cache.for_tracks(tracks)[5]
    with open(cache.folder / entry.file, "r+b") as fh:
        fh.seek(NPY_HEADER + 100)
        fh.write(b"\xff" * 64)
    cache, _, report = _build(small_library)
    assert report.rebuilt_corrupt == 1 and report.built == 1 and report.reused == 11
    assert cache.valid(cache.for_tracks(tracks)[5])


def test_removed_tracks_leave_the_cache_and_the_bound_holds(small_library):
    cache, tracks, _ = _build(small_library)
    del small_library.songs[:2]
    small_library.rewrite_db()
    cache, tracks, report = _build(small_library)
    assert report.removed == 2 and len(list(cache.folder.glob("*.npy"))) == 10
    cap = 4 * cache.frontend.bytes_per_track
    cache, tracks, report = _build(small_library, max_bytes=cap)
    assert report.left_out == 6 and len(cache.entries) == 4 and report.size_bytes <= cap


def test_other_frontend_settings_start_a_fresh_cache(small_library):
    _build(small_library)
    cache = FeatureCache(small_library.home, Frontend.of(CNN_DEFAULTS, WINDOW_S + 1, "center"))
    assert cache.entries == {} and not cache.folder.exists()
