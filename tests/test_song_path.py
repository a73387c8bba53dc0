"""Song paths: slerp between two tracks, the nearest unused track at each point, under the playlist's rules."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.recommender.neighbours import exact_search
from recsys.recommender.path import PathError, TrackFacts, slerp, song_path


def _arc(n: int, dim: int = 8, degrees: float = 150.0) -> np.ndarray:
    """n unit vectors evenly spaced on an arc, further apart than duplicates (cosine < 0.995), a little noise."""
    rng = np.random.default_rng(0)
    angle = np.radians(np.linspace(0, degrees, n))
    v = np.zeros((n, dim), np.float32)
    v[:, 0], v[:, 1] = np.cos(angle), np.sin(angle)
    v[:, 2:] = rng.normal(0, 0.01, (n, dim - 2))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _facts(artists, albums=None):
    return lambda row: TrackFacts(artists[row], (albums or [""] * len(artists))[row], f"t{row}", f"/m/{row}.flac")


def test_slerp_stays_on_the_sphere_and_ends_at_both_tracks():
    a, b = np.array([1.0, 0, 0]), np.array([0.0, 1, 0])
    points = slerp(a, b, 5)
    assert np.allclose(np.linalg.norm(points, axis=1), 1) and np.allclose(points[0], a) and np.allclose(points[-1], b)
    assert np.allclose(points[2], [np.sqrt(0.5), np.sqrt(0.5), 0], atol=1e-6)  # the midpoint of the arc, not the chord
    opposite = slerp(a, -a, 3)
    assert np.allclose(opposite[-1], -a, atol=1e-6) and abs(opposite[1] @ a) < 1e-6  # through a perpendicular
    assert np.allclose(slerp(a, a + 1e-12, 3), a)


def test_path_walks_from_a_to_b_in_order():
    v = _arc(21)
    path = song_path(v, exact_search(v), 0, 20, 6, _facts([f"artist {i}" for i in range(21)]))
    assert path.rows == [0, 4, 8, 12, 16, 20] and path.left_out == 0 and not path.removed
    assert all(s > 0.99 for s in path.similarity)


def test_rules_caps_no_artist_twice_in_a_row_no_duplicates_and_the_filter():
    v = _arc(24)
    v = np.concatenate([v, v[:1]])  # row 24: a copy of A
    artists = ["same"] * 12 + [f"a{i}" for i in range(12)] + ["copy"]
    path = song_path(v, exact_search(v), 0, 23, 12, _facts(artists), max_per_artist=3)
    labels = [artists[r] for r in path.rows]
    assert labels.count("same") <= 3 and 24 not in path.rows
    assert all(x != y for x, y in zip(labels, labels[1:], strict=False))
    assert path.removed.get("artist cap", 0) > 0
    odd = song_path(v, exact_search(v), 0, 23, 8, _facts(artists), allowed=lambda r: r % 2 == 1)
    assert all(r % 2 == 1 for r in odd.rows[1:-1]) and odd.removed["filter"] > 0
    capped = song_path(v, exact_search(v), 0, 23, 8, _facts([f"a{i}" for i in range(25)], ["one"] * 25),
                       max_per_album=3)
    assert len(capped.rows) == 3 and capped.left_out == 5  # A and B hold two of the album's three places


def test_missing_files_are_skipped_and_bad_requests_are_one_line():
    v = _arc(20)
    facts = _facts([f"a{i}" for i in range(20)])
    path = song_path(v, exact_search(v), 0, 19, 5, facts, exists=lambda p: p.endswith(("/0.flac", "/19.flac",
                                                                                        "/5.flac")))
    assert path.rows == [0, 5, 19] and path.left_out == 2 and path.removed["missing file"] > 0
    with pytest.raises(PathError, match="at least 2"):
        song_path(v, exact_search(v), 0, 19, 1, facts)
    with pytest.raises(PathError, match="same track"):
        song_path(v, exact_search(v), 3, 3, 5, facts)
