"""The library map: projections, the self-contained page, and the page drawn by a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import faiss
import numpy as np
import pytest

from recsys.viz.map import MapError, TagColour, map_html, write_map
from recsys.viz.projection import neighbour_layout, neighbourhood_kept, pca

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _clusters(n: int = 600, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Tracks in 12 groups on a low-dimensional shape: neighbourhoods that mean something."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(12, 5))[rng.integers(0, 12, n)] * 3 + rng.normal(size=(n, 5))
    v = z @ rng.normal(size=(5, dim)) + rng.normal(scale=0.2, size=(n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _search(v):
    return lambda q, k: faiss.knn(np.ascontiguousarray(q), v, k, metric=faiss.METRIC_INNER_PRODUCT)


def test_pca_finds_the_main_axis_and_the_layout_keeps_neighbourhoods_better():
    t = np.linspace(-1, 1, 50)
    line = np.outer(t, np.eye(16)[3]) + 0.01 * np.eye(16)[5]
    p = pca(line)
    assert np.allclose(np.abs(p[:, 0]), np.abs(t), atol=1e-6) and np.allclose(p[:, 1], 0, atol=1e-6)
    v = _clusters()
    kept_pca = neighbourhood_kept(v, pca(v), _search(v), sample=300)
    layout = neighbour_layout(v, _search(v), epochs=60)
    assert np.isfinite(layout).all() and np.array_equal(layout, neighbour_layout(v, _search(v), epochs=60))
    kept = neighbourhood_kept(v, layout, _search(v), sample=300)
    assert kept > kept_pca + 0.1, (kept, kept_pca)  # measured: ~0.5 against ~0.2


def _page(n: int = 200, colour: str = "rating") -> str:
    v = _clusters(n)
    ratings = [None if i % 3 == 0 else (i % 6) / 5 for i in range(n)]
    genres = ["Ambient" if i % 2 else "Rock" for i in range(n)]
    labels = [f"Artist {i} - Title {i}" for i in range(n)]
    labels[1] = "</script><script>alert(1)</script> & <b>"
    return map_html(pca(v), labels, ratings, genres, colour=colour, title="my map")


def _data(page: str) -> dict:
    block = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1)
    return json.loads(block)


def test_the_page_holds_every_track_and_fetches_nothing():
    page = _page()
    data = _data(page)  # the hostile label did not close the data block early
    assert len(data["x"]) == len(data["labels"]) == 200 and data["labels"][1].startswith("</script>")
    assert data["r"][:3] == [-1, 2, 4] and sorted(data["genres"]) == ["Ambient", "Rock"]
    assert min(data["x"]) == 0 and max(max(data["x"]), max(data["y"])) == 10000
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|\b(src|href)\s*=|@import|url\(", page, re.I)
    with pytest.raises(MapError, match="unknown --colour 'mood'"):
        map_html(np.zeros((1, 2)), ["a"], [None], [""], colour="mood")
    with pytest.raises(MapError, match="no vectors"):
        map_html(np.zeros((0, 2)), [], [], [])


def test_regions_are_named_by_the_album_artist_or_genre_their_tracks_share():
    """Issue 27: a user could not tell what a cluster of the map is. Four groups of known albums (one of them two
    albums of one artist), a fifth of untagged tracks of one genre, a few strays in each: each group's label names
    it and sits among its points."""
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5]], dtype=np.float64)
    group = np.repeat(np.arange(5), 60)
    points = centres[group] + rng.normal(scale=0.8, size=(300, 2))
    album = np.array(["Ocarina", "Chrono", "", "Halo", ""], dtype=object)[group].tolist()
    artist = np.array(["Kondo", "Mitsuda", "Uematsu", "O'Donnell", ""], dtype=object)[group].tolist()
    genre = np.array(["", "", "", "", "Ambient"], dtype=object)[group].tolist()
    for i in range(120, 180):  # group 2: two albums of one artist, neither most of it
        album[i] = f"Final Fantasy {i % 3 + 6}"
    for i in rng.choice(300, 20, replace=False):  # strays: another album's tag inside a group
        album[i], artist[i] = "Stray", "Someone"
    page = map_html(points, [f"t{i}" for i in range(300)], [None] * 300, genre, tags={"album": album,
                                                                                       "artist": artist})
    data = _data(page)
    xy = np.array([data["x"], data["y"]], dtype=np.float64).T
    want = {0: "Ocarina (Kondo)", 1: "Chrono (Mitsuda)", 2: "Uematsu", 3: "Halo (O'Donnell)", 4: "Ambient"}
    named = {}
    for r in data["regions"]:
        at = np.array([r["x"], r["y"]], dtype=np.float64)
        where = int(group[np.argmin(((xy - at) ** 2).sum(axis=1))])  # the group whose point the label sits on
        assert r["label"] == want[where], (r, where)
        named[where] = r
    assert set(named) == set(want)  # every group named
    assert named[2]["facet"] == "artist" and named[4]["facet"] == "genre" and named[0]["facet"] == "album"
    assert all(0.5 <= r["share"] <= 1 for r in data["regions"])
    assert "name the regions" in page


def _tag_page(n: int = 200) -> str:
    v = _clusters(n)
    values = [None if i == 0 else round(i / n, 3) for i in range(n)]  # 0..1 in order; the first has none stored
    strongest = [["chill", "mellow"] if i % 2 else [] for i in range(n)]
    return map_html(pca(v), [f"t{i}" for i in range(n)], [None] * n, [""] * n, colour="tag",
                    tag=TagColour("chill", values, 0.25), strongest=strongest)


def test_the_page_colours_by_a_tag_and_shows_the_strongest_tags():
    data = _data(_tag_page())
    assert data["colour"] == "tag" and data["tag"] == {"name": "chill", "threshold": 0.25, "max": 0.995}
    assert data["t"][:3] == [-1, 5, 10] and len(data["t"]) == 200  # each track's probability, per mille
    assert [data["tagNames"][j] for j in data["top"][1]] == ["chill", "mellow"] and data["top"][0] == []
    with pytest.raises(MapError, match="give --tag"):
        map_html(np.zeros((1, 2)), ["a"], [None], [""], colour="tag")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_real_browser_draws_the_tag_scale(tmp_path):
    out = write_map(tmp_path / "tag.html", _tag_page(300))
    dom = _render(out)
    assert 'data-drawn="300"' in dom, dom[-2000:]
    # 0.25 and up: tracks 75..299 have the tag; the legend names the threshold and the rule it is
    assert 'data-has-tag="225"' in dom and "0.25 to 1.00: has the tag (what --where tag:chill selects): 225" in dom
    assert "below this library's threshold: 74" in dom and "no tags stored: 1" in dom


def test_write_map_never_replaces_what_is_not_a_map(tmp_path):
    out = write_map(tmp_path / "m" / "map.html", _page(20))
    with pytest.raises(MapError, match="exists: pass --force"):
        write_map(out, _page(20))
    write_map(out, _page(20), overwrite=True)
    (tmp_path / "notes.html").write_text("<html>mine</html>")
    with pytest.raises(MapError, match="is not a recsys map"):
        write_map(tmp_path / "notes.html", _page(20), overwrite=True)


def _render(path, size: str = "900,700", timeout: float = 60) -> str:
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--window-size={size}", "--dump-dom", path.as_uri()],
                            capture_output=True, text=True, timeout=timeout)
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_real_browser_draws_every_point(tmp_path):
    out = write_map(tmp_path / "map.html", _page(300))
    dom = _render(out)
    drawn = re.search(r'data-drawn="(\d+)"', dom)
    painted = re.search(r'data-painted="(\d+)"', dom)
    assert drawn and painted, dom[-2000:]
    size = re.search(r'data-size="(\d+)"', dom)
    assert int(drawn.group(1)) == 300 and "300 tracks drawn" in dom
    assert size and int(size.group(1)) >= 5  # a few hundred tracks: points larger than the 3 px of 100,000
    # points of side `size`, some overlapping: they were really painted
    assert 300 < int(painted.group(1)) <= 300 * int(size.group(1)) ** 2
    regions = re.search(r'data-regions="(\d+)"', dom)
    assert regions and int(regions.group(1)) >= 1  # the region names were drawn
