"""Candidates, scores and diversity: from the library's vectors and the owner's taste to an ordered playlist.

Score of a track = ``w_model`` * the classifier's predicted rating + ``w_knn`` * (its mean cosine similarity to the
taste profile's positive tracks minus its mean similarity to the disliked ones). Positives are the tracks rated 4 stars
or more and the most played of the unrated tracks (a rating overrides what plays suggest); disliked are the tracks rated
2 stars or less. With ``seeds`` the positives are the seed tracks instead (the playlist is built around them). The mean
similarity to a set is the dot product with the set's mean vector, so scoring 100,000 tracks is two matrix-vector
products.

Diversity is chosen by MMR over a shortlist of the best few thousand: each pick maximises ``lambda * relevance - (1 -
lambda) * max similarity to the tracks already picked``, subject to at most ``max_per_artist`` / ``max_per_album``
tracks, never the same artist twice in a row, and no duplicates (same normalised artist + title, or vectors with cosine
> 0.995). Whether a file exists is checked only for the tracks considered for picking (100,000 ``stat`` calls would cost
more than the rest together).

Mode ``uncertain`` ranks ALL unrated scored tracks by the classifier's uncertainty (not the top of the taste ranking)
and diversifies the same way: rating those tracks teaches the classifier most.

This module imports numpy (and faiss, through the classifier), never torch: the playlist command must start fast.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.errors import RecsysError
from recsys.library.track import Track, display_label
from recsys.recommender.classifier import RatingModel

LIKED = 0.8  # 4 stars and up
DISLIKED = 0.4  # 2 stars and below
TOP_PLAYED = 50
DUPLICATE_COS = 0.995
SHORTLIST_MIN = 2000
SHORTLIST_PER_PICK = 20
BECAUSE_N = 2
MODES = ("taste", "uncertain")


class RankError(RecsysError):
    """The ranking cannot be built from what the user gave."""


@dataclass
class RankedTrack:
    key: str
    path: str
    start_s: float
    score: float
    predicted: float | None
    artist: str
    title: str
    album: str
    track_number: int | None
    duration_s: float | None
    because: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return display_label(self.artist, self.title, self.path, self.start_s)


def _take(meta: Any, name: str, rows: np.ndarray) -> list:
    """Values of column ``name`` at ``rows`` from a pyarrow Table or a dict of lists (None when absent)."""
    if isinstance(meta, dict):
        column = meta.get(name)
        return [None] * len(rows) if column is None else [column[i] for i in rows]
    if name not in meta.column_names:
        return [None] * len(rows)
    column = meta.column(name)
    return [column[int(i)].as_py() for i in rows]  # ChunkedArray.take would import pyarrow.compute and pandas (~0.3 s)


def _norm(text: str | None) -> str:
    text = unicodedata.normalize("NFKC", text or "").casefold()
    return re.sub(r"\W+", " ", text).strip()


def _profile(tracks: Sequence[Track], row_of: dict[str, int], seeds: Sequence[str]
             ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the positive tracks and of the disliked ones."""
    disliked = [row_of[t.key] for t in tracks if t.rating is not None and t.rating <= DISLIKED and t.key in row_of]
    if seeds:
        missing = [s for s in seeds if s not in row_of]
        if missing:
            raise RankError(f"seed track {missing[0]} has no vector: check the path, or run `recsys embed` first")
        return np.array([row_of[s] for s in seeds]), np.array(disliked, dtype=np.int64)
    liked = {row_of[t.key] for t in tracks if t.rating is not None and t.rating >= LIKED and t.key in row_of}
    # an explicit rating speaks for itself: play counts add taste only for tracks the owner never rated
    played = sorted((t for t in tracks if t.playcount > 0 and t.key in row_of and t.rating is None),
                    key=lambda t: -t.playcount)[:TOP_PLAYED]
    liked |= {row_of[t.key] for t in played}
    return np.array(sorted(liked), dtype=np.int64), np.array(disliked, dtype=np.int64)


