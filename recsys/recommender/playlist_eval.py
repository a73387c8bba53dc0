"""``recsys eval --playlist``: the owner's own quality meter for playlists, on their own ratings.

Each split hides the ratings of whole albums (album tag, or folder when untagged; seeded, about ``hidden_fraction``
of the explicit ratings), trains the classifier on the rest exactly as ``recsys train-classifier`` does, builds the
playlist exactly as ``recsys playlist`` does (the hidden tracks are unrated again, so they are candidates), and
counts the hidden liked (4 stars and up) and hidden disliked (2 stars and below) tracks in its top 20 and top 100.
The same playlist is built with the neighbour votes alone and with the classifier alone, and -- when the classifier
was not shown better than chance, so the playlist did not blend it -- with the blend forced, for comparison. Random
is what a uniformly random playlist of the same candidates holds on average (k * hidden / candidates). Figures are
means over the splits, each with its standard error; the blend is compared with each of the others split by split
(``comparisons``: the mean paired difference and its standard error), since the splits share most of their
hidden albums' noise. With a handful of hidden tracks per split, a difference under two standard errors is noise.
Nothing is written outside a temporary folder; the player database is only read.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.library.groups import album_of, library_root, loose_folders
from recsys.library.track import Track
from recsys.recommender.labels import LIKED
from recsys.recommender.persistence import ClassifierError, RatingModel, finite
from recsys.recommender.rank import DISLIKED

TOPS = (20, 100)
OTHERS = ("neighbours only", "classifier only", "random")


@dataclass
class Comparison:
    """The blend (as the playlist blends, forced when the rule kept the classifier out) against another ranker on
    the splits that had a classifier: mean paired differences in the top 20 (blend minus other) and their standard
    errors (NaN with one split)."""

    other: str
    splits: int
    liked: float
    liked_se: float
    disliked: float
    disliked_se: float

    @property
    def better(self) -> bool:
        """More hidden liked tracks in the top 20 by more than two standard errors, and no more disliked ones."""
        return self.liked > 2 * self.liked_se and self.disliked <= 0

    @property
    def verdict(self) -> str:
        """``better`` in words that say which half of the rule failed (a positive difference within the noise is
        not "worse")."""
        if self.better:
            return "better"
        if math.isnan(self.liked_se):
            return "not shown better: one split has no standard error"
        if self.liked <= 2 * self.liked_se:
            return (f"not shown better: {self.liked:+.2f} liked is within two standard errors "
                    f"({2 * self.liked_se:.2f}), noise at this many splits")
        return f"not shown better: {self.disliked:+.2f} disliked too"


@dataclass
class PlaylistEval:
    splits: int
    hidden: float  # mean hidden ratings per split
    hidden_liked: float
    hidden_disliked: float
    candidates: float
    rankers: dict[str, dict[str, float]]  # ranker -> top20_liked, top20_disliked, top100_liked, top100_disliked
    stderr: dict[str, dict[str, float]] = field(default_factory=dict)  # the same keys: standard errors over splits
    comparisons: list[Comparison] = field(default_factory=list)  # top 20, the blend against each other ranker
    notes: list[str] = field(default_factory=list)
    gate: dict[str, int] = field(default_factory=dict)  # each split's classifier gate verdict -> splits

    def as_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["comparisons"] = [{**dataclasses.asdict(c), "better": c.better, "verdict": c.verdict}
                              for c in self.comparisons]
        return finite(out)


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN with one value)."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan


def _compare(per_split: list[dict[str, dict[str, float]]], blends: list[str | None]) -> list[Comparison]:
    """The blend against each other ranker; ``blends[i]`` names split i's blend row (None: no classifier)."""
    out = []
    for other in OTHERS:
        pairs = [(split[b]["top20_liked"] - split[other]["top20_liked"],
                  split[b]["top20_disliked"] - split[other]["top20_disliked"])
                 for split, b in zip(per_split, blends, strict=True) if b is not None and other in split]
        if pairs:
            liked, liked_se = mean_se([p[0] for p in pairs])
            disliked, disliked_se = mean_se([p[1] for p in pairs])
            out.append(Comparison(other, len(pairs), liked, liked_se, disliked, disliked_se))
    return out


def _hide(tracks: Sequence[Track], fraction: float, seed: int) -> tuple[list[Track], set[str]]:
    """The tracks with the ratings of whole, randomly drawn albums removed; and the hidden keys.

    A hidden track's play and skip counts go too: they would vote for it (and bar it as often played) and so leak
    the very rating the split hides.
    """
    rated = [t for t in tracks if t.rating is not None and 0.0 <= t.rating <= 1.0]
    paths = [t.path for t in tracks]
    loose = loose_folders(paths, library_root(paths))
    albums: dict[str, list[str]] = {}
    for t in rated:  # a track of no album (a flat folder's) is hidden on its own
        album = album_of(t.album, t.albumartist, t.artist, t.path, loose) or f"track:{t.key}"
        albums.setdefault(album, []).append(t.key)
    names = sorted(albums)
    want = max(1, round(fraction * len(rated)))
    hidden: set[str] = set()
    for i in np.random.default_rng(seed).permutation(len(names)):
        if len(hidden) >= want or len(hidden) + len(albums[names[i]]) > max(want, len(rated) - 20):
            continue  # keep enough ratings to train on (at least the minimum of 20 where possible)
        hidden.update(albums[names[i]])
    return [dataclasses.replace(t, rating=None, playcount=0, skipcount=0) if t.key in hidden else t
            for t in tracks], hidden


