"""`recsys map`: every embedded track as a point of one self-contained HTML page, coloured by stars, genre or a tag.

The vectors and tags come from the index snapshot; the stars are read live from the player database when there is
one (a library of folders alone maps every track as unrated; ``--colour genre`` then says more). Torch is never
imported. The neighbour layout costs about 12 s at 20,000 tracks on 2 cores and 60 s at 100,000, so ``auto`` uses
it up to ``NEIGHBOUR_LAYOUT_MAX`` tracks and PCA (under 2 s) above: benchmarks/RESULTS.md "Library map".

With ``--where`` (:mod:`recsys.library.filters`) only the tracks the terms select are drawn and the layout is computed
on them alone, their neighbours found by an exact search over their own vectors: the index's nearest tracks of a
selected one may all lie outside the selection.

With ``tag`` the points are coloured by that tag's probability from the sound (the snapshot's ``tags.npy``), the
scale split at the library's threshold for it (:meth:`recsys.library.filters.TagScores.thresholds`, the rule of
``--where tag:``); when the snapshot has tags, each point's strongest ones (up to :data:`HOVER_TAGS` of those it has)
are shown on hover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.app.output import output_path, snapshot_inputs
from recsys.app.taste import vote_search
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.index.ann import LibraryVectors, current_snapshot
from recsys.library.filters import Filter, TagScores, parse, selected_mask, snapshot_column
from recsys.library.sources import load_library
from recsys.library.track import Track, display_label
from recsys.recommender.neighbours import exact_search
from recsys.viz.map import TagColour, check_map_output, map_html, write_map
from recsys.viz.projection import METHODS, Search, project

LAYOUTS = ("auto", *METHODS)
NEIGHBOUR_LAYOUT_MAX = 20000
HOVER_TAGS = 3  # tags shown per track on hover: its strongest among those it has


@dataclass
class MapRequest:
    out: str | None = None
    colour: str = "rating"
    layout: str = "auto"
    force: bool = False
    where: Sequence[str] = ()  # filter terms (recsys.library.filters): only the tracks they select are drawn
    tag: str | None = None  # colour by this tag's probability from the sound (instead of ``colour``)


@dataclass
class LibraryMap:
    path: Path
    tracks: int
    rated: int
    layout: str
    notes: list[str] = field(default_factory=list)
    where: str = ""  # the filter terms the tracks were selected by, as written ('' for every track)


def _tracks(settings: Settings, flt: Filter, notes: list[str]) -> list[Track] | None:
    """The library with the owner's ratings, read now; None (with a note) when there is no player database, unless
    a ``rating:``/``played:`` term needs it (then an error naming the terms)."""
    try:
        return load_library(settings.library.db, settings.library.folders, settings=settings).tracks
    except RecsysError as exc:
        if flt.needs_taste:
            raise RecsysError(f"--where '{flt}' reads your ratings and plays: {exc}") from None
        notes.append(f"no ratings to colour by ({exc}); every track is shown unrated")
        return None


def _selected(lib: LibraryVectors, flt: Filter, tracks: list[Track] | None) -> np.ndarray:
    """The snapshot rows the map draws: all of them, or those the filter selects (an error naming the terms when it
    selects none)."""
    if not flt:
        return np.arange(len(lib))
    return np.flatnonzero(selected_mask(flt, lib.keys, snapshot_column(lib), tracks or []))


def _tag_scores(lib: LibraryVectors, tag: str | None) -> TagScores | None:
    """The snapshot's tag scores (None when it has none), checking ``tag``: a one-line error when the encoder has no
    tag head, or the tag is not one of its tags."""
    if lib.tags is None or not lib.tag_names:
        if tag:
            raise RecsysError(f"--tag {tag}: the index holds no tags from the sound: its encoder ({lib.encoder_id}) "
                              "has no tag head (or it was embedded before tags were kept); `recsys embed --encoder "
                              "musicnn` stores them")
        return None
    scores = TagScores(lib.tag_names, lib.tags)
    if tag:
        scores.index(tag)  # an unknown tag fails here, naming the encoder's tags
    return scores


def _hover_tags(scores: TagScores, rows: np.ndarray) -> list[list[str]]:
    """Each row's strongest tags among those it has (probability at the library's threshold or above)."""
    probs = np.nan_to_num(np.asarray(scores.probs[rows], dtype=np.float32), nan=-1.0)
    has = probs >= scores.thresholds()
    order = np.argsort(-np.where(has, probs, -np.inf), axis=1, kind="stable")[:, :HOVER_TAGS]
    return [[scores.names[j] for j in top if has[i, j]] for i, top in enumerate(order)]


def _search(settings: Settings, lib: LibraryVectors, vectors: np.ndarray, every: bool) -> Search:
    """The neighbour search of the layout: the index's over the whole snapshot, or exact over the selected vectors
    (random ones, D=200, on 2 cores: 0.8 s at 10,000 of them, 3.6 s at 20,000, where ``auto`` stops using it)."""
    if every:
        return vote_search(settings, lib, hubness=False)  # the layout keeps plain cosine neighbours
    return exact_search(vectors)


def make_map(settings: Settings, req: MapRequest) -> LibraryMap:
    """Project the snapshot's vectors (those ``req.where`` selects) to 2-D and write the page."""
    if req.layout not in LAYOUTS:
        raise RecsysError(f"unknown --layout {req.layout!r}: choose one of {', '.join(LAYOUTS)}")
    flt = parse(req.where)  # a bad term fails before anything is read
    lib = current_snapshot(settings.home_path, settings.index)
    scores = _tag_scores(lib, req.tag)
    inputs = snapshot_inputs(settings, lib)
    out = check_map_output(output_path(req.out, settings, "recsys-map", "html"), req.force, inputs)  # before the work
    notes = [lib.behind] if lib.behind else []
    tracks = _tracks(settings, flt, notes)
    rows = _selected(lib, flt, tracks)
    n = len(rows)
    layout = req.layout
    if layout == "auto":
        layout = "neighbours" if n <= NEIGHBOUR_LAYOUT_MAX else "pca"
        if layout == "pca":
            notes.append(f"{n} tracks: PCA layout (--layout neighbours keeps neighbourhoods better, about a "
                         "minute per 100,000 tracks)")
    rating = {t.key: t.rating for t in tracks or []}
    keys = lib.keys
    ratings = [rating.get(keys[i]) for i in rows]
    vectors = np.asarray(lib.vectors, dtype=np.float32)
    if flt:
        vectors = np.ascontiguousarray(vectors[rows])
    points = project(vectors, layout, _search(settings, lib, vectors, every=not flt))
    artist, title, path, start, genre, album = (lib.values(c) for c in ("artist", "title", "path", "start_s", "genre",
                                                                         "album"))
    labels = [display_label(artist[i], title[i], path[i], start[i] or 0.0) for i in rows]
    genres = [genre[i] or "" for i in rows]
    tags = {"album": [album[i] or "" for i in rows], "artist": [artist[i] or "" for i in rows]}
    heading = f"recsys map of {n} tracks" + (f" matching {flt}" if flt else "")
    colour = None
    if req.tag and scores is not None:
        column = scores.index(req.tag)
        probs = np.asarray(scores.probs[rows, column], np.float64).tolist()
        colour = TagColour(req.tag, [None if v != v else v for v in probs], float(scores.thresholds()[column]))
    page = map_html(points, labels, ratings, genres, colour="tag" if colour else req.colour, title=heading, tags=tags,
                    tag=colour, strongest=_hover_tags(scores, rows) if scores else None)
    out = write_map(out, page, overwrite=req.force, inputs=inputs)
    return LibraryMap(out, n, sum(r is not None for r in ratings), layout, notes, str(flt))
