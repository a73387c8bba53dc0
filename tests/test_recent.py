"""Fresh playlists: the history of recent playlists in the home, and the ranking that lets their tracks rest."""

from __future__ import annotations

import json
import os

import numpy as np
from test_rank import clusters, few_liked, library

from recsys.home.recent import MAX_ENTRIES, Written, read_recent, recent_file, remember_playlist, resting, taste_of
from recsys.library.track import Track


def test_consecutive_playlists_rest_the_last_ones_tracks_but_stay_full():
    vectors, which = clusters(n_clusters=2, per=40)
    lib = library(n=len(vectors), vectors=vectors, n_artists=len(vectors))
    tracks = [Track(path=lib.keys[i], rating=1.0) for i in np.flatnonzero(which == 0)[:12]]
    tracks += [Track(path=lib.keys[i], rating=0.2) for i in np.flatnonzero(which == 1)[:6]]
    first = [t.key for t in few_liked(lib, tracks, None, top_n=10).tracks]
    second = few_liked(lib, tracks, None, top_n=10, rested=set(first))
    assert len(first) == 10 and not set(first) & {t.key for t in second.tracks}
    assert all(which[lib.keys.index(t.key)] == 0 for t in second.tracks)  # still the liked style only
    assert second.rested == 10
    # 28 tracks of the liked style are left; two playlists of 10 rest: the third takes the 8 others, then 2 back
    third = few_liked(lib, tracks, None, top_n=10, rested={*first, *(t.key for t in second.tracks)})
    keys = [t.key for t in third.tracks]
    assert len(keys) == 10 and not set(keys[:8]) & {*first, *(t.key for t in second.tracks)}
    assert all(which[lib.keys.index(k)] == 0 for k in keys)  # resting never lets the disliked style in


def test_the_history_is_bounded_per_taste_and_survives_a_damaged_file(tmp_path):
    home = tmp_path / "home"
    remember_playlist(home, Written(1.0, "taste", "recsys", "/x.xspf", ("a",)))
    assert not home.exists()  # never created here
    home.mkdir()
    taste, other = taste_of("taste"), taste_of("taste", seeds=["b"])
    now = 1_000_000.0
    for i in range(MAX_ENTRIES + 5):
        remember_playlist(home, Written(now + i, taste if i % 2 else other, "recsys", f"/p{i}", (f"k{i}",)))
    assert len(read_recent(home)) == MAX_ENTRIES and read_recent(home)[0].path == f"/p{MAX_ENTRIES + 4}"
    last = now + MAX_ENTRIES + 4
    assert resting(home, taste, 2, 7, now=last) == {f"k{MAX_ENTRIES + 3}", f"k{MAX_ENTRIES + 1}"}
    assert resting(home, taste, 2, 0, now=last) == set() and resting(home, taste, 0, 7, now=last) == set()
    assert resting(home, taste, 50, 1 / 86400 * 3, now=last) == {f"k{MAX_ENTRIES + 3}", f"k{MAX_ENTRIES + 1}"}
    assert json.loads(recent_file(home).read_text())["playlists"][0]["keys"] == [f"k{MAX_ENTRIES + 4}"]
    recent_file(home).write_text("{not json")
    assert read_recent(home) == [] and resting(home, taste, 3, 7) == set()
    recent_file(home).unlink()
    os.mkfifo(recent_file(home))  # a FIFO would block a plain read forever
    assert read_recent(home) == []


def test_a_taste_is_its_mode_seeds_and_filters_and_stays_short():
    assert taste_of("taste") != taste_of("taste", seeds=["a"]) != taste_of("taste", where=["genre:x"])
    assert taste_of("taste", seeds=["b", "a"]) == taste_of("taste", seeds=["a", "b"])
    many = [f"/music/{i:05d}.flac" for i in range(5000)]
    long = taste_of("taste", seeds=many)
    assert len(long) < 100 and long != taste_of("taste", seeds=many[1:])


def test_a_home_that_cannot_take_the_history_costs_the_history_only(tmp_path):
    home = tmp_path / "home"
    recent_file(home).mkdir(parents=True)  # a folder where the file goes: the rename fails, as on a read-only home
    note = remember_playlist(home, Written(1.0, "taste", "recsys", "/x.xspf", ("a",)))
    assert note and "could not remember this playlist" in note and str(recent_file(home)) in note
    assert read_recent(home) == [] and not [p for p in home.iterdir() if p.name != "recent.json"]  # no temp left


def test_the_days_playlist_is_recognised_by_its_title_and_creator(tmp_path):
    from recsys.playlists import PlaylistEntry, write_playlist
    from recsys.playlists.output import written_by_recsys

    tracks = [PlaylistEntry(key="/m/a.ogg", path="/m/a.ogg", start_s=0.0, artist="A", title="T", album="",
                            track_number=None, duration_s=60.0)]
    title = "Mine & yours (taste, 2026-12-06)"
    for fmt in ("xspf", "m3u8"):
        out = write_playlist(tmp_path / f"p.{fmt}", tracks, title, fmt=fmt)
        assert written_by_recsys(out, title) and not written_by_recsys(out, "Mine & yours (uncertain, 2026-12-06)")
        link = tmp_path / f"link.{fmt}"
        link.symlink_to(out)
        assert not written_by_recsys(link, title)  # a link is never replaced
    other = write_playlist(tmp_path / "o.xspf", tracks, title, fmt="xspf", creator="someone")
    assert not written_by_recsys(other, title) and not written_by_recsys(tmp_path / "none.xspf", title)