def _taste(vectors: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    score = np.zeros(len(vectors), dtype=np.float32)
    if len(pos):
        score += vectors @ vectors[pos].mean(axis=0)
    if len(neg):
        score -= vectors @ vectors[neg].mean(axis=0)
    return score


def _mmr(vectors: np.ndarray, short: np.ndarray, relevance: np.ndarray, artists: list[str], albums: list[str],
         titles: list[str], paths: list[str], top_n: int, lam: float, max_per_artist: int, max_per_album: int,
         exists: Callable[[str], bool]) -> list[int]:
    """Positions in ``short`` picked greedily by MMR under the diversity rules."""
    cand = vectors[short]
    rel = relevance - relevance.min()
    rel = rel / rel.max() if rel.max() > 0 else rel
    max_sim = np.full(len(short), -1.0, dtype=np.float32)
    alive = np.ones(len(short), dtype=bool)
    per_artist: dict[str, int] = {}
    per_album: dict[str, int] = {}
    seen_titles: set[str] = set()
    picked: list[int] = []
    last_artist: str | None = None
    while len(picked) < top_n and alive.any():
        gain = lam * rel - (1.0 - lam) * np.maximum(max_sim, 0.0)
        gain[~alive] = -np.inf
        choice = None
        for i in np.argsort(-gain, kind="stable"):
            if not alive[i]:
                break
            artist, album = artists[i], albums[i]
            dup_key = f"{artist}\x00{titles[i]}"
            if (max_sim[i] > DUPLICATE_COS or (titles[i] and dup_key in seen_titles)
                    or (artist and per_artist.get(artist, 0) >= max_per_artist)
                    or (album and per_album.get(album, 0) >= max_per_album) or not exists(paths[i])):
                alive[i] = False
                continue
            if artist and artist == last_artist:
                continue  # allowed later, just not right after the same artist
            choice = int(i)
            break
        if choice is None:
            break
        picked.append(choice)
        alive[choice] = False
        seen_titles.add(f"{artists[choice]}\x00{titles[choice]}")
        if artists[choice]:
            per_artist[artists[choice]] = per_artist.get(artists[choice], 0) + 1
        if albums[choice]:
            per_album[albums[choice]] = per_album.get(albums[choice], 0) + 1
        last_artist = artists[choice]
        np.maximum(max_sim, cand @ cand[choice], out=max_sim)
    return picked


def rank(lib: Any, tracks: Sequence[Track], model: RatingModel | None, *, top_n: int = 100, mode: str = "taste",
         seeds: Sequence[str] = (), include_rated: bool = False, min_rating: float | None = None,
         max_per_artist: int = 3, max_per_album: int = 3, mmr_lambda: float = 0.7, w_model: float = 0.6,
         w_knn: float = 0.4, exists: Callable[[str], bool] = os.path.exists) -> list[RankedTrack]:
    """The ``top_n`` recommended tracks, best first; ``lib`` has ``keys``, ``vectors`` (L2-normalised) and ``meta``."""
    if mode not in MODES:
        raise RankError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "uncertain" and model is None:
        raise RankError("mode 'uncertain' needs a classifier: run `recsys train-classifier` first")
    if min_rating is not None and model is None:
        raise RankError("--min-rating needs a classifier: run `recsys train-classifier` first, or drop --min-rating")
    vectors = np.asarray(lib.vectors, dtype=np.float32)
    if len(vectors) == 0:
        raise RankError("the library has no vectors: run `recsys embed` first")
    row_of = {k: i for i, k in enumerate(lib.keys)}
    pos, neg = _profile(tracks, row_of, seeds)
    if model is None and not len(pos):
        raise RankError("no liked or played tracks to learn your taste from: rate some tracks in your player, "
                        "pass --seed, or run `recsys train-classifier`")

    predicted = model.predict(vectors) if model is not None else None
    candidate = np.ones(len(vectors), dtype=bool)
    if not include_rated:
        rated = [row_of[t.key] for t in tracks if t.rating is not None and t.key in row_of]
        candidate[rated] = False
    if len(seeds):
        candidate[pos] = False
    if min_rating is not None:
        candidate &= predicted >= min_rating

    if mode == "uncertain":
        relevance = model.uncertainty(vectors)
    else:
        relevance = np.zeros(len(vectors), dtype=np.float32)
        if predicted is not None:
            relevance += w_model * predicted
        if len(pos) or len(neg):
            relevance += w_knn * _taste(vectors, pos, neg)
    rows = np.flatnonzero(candidate)
    if not len(rows):
        return []
    size = min(len(rows), max(SHORTLIST_MIN, SHORTLIST_PER_PICK * top_n))
    short = rows[np.argpartition(-relevance[rows], size - 1)[:size]] if size < len(rows) else rows
    short = short[np.argsort(-relevance[short], kind="stable")]

    meta = lib.meta  # a snapshot builds this table on each access
    artist_raw = _take(meta, "artist", short)
    album_raw = _take(meta, "album", short)
    title_raw = _take(meta, "title", short)
    paths = _take(meta, "path", short)
    picked = _mmr(vectors, short, relevance[short], [_norm(a) for a in artist_raw], [_norm(a) for a in album_raw],
                  [_norm(t) for t in title_raw], paths, top_n, mmr_lambda, max_per_artist, max_per_album, exists)
    chosen = short[picked]
    starts = _take(meta, "start_s", chosen)
    numbers = _take(meta, "track_number", chosen)
    durations = _take(meta, "duration_s", chosen)
    because = _because(vectors, chosen, pos, lib.keys, tracks)
    return [RankedTrack(key=lib.keys[r], path=paths[j], start_s=float(starts[n] or 0.0), score=float(relevance[r]),
                        predicted=None if predicted is None else float(predicted[r]), artist=artist_raw[j] or "",
                        title=title_raw[j] or "", album=album_raw[j] or "", track_number=numbers[n],
                        duration_s=durations[n], because=because[n])
            for n, (j, r) in enumerate(zip(picked, chosen, strict=True))]


def _because(vectors: np.ndarray, chosen: np.ndarray, pos: np.ndarray, keys: Sequence[str],
             tracks: Sequence[Track]) -> list[list[str]]:
    """For each chosen track, the labels of the positive (liked, most played or seed) tracks closest to it."""
    if not len(pos) or not len(chosen):
        return [[] for _ in chosen]
    label = {t.key: t.label() for t in tracks}
    sims = vectors[chosen] @ vectors[pos].T
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :BECAUSE_N]
    return [[label.get(keys[pos[j]], keys[pos[j]]) for j in row] for row in nearest]