def evaluate_playlist(lib: Any, tracks: Sequence[Track], build: Callable[..., Any], train: Callable[..., Any], *,
                      splits: int = 5, hidden_fraction: float = 0.25, seed: int = 0,
                      progress: Callable[[str], object] | None = None) -> PlaylistEval:
    """Mean hidden liked / disliked counts in the top 20 / top 100 per ranker over ``splits`` seeded splits.

    ``train(tracks, models_dir)`` trains as `recsys train-classifier` does; ``build(tracks, model, top_n, scorer)``
    ranks as `recsys playlist` does (``recsys.app.playlist`` passes both, bound to the settings). Each split's
    classifier gate decides, as it does for `train-classifier`, whether its "playlist" row blends the classifier:
    ``gate`` counts the verdicts in that command's words, and a note says why a "playlist" row equals "neighbours
    only" when it does. ``progress`` gets one line per split (a split trains and builds four playlists: seconds).
    """
    per_split: list[dict[str, dict[str, float]]] = []
    blends: list[str | None] = []  # each split's blend row
    counts = {"hidden": 0.0, "liked": 0.0, "disliked": 0.0, "candidates": 0.0}
    notes: list[str] = []
    stars = {t.key: t.rating for t in tracks}
    gate: dict[str, int] = {}
    for s in range(splits):
        started = time.perf_counter()
        visible, hidden = _hide(tracks, hidden_fraction, seed + s)
        liked = {k for k in hidden if stars[k] >= LIKED - 1e-6}
        disliked = {k for k in hidden if stars[k] <= DISLIKED + 1e-6}
        with tempfile.TemporaryDirectory(prefix="recsys-eval-") as tmp:
            try:
                train(visible, Path(tmp))
                model: RatingModel | None = RatingModel.load(Path(tmp), lib.encoder_id)
            except ClassifierError as exc:
                model = None
                notes.append(f"split {s}: no classifier ({exc})")
        split: dict[str, dict[str, float]] = {}
        per_split.append(split)
        rankers = {"playlist": "blend", "neighbours only": "neighbours", "classifier only": "classifier"}
        if model is not None and not model.blend:
            rankers["blend (forced)"] = "blend"
        blends.append(None if model is None else "playlist" if model.blend else "blend (forced)")
        for name, scorer in rankers.items():
            if model is None and scorer == "classifier":
                continue
            m = model
            if name == "blend (forced)":
                m = RatingModel(model.kind, model.arrays, {**model.info, "blend": True})
            ranking = build(visible, m, max(TOPS), scorer)
            keys = [t.key for t in ranking.tracks]
            row = split[name] = {}
            for top in TOPS:
                row[f"top{top}_liked"] = float(sum(k in liked for k in keys[:top]))
                row[f"top{top}_disliked"] = float(sum(k in disliked for k in keys[:top]))
            if name == "playlist":
                counts["candidates"] += ranking.candidates
                rnd = split["random"] = {}
                for top in TOPS:
                    share = min(top, ranking.candidates) / max(ranking.candidates, 1)
                    rnd[f"top{top}_liked"] = share * len(liked)
                    rnd[f"top{top}_disliked"] = share * len(disliked)
        counts["hidden"] += len(hidden)
        counts["liked"] += len(liked)
        counts["disliked"] += len(disliked)
        verdict = "no classifier" if model is None else model.verdict
        gate[verdict] = gate.get(verdict, 0) + 1
        if model is not None and not model.blend:
            notes.append(f"split {s}: the playlist row is the neighbour votes alone, as `recsys playlist` would "
                         f"rank: {verdict}")
        elif model is not None and split["playlist"] == split["neighbours only"]:
            notes.append(f"split {s}: {verdict}, but at the playlist's weight (recommend.w_model against "
                         "recommend.w_knn) the hidden tracks in its top 20 and top 100 are those of the votes alone")
        if progress is not None:
            progress(f"split {s + 1}/{splits}: {len(hidden)} ratings hidden; {verdict} "
                     f"({time.perf_counter() - started:.0f} s)")
    names = list(dict.fromkeys(name for split in per_split for name in split))
    mean: dict[str, dict[str, float]] = {}
    stderr: dict[str, dict[str, float]] = {}
    for name in names:
        rows = [split[name] for split in per_split if name in split]
        for key in rows[0]:
            mean.setdefault(name, {})[key], stderr.setdefault(name, {})[key] = mean_se([r[key] for r in rows])
    return PlaylistEval(splits=splits, hidden=counts["hidden"] / splits, hidden_liked=counts["liked"] / splits,
                        hidden_disliked=counts["disliked"] / splits, candidates=counts["candidates"] / splits,
                        rankers=mean, stderr=stderr, comparisons=_compare(per_split, blends), notes=notes,
                        gate=gate)


