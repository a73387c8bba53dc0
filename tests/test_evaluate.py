import math

import numpy as np
import pytest

from recsys.index.retrieval import retrieval_metrics


def _unit(rows):
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_perfect_grouping_scores_one_whatever_the_album_size():
    x = _unit([[1, 0.1, 0], [1, 0, 0.1], [1, 0.05, 0.05], [0, 1, 0], [0.1, 1, 0]])
    m = retrieval_metrics(x, ["a", "a", "a", "b", "b"], ["x"] * 5, list("12345"))
    assert m["album_p10"] == 1.0 and m["album_queries"] == 5
    assert m["artist_p10"] == 1.0  # every other track is by x, and all 4 are within the 10 neighbours


def test_copies_of_the_query_file_are_neither_neighbours_nor_relevant():
    x = _unit([[1, 0], [1, 0], [0, 1]])
    m = retrieval_metrics(x, ["a", "a", "a"], ["x", "x", "x"], ["same", "same", "other"])
    # the copy is left out, so the one real album mate is always the nearest remaining track
    assert m["album_p10"] == 1.0 and m["album_queries"] == 3


def test_no_usable_tags_means_no_queries_not_zero():
    x = _unit([[1, 0], [0, 1], [1, 1]])
    m = retrieval_metrics(x, ["", None, "solo"], ["", "", ""], ["1", "2", "3"])
    assert m["album_queries"] == 0 and math.isnan(m["album_p10"])
    assert m["artist_queries"] == 0 and math.isnan(m["artist_p10"])


def test_albums_of_different_artists_are_different_albums():
    x = _unit([[1, 0], [1, 0.01], [0, 1], [0.01, 1]])
    m = retrieval_metrics(x, ["Greatest Hits"] * 4, ["A", "A", "B", "B"], list("1234"))
    assert m["album_p10"] == 1.0 and m["album_queries"] == 4


def test_chance_is_what_random_neighbours_score():
    """3 albums of 10: 9 relevant among 29 candidates, 10 drawn -> 10 x 9 / 29 / 9 = 0.345; random vectors land
    there, grouped ones far above."""
    albums = [f"album {i // 10}" for i in range(30)]
    m = retrieval_metrics(_unit(np.eye(30)[:, :30] + 1e-3), albums, ["x"] * 30, [str(i) for i in range(30)])
    assert m["album_chance"] == pytest.approx(10 * 9 / 29 / 9)
    random = [retrieval_metrics(_unit(np.random.default_rng(s).normal(size=(30, 16))), albums, ["x"] * 30,
                                [str(i) for i in range(30)])["album_p10"] for s in range(20)]
    assert abs(np.mean(random) - m["album_chance"]) < 0.05
    grouped = _unit(np.repeat(np.eye(3), 10, axis=0) + np.random.default_rng(0).normal(0, 0.05, (30, 3)))
    assert retrieval_metrics(grouped, albums, ["x"] * 30, [str(i) for i in range(30)])["album_p10"] == 1.0
    # a single artist: every other track is relevant, so chance is 1 (the metric cannot tell encoders apart)
    assert m["artist_chance"] == 1.0
