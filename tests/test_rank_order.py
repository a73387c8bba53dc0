"""The playlist's order rules reorder, never drop: one artist's tracks are spread out, not thrown away."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from test_rank import rank

from recsys.library.track import Track
from recsys.recommender.rank import SAME_ARTIST_LOOKAHEAD


@dataclass
class Lib:
    keys: list[str]
    vectors: np.ndarray
    meta: dict
    encoder_id: str = "enc"


def _library(artists: list[str], seed: int = 0) -> Lib:
    """One tight cluster of tracks (all alike), each by the artist given, on its own album."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=16)
    vectors = centre + 0.2 * rng.normal(size=(len(artists), 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    keys = [f"/m/{i:03d}.flac" for i in range(len(artists))]
    meta = {"key": keys, "path": keys, "start_s": [0.0] * len(keys), "artist": artists,
            "title": [f"Song {i}" for i in range(len(keys))], "album": [f"Album {i}" for i in range(len(keys))],
            "track_number": [1] * len(keys), "duration_s": [200.0] * len(keys)}
    return Lib(keys, vectors, meta)


def _rank(lib: Lib, liked: list[int], **kwargs):
    tracks = [Track(path=lib.keys[i], artist=lib.meta["artist"][i], album=lib.meta["album"][i], rating=1.0)
              for i in liked]
    kwargs = {"exists": lambda path: True, "max_per_artist": 100, "max_per_album": 100, "min_liked_share": None,
              "min_audio_votes": 0.0, **kwargs}
    return rank(lib, tracks, None, **kwargs)


def test_one_artists_tracks_all_make_the_playlist_when_no_other_artist_is_left():
    # `--where artist:NAME` on an artist with 7 unrated tracks: on main the playlist was one track
    lib = _library(["Solo"] * 8)
    out = _rank(lib, liked=[0], top_n=20)
    assert len(out.tracks) == 7, (len(out.tracks), out.stopped, out.removed)
    assert "same artist twice in a row" not in out.removed


def test_the_same_artist_twice_is_avoided_when_another_is_close_in_the_order():
    # four tracks of A, three of B, all alike: the order alternates A B A B ... and nothing is dropped
    lib = _library(["Liked"] + ["A"] * 4 + ["B"] * 3)
    out = _rank(lib, liked=[0], top_n=20)
    artists = [lib.meta["artist"][lib.keys.index(t.key)] for t in out.tracks]
    assert sorted(artists) == ["A"] * 4 + ["B"] * 3, artists
    repeats = sum(a == b for a, b in zip(artists, artists[1:], strict=False))
    assert repeats == 1, artists  # only the last A, once every B is used, follows an A


def test_the_look_ahead_is_bounded():
    # another artist far down the order (behind more than SAME_ARTIST_LOOKAHEAD of one artist's candidates) is not
    # pulled forward between them: relevance decides, only the near reordering is allowed
    n = SAME_ARTIST_LOOKAHEAD + 4
    lib = _library(["Liked"] + ["A"] * n + ["B"])
    far = len(lib.keys) - 1
    lib.vectors[far] = -lib.vectors[0]  # B sounds nothing like the liked track: last in the order
    out = _rank(lib, liked=[0], top_n=3, mmr_lambda=1.0)
    artists = [lib.meta["artist"][lib.keys.index(t.key)] for t in out.tracks]
    assert artists == ["A", "A", "A"], artists
