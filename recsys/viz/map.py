"""The library map: one self-contained HTML page with every track as a point of a 2-D projection of its vector.

The page (``map_page.html`` beside this module, filled in here) holds its data, script and style inline: nothing is
fetched when it is opened, so it works offline and leaks nothing. Points are drawn on a canvas (100,000 DOM nodes
would not scroll), coloured by stars (or genre, or one tag's probability: :class:`TagColour`, on a scale split at
the library's threshold for the tag, the one ``--where tag:`` selects by), with the liked (4 stars and up) and
disliked (2 and below) tracks' density shaded underneath; hover shows the track (and its strongest tags from the
sound, when the index has them). Points are larger the fewer they are (3 px at 100,000 tracks, up to 9 px for a few
hundred), and the regions of the layout are named on the page by the album, artist or genre most of their tracks
share (``recsys.viz.regions``). When drawn, the page writes ``data-drawn`` (points drawn), ``data-painted`` (pixels
the points cover), ``data-size`` (a point's side) and ``data-regions`` (labels drawn) on ``<body>`` and the count
into its title: what the tests read back from a real headless browser.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from recsys.atomic import write_bytes_atomic
from recsys.errors import RecsysError
from recsys.guard import Inputs, check_destination
from recsys.viz.regions import regions

COLOURS = ("rating", "genre", "tag")
SCALE = 10000  # coordinates are sent as integers 0..SCALE: a third of the bytes of floats, finer than any screen
TOP_GENRES = 12  # the page's palette; the rest are 'other'
MARKER = b"<!-- recsys library map"


class MapError(RecsysError):
    """The map cannot be made or written where asked."""


@dataclass(frozen=True)
class TagColour:
    """Colour by one tag from the sound: each track's probability of it (None: none stored) and the library's
    threshold for it (at or above it a track has the tag: what ``--where tag:`` selects)."""

    name: str
    values: Sequence[float | None]
    threshold: float


def _template() -> str:
    return files("recsys.viz").joinpath("map_page.html").read_text(encoding="utf-8")


def _scaled(points: np.ndarray) -> list[int]:
    """Each axis to 0..SCALE, one scale for both (the map keeps its aspect)."""
    lo = points.min(axis=0)
    span = float((points.max(axis=0) - lo).max()) or 1.0
    scaled = (points - lo) / span * SCALE
    scaled += (SCALE - scaled.max(axis=0)) / 2  # centre the shorter axis
    return np.rint(scaled).astype(int).T.tolist()


def map_html(points: np.ndarray, labels: Sequence[str], ratings: Sequence[float | None], genres: Sequence[str],
             colour: str = "rating", title: str = "recsys library map",
             tags: Mapping[str, Sequence[str]] | None = None, tag: TagColour | None = None,
             strongest: Sequence[Sequence[str]] | None = None) -> str:
    """The page for ``points`` (N, 2) with each track's label, rating in [0, 1] (None: unrated) and genre;
    ``tags`` ('album', 'artist': each track's tag, '' when untagged) name the regions, with the genres. ``colour``
    "tag" colours by ``tag``; ``strongest`` (each track's strongest tags from the sound) are shown on hover."""
    if colour not in COLOURS:
        raise MapError(f"unknown --colour {colour!r}: choose one of {', '.join(COLOURS)}")
    if colour == "tag" and tag is None:
        raise MapError("colouring by a tag needs the tag: give --tag TAG")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not len(points):
        raise MapError("the library has no vectors to map: run `recsys embed` first")
    if not (len(labels) == len(ratings) == len(genres) == len(points)):
        raise ValueError("points, labels, ratings and genres differ in length")
    xs, ys = _scaled(points)
    counts = Counter(g.strip() for g in genres if g and g.strip())
    named = [g for g, _ in counts.most_common(TOP_GENRES - 1)]
    other = len(counts) > len(named)
    genre_list = named + (["other"] if other else [])
    index = {g: i for i, g in enumerate(named)}
    data = {"title": title, "colour": colour, "x": xs, "y": ys, "labels": list(labels),
            "r": [-1 if r is None or r < 0 else int(round(r * 10)) for r in ratings],  # half-star steps, 0..10
            "g": [index.get((g or "").strip(), len(named) if (g or "").strip() else -1) for g in genres],
            "genres": genre_list,
            "regions": [r.as_json() for r in regions(np.array([xs, ys], dtype=np.float64).T,
                                                     {**(tags or {}), "genre": list(genres)})]}
    if tag is not None and colour == "tag":
        if len(tag.values) != len(points):
            raise ValueError("points and tag values differ in length")
        known = [v for v in tag.values if v is not None and v == v]
        data["tag"] = {"name": tag.name, "threshold": round(float(tag.threshold), 3),
                       "max": round(max(known, default=0.0), 3)}
        data["t"] = [-1 if v is None or v != v else int(round(float(v) * 1000)) for v in tag.values]  # per mille
    if strongest is not None:
        names = sorted({t for top in strongest for t in top})
        at = {t: i for i, t in enumerate(names)}
        data["tagNames"] = names
        data["top"] = [[at[t] for t in top] for top in strongest]
    # '<' only occurs inside JSON strings, where \u003c means the same: no '</script>' can close the block early
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return _template().replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


def _is_map(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return MARKER in f.read(512)
    except OSError:
        return False


def check_map_output(path: str | os.PathLike, overwrite: bool = False, inputs: Inputs | None = None) -> Path:
    """The one write guard (:func:`recsys.guard.check_destination`) for a map: never the player database, a music
    folder or a music file (``inputs``), and an existing file replaced only with ``overwrite`` and only if it is a
    map recsys wrote (never anything else a mistyped ``--out`` names); returns the absolute path."""
    path = Path(path).expanduser().absolute()
    check_destination(path, inputs, recognise=_is_map, what="a recsys map", replaceable="one", overwrite=overwrite,
                      error=MapError)
    return path


def write_map(path: str | os.PathLike, page: str, overwrite: bool = False, inputs: Inputs | None = None) -> Path:
    """Write the page atomically after :func:`check_map_output`."""
    path = check_map_output(path, overwrite, inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, page.encode("utf-8"))
    except OSError as exc:
        raise MapError(f"cannot write the map {path} ({exc.strerror or type(exc).__name__}): choose a writable "
                       "folder with --out") from None
    return path
