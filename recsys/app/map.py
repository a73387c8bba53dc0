"""`recsys map`: every embedded track as a point of one self-contained HTML page, coloured by stars or genre.

The vectors and tags come from the index snapshot; the stars are read live from the player database when there is
one (a library of folders alone maps every track as unrated; ``--colour genre`` then says more). Torch is never
imported. The neighbour layout costs about 12 s at 20,000 tracks on 2 cores and 60 s at 100,000, so ``auto`` uses
it up to ``NEIGHBOUR_LAYOUT_MAX`` tracks and PCA (under 2 s) above: benchmarks/RESULTS.md "Library map".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.app.output import output_path
from recsys.app.taste import vote_search
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.index.ann import current_snapshot
from recsys.library.sources import load_library
from recsys.library.track import display_label
from recsys.viz.map import map_html, write_map
from recsys.viz.projection import METHODS, project

LAYOUTS = ("auto", *METHODS)
NEIGHBOUR_LAYOUT_MAX = 20000


@dataclass
class MapRequest:
    out: str | None = None
    colour: str = "rating"
    layout: str = "auto"
    force: bool = False


@dataclass
class LibraryMap:
    path: Path
    tracks: int
    rated: int
    layout: str
    notes: list[str] = field(default_factory=list)


def _ratings(settings: Settings, keys: list[str], notes: list[str]) -> list[float | None]:
    """Each row's rating from the player, read now; all None (with a note) when there is no player database."""
    try:
        library = load_library(settings.library.db, settings.library.folders, settings=settings)
    except RecsysError as exc:
        notes.append(f"no ratings to colour by ({exc}); every track is shown unrated")
        return [None] * len(keys)
    rating = {t.key: t.rating for t in library.tracks}
    return [rating.get(k) for k in keys]


def make_map(settings: Settings, req: MapRequest) -> LibraryMap:
    """Project the snapshot's vectors to 2-D and write the page."""
    if req.layout not in LAYOUTS:
        raise RecsysError(f"unknown --layout {req.layout!r}: choose one of {', '.join(LAYOUTS)}")
    lib = current_snapshot(settings.home_path, settings.index)
    notes = [lib.behind] if lib.behind else []
    layout = req.layout
    if layout == "auto":
        layout = "neighbours" if len(lib) <= NEIGHBOUR_LAYOUT_MAX else "pca"
        if layout == "pca":
            notes.append(f"{len(lib)} tracks: PCA layout (--layout neighbours keeps neighbourhoods better, about a "
                         "minute per 100,000 tracks)")
    ratings = _ratings(settings, lib.keys, notes)
    vectors = np.asarray(lib.vectors, dtype=np.float32)
    points = project(vectors, layout, vote_search(settings, lib))
    labels = [display_label(a, t, p, s or 0.0) for a, t, p, s in zip(lib.values("artist"), lib.values("title"),
                                                                    lib.values("path"), lib.values("start_s"),
                                                                    strict=True)]
    genres = [g or "" for g in lib.values("genre")]
    page = map_html(points, labels, ratings, genres, colour=req.colour, title=f"recsys map of {len(lib)} tracks")
    out = write_map(output_path(req.out, settings, "recsys-map", "html"), page, overwrite=req.force)
    return LibraryMap(out, len(lib), sum(r is not None for r in ratings), layout, notes)
