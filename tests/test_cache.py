import os

import numpy as np

from recsys.embedder.audio import load_crop
from recsys.library.sources import load_library
from recsys.training.cache import NPY_HEADER, OLD_FOLDERS, AudioCache, Layout, window_starts

LAYOUT = Layout(16000, 3, 2.0)


def _build(lib, layout: Layout = LAYOUT, **kwargs):
    cache = AudioCache(lib.home, layout)
    tracks = load_library(lib.db, []).tracks
    options = {"max_bytes": 1e9, "seed": 0, "max_duration_s": 900.0, "timeout_s": 60.0, "workers": 1, **kwargs}
    return cache, tracks, cache.build(tracks, **options)


def test_windows_are_spread_through_the_track_and_stay_inside_it():
    assert window_starts(100.0, 4, 6.0) == [9.5, 34.5, 59.5, 84.5]  # centred at 12.5, 37.5, 62.5, 87.5 %
    assert window_starts(10.0, 4, 6.0) == [0.0, 0.75, 3.25, 4.0]  # overlapping, never past the end
    assert window_starts(5.0, 4, 6.0) == [0.0]  # shorter than a window: the whole track once


def test_build_caches_the_windows_as_decoded_then_reuses_them(small_library):
    cache, tracks, first = _build(small_library)
    assert first.built == 12 and first.reused == 0 and first.failed == 0
    assert LAYOUT.bytes_per_track == 3 * 32000 * 2 + NPY_HEADER
    assert first.size_bytes <= 12 * LAYOUT.bytes_per_track
    entry = cache.for_tracks(tracks)[0]
    data = entry.load(cache.folder)
    assert data.dtype == np.int16 and data.shape == (3, 32000) and isinstance(data, np.memmap)
    for w, start in enumerate(window_starts(entry.duration_s, 3, 2.0)):  # each window is that part of the track
        clip = load_crop(tracks[0].path, 16000, crop_s=2.0, position="start", seg_start_s=start, seg_length_s=2.0)
        n = min(len(clip.samples), entry.samples)
        np.testing.assert_allclose(data[w, :n] / 32767.0, clip.samples[:n], atol=2e-4)
    assert not np.array_equal(data[0], data[2])
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


def test_undecodable_and_too_long_tracks_are_counted_not_cached(small_library):
    tracks = load_library(small_library.db, []).tracks
    with open(tracks[2].path, "wb") as fh:
        fh.write(b"not audio at all" * 100)
    cache, _, report = _build(small_library, max_duration_s=7.0)  # the 8 s tracks are too long now
    assert report.too_long == 11 and report.failed == 1 and report.failures[0][0] == tracks[2].path
    assert report.built == 0 and cache.for_tracks(tracks) == []


def test_removed_tracks_leave_the_cache_and_the_bound_holds(small_library):
    old = small_library.home / OLD_FOLDERS[0]
    old.mkdir(parents=True)
    (old / "x.npy").write_bytes(b"0" * 1000)  # the log-mel cache of an older version
    cache, tracks, _ = _build(small_library)
    assert not old.exists()
    del small_library.songs[:2]
    small_library.rewrite_db()
    cache, tracks, report = _build(small_library)
    assert report.removed == 2 and len(list(cache.folder.glob("*.npy"))) == 10
    cap = 4 * LAYOUT.bytes_per_track
    cache, tracks, report = _build(small_library, max_bytes=cap)
    assert report.left_out == 6 and len(cache.entries) == 4 and report.size_bytes <= cap


def test_other_layout_starts_a_fresh_cache(small_library):
    _build(small_library)
    cache = AudioCache(small_library.home, Layout(16000, 4, 2.0))
    assert cache.entries == {} and not cache.folder.exists()
