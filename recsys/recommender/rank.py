"""Candidates, scores and playlist rules: from the library's vectors and the owner's taste to an ordered playlist.

Score. A track's score is the probability that the owner likes it. Two estimates on that one scale:
the neighbour votes of the rated (and often played) tracks (``recsys.recommender.neighbours``: for their nearest
tracks through the index and for the rest of their album and artist), and the classifier's
P(liked) (``recsys.recommender.models``). The blend is their weighted mean, ``(w_model * p_model + w_knn * p_knn) /
(w_model + w_knn)``; when the classifier was not shown better than chance (or there is none), the votes alone rank.
With ``seeds`` the seed tracks are the liked evidence instead of the ratings (the playlist is built around them).
``scorer`` forces "neighbours" or "classifier" alone (``recsys eval --playlist`` compares them).

At most ``max_voters`` rated tracks vote (the strongest ratings first): the search is the playlist's largest cost.

Candidates: embedded tracks the owner has not rated (``include_rated`` adds them) and has not played
``played_min`` times or more (``include_played`` adds them: a track you play often is not a recommendation),
predicted at least ``min_rating`` when given (``shown_rating`` of the like-probability: the stars shown are that
probability's, never a second model's), whose file exists (checked only for the tracks considered), and that is
no copy of a track left out for its rating or plays (one recording by the lists' rule below, ``COPY``: a copy of a
track the owner rated is no discovery; ``include_rated`` lets the rated ones' copies in).

The evidence rule (taste mode; None turns it off): a candidate must get more than ``min_liked_share`` of its
neighbour, album and artist votes from liked evidence (0.5: the liked evidence outweighs the not-liked; a track
no evidence reaches has none). The share is taken before the shrinkage of the like-probability, so that one liked
track vouches for its neighbours. Without the rule, once the caps had used up the albums the owner likes, the list
filled with whatever came next, tracks the owner's own ratings argue against among them; a shorter playlist is the
honest answer, and ``Ranking.stopped`` names the rule. And a candidate that shares no album or artist with a liked
track -- one its sound alone recommends -- needs at least ``min_audio_votes`` of liked votes through the index
(4.0: about four liked tracks it is among the nearest of): a few liked tracks' neighbourhoods are a weak guess, and
on the development corpus such tracks were most of the other soundtracks' tracks in a taste playlist, disliked ones
among them; the more ratings, the more liked votes every track gets: for owners of 43-49 ratings, at 2.0 the top 20
held under 90 % liked-style tracks in 17-36 % of the development draws, at 4.0 in 2-4 % (benchmarks/RESULTS.md).
Nor is such a track recommended when the owner has rated tracks of its album or artist and liked none of them
(``block_unliked_albums``): their own judgement of that album outweighs a guess from its sound; on the development
corpus that took most of the other soundtracks' tracks out of the playlists of owners whose liked soundtracks are
small. A loose file -- untagged in a folder that is no album (``recsys.library.groups.loose_folders``: the root of a
flat "Downloads" library, a folder of more files than an album holds), so of no album and no artist -- is exempt from
``min_audio_votes``: nothing but its sound can ever vouch for it, and in a library of such files the rule would leave
no playlist at all; it is held to ``min_liked_share``.
``--mode uncertain`` is exempt (its point is the tracks in between), and so are a playlist around seeds (asked for
by name) and the classifier alone (``scorer`` "classifier", what ``eval --playlist`` compares: it is the judgement
of tracks no rated track reaches).

Caps scale with the taste (``scale_caps``): raised to ``top_n`` / the number of albums (artists) of the liked
evidence when that is more, so a taste of two albums can fill the playlist; seeds keep the caps as given.

Rules. MMR over a shortlist of the best few thousand: each pick maximises ``lambda * score - (1 - lambda) * its
highest cosine to a track already picked``, subject to at most ``max_per_artist`` / ``max_per_album`` tracks, the
same artist twice in a row only when no other artist is among the next ``SAME_ARTIST_LOOKAHEAD`` candidates (the
rule reorders, it never drops a track), and no recording twice (the same performer and title, or
``recsys.library.groups.one_recording_with``: close vectors whose files' fingerprints agree, compared through
``lib.agreement`` when the snapshot carries it, ``recsys.app.output.with_fingerprints``). Albums
are those of ``recsys.library.groups.album_of``, the album artist read from the live ``library`` as the votes read
it (a compilation is one album under its cap); the artist of the cap is the performer (``artist_of`` without the
album artist: twelve singers of a compilation are twelve artists, and may follow each other). Untagged tracks are
capped too: the folder stands in for a missing album, the album folder's parent for a missing artist (not the
library's root folder, nor a loose folder: a flat library is not one album capped at three tracks). When the
playlist comes out shorter than asked, ``Ranking.stopped`` says which rule stopped it and how many candidates each
rule removed.

Fresh playlists: ``rested`` tracks (those of the owner's recent playlists of the same taste, ``recsys.home.recent``)
are pushed below every other candidate the rules keep, not left out: a small library still fills the playlist.

This module imports numpy and faiss, never torch: the playlist command must start fast.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from itertools import islice, repeat
from typing import Any

import numpy as np

from recsys.choices import RANK_MODES
from recsys.errors import RecsysError
from recsys.library.catalogue import Catalogue
from recsys.library.groups import (
    DUPLICATE_CANDIDATE_COS,
    Agreement,
    album_of,
    artist_of,
    one_recording_with,
    recording_key,
)
from recsys.library.text import tag_key
from recsys.library.track import Labelled, Track
from recsys.recommender.labels import LIKED, collect_labels
from recsys.recommender.neighbours import (
    ALPHA,
    PRIOR,
    Groups,
    Search,
    evidence_weights,
    exact_search,
    library_groups,
    neighbourhoods,
    shared_voters,
    vote,
)
from recsys.recommender.persistence import RatingModel

DISLIKED = 0.4  # 2 stars and below
SHORTLIST_MIN = 2000
MMR_HEAD = 64  # candidates ordered per MMR pick (a partition); the rest only when these run out
SAME_ARTIST_LOOKAHEAD = 3  # candidates, in MMR order, looked past for another artist before one plays twice in a row
SHORTLIST_PER_PICK = 20
COPY_BATCH = 64  # shortlisted candidates whose owned copies one matrix product finds (``_OwnedCopies``) ...
GUESS_PASSES = 3  # ... once MMR has run this many passes that guessed them
OWNED_BLOCK = 16384  # owned vectors gathered for one product
COPY_MARGIN = 1e-4  # cosine below DUPLICATE_CANDIDATE_COS still handed to one_recording_with (rounding of a product)
EXPLAIN_N = 2
MODES = RANK_MODES
SCORERS = ("blend", "neighbours", "classifier")
WEAK = "too little liked evidence"
AUDIO_ONLY = "too few liked votes for a track recommended on its sound alone"
UNLIKED = "its album or artist is rated and none of it liked"
COPY = "copy of a track you rated or play often"


class RankError(RecsysError):
    """The ranking cannot be built from what the user gave."""


@dataclass(frozen=True)
class RankSettings:
    """The ranking's knobs, one typed section: the settings' ``recommend.*`` of the same names and the
    classifier's ``knn_k`` (``neighbours_k``) and ``pseudo_until``. No defaults here: ``recsys/config.py`` and
    ``recsys/default.yaml`` are their one home, and ``recsys.app.ranking.rank_settings`` builds this from the
    settings (a request's ``--top-n`` or caps replace fields of it). ``min_liked_share`` None turns the evidence
    rule off (the settings never do; tests and benchmarks compare with it off)."""

    top_n: int  # the playlist's length
    max_per_artist: int
    max_per_album: int
    mmr_lambda: float  # MMR: relevance against variety
    w_model: float  # the blend's weight of the classifier ...
    w_knn: float  # ... and of the neighbour votes
    played_min: int  # plays from which an unrated track is no candidate (without include_played)
    max_voters: int  # the strongest rated tracks that vote
    neighbours_k: int  # neighbours each voter reaches through the index
    pseudo_until: int  # below this many ratings, often played tracks count as liked (``labels.collect_labels``)
    album_vote: float  # the weight of a vote for the rest of a voter's album ...
    artist_vote: float  # ... and of its artist
    min_liked_share: float | None  # the evidence rule (None: off)
    min_audio_votes: float  # liked votes a track recommended on its sound alone needs
    block_unliked_albums: bool
    scale_caps: bool  # raise the caps to the liked evidence's albums and artists (never with caps asked for)


@dataclass
class Near:
    """A rated track an explanation rests on."""

    label: str
    stars: float
    similarity: float

    def as_json(self) -> dict:
        return {"track": self.label, "stars": round(self.stars, 1), "similarity": round(self.similarity, 3)}


@dataclass
class RankedTrack(Labelled):
    key: str
    path: str
    start_s: float
    score: float
    predicted: float | None  # shown_rating(like): in [0, 1] (0.2 per star); None outside a ranking
    artist: str
    title: str
    album: str
    track_number: int | None
    duration_s: float | None
    because: list[str] = field(default_factory=list)  # labels of the nearest liked (or seed) tracks
    like: float | None = None  # the blended like-probability (the score in taste mode)
    like_model: float | None = None
    like_neighbours: float | None = None
    near_liked: list[Near] = field(default_factory=list)
    near_disliked: list[Near] = field(default_factory=list)
    album_voters: tuple[int, int] = (0, 0)  # liked and not-liked rated (or often played) tracks of its album
    artist_voters: tuple[int, int] = (0, 0)  # ... and of its artist
    rating: float | None = None  # the owner's own rating, in [0, 1], when they rated it (radio, seeds, include_rated)

    @property
    def shown(self) -> float | None:
        """The stars shown, in [0, 1]: the owner's own rating where there is one, else ``predicted``. A radio
        around a song once showed 3.0* on a track its owner rated 5*: the seeded like-probability is right for the
        order, but a prediction that contradicts the owner's own stars reads as a mistake."""
        return self.rating if self.rating is not None else self.predicted

    @property
    def shown_from(self) -> str | None:
        """Whose stars ``shown`` are: "rating" (the owner's), "prediction" (``shown_rating``), None (neither)."""
        return "rating" if self.rating is not None else None if self.predicted is None else "prediction"


@dataclass
class Ranking:
    tracks: list[RankedTrack]
    scorer: str  # what ranked: 'blend (logistic + neighbours)', 'neighbours', ...
    candidates: int  # tracks that were candidates at all
    stopped: str | None = None  # why the playlist is shorter than asked
    removed: dict[str, int] = field(default_factory=dict)
    rested: int = 0  # candidates that rested (of recent playlists) and were not needed to fill this one


def _take(meta: Any, name: str, rows: np.ndarray) -> list:
    """Values of column ``name`` at ``rows`` from a pyarrow Table, an index snapshot or a dict of lists (None when
    absent)."""
    if isinstance(meta, dict):
        column = meta.get(name)
        return [None] * len(rows) if column is None else [column[i] for i in rows]
    if name not in meta.column_names:
        return [None] * len(rows)
    column = meta.column(name)
    return [column[int(i)].as_py() for i in rows]  # ChunkedArray.take would import pyarrow.compute and pandas (~0.3 s)


@dataclass
class _Rules:
    top_n: int
    lam: float
    max_per_artist: int
    max_per_album: int
    exists: Callable[[str], bool]
    min_liked_share: float = 0.5
    min_audio_votes: float = 0.0
    block_unliked_albums: bool = False


def _mmr(vectors: np.ndarray, short: np.ndarray, relevance: np.ndarray, artists: list[str], albums: list[str],
         recordings: list[str], paths: list[str], rules: _Rules,
         seeds: Sequence[int] = (), seed_recordings: Sequence[str] = (),
         agreement: Agreement | None = None, owned: np.ndarray | None = None,
         owned_recordings: Collection[str] = ()) -> tuple[list[int], Counter[str]]:
    """Positions in ``short`` picked greedily by MMR under the rules, and how many candidates each rule removed.

    A candidate that is one recording with a seed row (the track the radio plays) is a duplicate too; closeness
    to the seeds is not penalised (a playlist around seeds should sound like them). Only a candidate within
    ``DUPLICATE_CANDIDATE_COS`` of a picked or seed track is judged by ``one_recording_with`` (``agreement``).
    A candidate that is one recording (the same rule) with one of the ``owned`` rows (the rated or often played
    tracks that are no candidates; ``owned_recordings`` their performer-and-title keys) is removed as a ``COPY``:
    a copy of a track the owner rated is not a discovery, however near it sounds to the liked ones."""
    cand = vectors[short]
    seed_sim = (np.max(cand @ np.asarray(vectors[list(seeds)], dtype=np.float32).T, axis=1) if len(seeds)
                else np.full(len(short), -1.0, dtype=np.float32))
    owned = np.zeros(0, dtype=np.int64) if owned is None else np.asarray(owned, dtype=np.int64)
    copies = _OwnedCopies(vectors, cand, owned)

    def copy_of_owned(i: int, upcoming: np.ndarray, alive: np.ndarray) -> bool:
        if recordings[i] and recordings[i] in owned_recordings:
            return True
        if not len(owned):
            return False
        near = copies.near(i, upcoming, alive)
        return bool(len(near)) and one_recording_with(vectors, int(short[i]), near, agreement)

    rules = dataclasses.replace(rules, exists=functools.cache(rules.exists))  # every pass sees the same files
    while True:  # a pass that guessed (``_OwnedCopies``) is run again once its guesses are known
        picked, removed = _mmr_pass(vectors, short, cand, relevance, seed_sim, artists, albums, recordings, paths,
                                    rules, seeds, seed_recordings, agreement, copy_of_owned)
        if not copies.guessed():
            return picked, removed


def _mmr_pass(vectors: np.ndarray, short: np.ndarray, cand: np.ndarray, relevance: np.ndarray, seed_sim: np.ndarray,
              artists: list[str], albums: list[str], recordings: list[str], paths: list[str], rules: _Rules,
              seeds: Sequence[int], seed_recordings: Sequence[str], agreement: Agreement | None,
              copy_of_owned: Callable[[int, np.ndarray, np.ndarray], bool]) -> tuple[list[int], Counter[str]]:
    """One run of ``_mmr``'s greedy picks; ``copy_of_owned(position, the positions in MMR order from it, alive)``."""
    rel = np.asarray(relevance, dtype=np.float32)
    max_sim = np.full(len(short), -1.0, dtype=np.float32)
    alive = np.ones(len(short), dtype=bool)
    per_artist: Counter[str] = Counter()
    per_album: Counter[str] = Counter()
    seen_recordings: set[str] = set(seed_recordings) - {""}
    removed: Counter[str] = Counter()
    picked: list[int] = []
    last_artist: str | None = None
    while len(picked) < rules.top_n and alive.any():
        gain = rules.lam * rel - (1.0 - rules.lam) * np.maximum(max_sim, 0.0)
        gain[~alive] = -np.inf
        choice = fallback = None
        waited = 0
        ranked, at = _best_first(gain, MMR_HEAD), 0
        while True:
            if at == len(ranked):  # past the head: the whole order (the head is its beginning)
                if len(ranked) == len(gain):
                    break
                ranked = np.argsort(-gain, kind="stable")
            i = int(ranked[at])
            at += 1
            if not alive[i]:
                break
            artist, album = artists[i], albums[i]
            reason = None
            if (recordings[i] and recordings[i] in seen_recordings) or (
                    max(max_sim[i], seed_sim[i]) >= DUPLICATE_CANDIDATE_COS
                    and one_recording_with(vectors, int(short[i]), [*short[picked].tolist(), *seeds], agreement)):
                reason = "duplicate"
            elif copy_of_owned(i, ranked[at - 1:], alive):
                reason = COPY
            elif artist and per_artist[artist] >= rules.max_per_artist:
                reason = "artist cap"
            elif album and per_album[album] >= rules.max_per_album:
                reason = "album cap"
            elif not rules.exists(paths[i]):
                reason = "missing file"
            if reason:
                alive[i] = False
                removed[reason] += 1
                continue
            if artist and artist == last_artist:  # look a little further for another artist to put between
                fallback = i if fallback is None else fallback
                waited += 1
                if waited > SAME_ARTIST_LOOKAHEAD:
                    break
                continue
            choice = i
            break
        if choice is None:
            choice = fallback  # only this artist is near enough: the same artist again, rather than nothing
        if choice is None:
            break
        picked.append(choice)
        alive[choice] = False
        seen_recordings.add(recordings[choice])
        per_artist[artists[choice]] += 1 if artists[choice] else 0
        per_album[albums[choice]] += 1 if albums[choice] else 0
        last_artist = artists[choice]
        np.maximum(max_sim, cand @ cand[choice], out=max_sim)
    return picked, removed


def _best_first(values: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` positions (more where values tie at the n-th) of ``np.argsort(-values, kind="stable")``: the
    values up to the n-th largest, in that order, from a partition instead of a sort of them all."""
    if n >= len(values):
        return np.argsort(-values, kind="stable")
    negative = -values
    head = np.flatnonzero(negative <= np.partition(negative, n - 1)[n - 1])  # ties at the n-th: all of them
    if len(head) < n:  # NaN among the first n (it sorts last): the whole sort
        return np.argsort(-values, kind="stable")
    return head[np.argsort(negative[head], kind="stable")]


class _OwnedCopies:
    """The ``owned`` rows (rated or often played: no candidates) within ``DUPLICATE_CANDIDATE_COS`` of each shortlisted
    candidate, found a batch of candidates at a time: one matrix product against the owned vectors costs a tenth of
    a product per candidate (200,000 owned rows at a million tracks), but only for the candidates that MMR asks
    about, a hundred-odd of the shortlist, and which those are depends on the answers.

    So the first pass guesses: a candidate not computed yet is taken for no copy and noted; when the pass ends, the
    noted ones are computed in one product and ``_mmr`` runs again. Copies are rare, so the second pass is almost
    always the last (it asks exactly what the first did). From the ``GUESS_PASSES``-th pass on, a question is
    answered at once, with the next ``COPY_BATCH`` alive candidates in MMR order in the same product. The rows come a
    little wider than the threshold (``one_recording_with`` applies it again on its own cosines), in row order."""

    def __init__(self, vectors: np.ndarray, cand: np.ndarray, owned: np.ndarray) -> None:
        self._vectors, self._cand, self._owned = vectors, cand, owned
        self._near: dict[int, np.ndarray] = {}
        self._pending: dict[int, None] = {}
        self._passes = 1

    def near(self, i: int, upcoming: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """The owned rows near candidate ``i`` (a position in the shortlist): none for now where this pass guesses.
        ``upcoming``: the positions in MMR order from ``i``, those ``alive`` answered with it when it is computed."""
        if i in self._near:
            return self._near[i]
        if self._passes < GUESS_PASSES:
            self._pending[i] = None
            return self._owned[:0]
        self._compute([i, *islice((j for j in upcoming[alive[upcoming]].tolist() if j != i and j not in self._near),
                                  COPY_BATCH - 1)])
        return self._near[i]

    def guessed(self) -> bool:
        """Whether the pass just run guessed (then its guesses are computed now, for the next pass)."""
        self._passes += 1
        if not self._pending:
            return False
        self._compute(list(self._pending))
        self._pending.clear()
        return True

    def _compute(self, batch: list[int]) -> None:
        queries = self._cand[batch].T
        hits, which = [], []
        for start in range(0, len(self._owned), OWNED_BLOCK):  # a block at a time: no copy of 200,000 vectors
            rows = self._owned[start:start + OWNED_BLOCK]
            near, of = np.nonzero(np.asarray(self._vectors[rows], dtype=np.float32) @ queries
                                  >= DUPLICATE_CANDIDATE_COS - COPY_MARGIN)
            hits.append(rows[near])
            which.append(of)
        found, of = np.concatenate(hits), np.concatenate(which)
        order = np.argsort(of, kind="stable")  # per candidate, its owned rows in row order
        bounds = np.searchsorted(of[order], np.arange(len(batch) + 1))
        for k, j in enumerate(batch):
            self._near[j] = found[order[bounds[k]:bounds[k + 1]]]


def _stop_reason(n: int, top_n: int, candidates: int, shortlisted: int, removed: Counter[str],
                 rules: _Rules) -> str | None:
    if n >= top_n:
        return None
    if not candidates:
        return "no candidate is left (every embedded track is rated, played often, missing or filtered)"
    names = {"album cap": f"album cap (--max-per-album {rules.max_per_album})",
             "artist cap": f"artist cap (--max-per-artist {rules.max_per_artist})",
             WEAK: f"evidence rule (recommend.min_liked_share {rules.min_liked_share:g})",
             AUDIO_ONLY: f"evidence rule for sound alone (recommend.min_audio_votes {rules.min_audio_votes:g})",
             UNLIKED: "evidence rule for albums you rated (recommend.block_unliked_albums)",
             COPY: "copies of tracks you rated or play often (one recording: --include-rated lets them in)"}
    parts = [f"{names.get(k, k)} {v}" for k, v in removed.most_common()]
    main = removed.most_common(1)[0][0] if removed else "too few candidates"
    if main == WEAK:
        names = {**names, WEAK: "evidence rule: no other candidate gets more than "
                                f"{rules.min_liked_share:.0%} of its votes from tracks you like "
                                "(recommend.min_liked_share)"}
    elif main == AUDIO_ONLY:
        names = {**names, AUDIO_ONLY: "evidence rule: no other track that shares no album or artist with one you "
                                      f"like gets {rules.min_audio_votes:g} liked votes through its sound "
                                      "(recommend.min_audio_votes)"}
    elif main == UNLIKED:
        names = {**names, UNLIKED: "evidence rule: every other track its sound recommends is of an album or artist "
                                   "you rated without liking any of it (recommend.block_unliked_albums)"}
    tail = f"; {shortlisted - n - sum(removed.values())} were never reached" if shortlisted < candidates else ""
    return (f"{n} of {top_n} tracks: stopped by the {names.get(main, main)}; of {candidates} candidates "
            + (", ".join(parts) + " removed" if parts else "none was removed") + tail)


def _evidence(lib: Any, tracks: Sequence[Track], seeds: Sequence[str], pseudo_until: int, library: Catalogue,
              row_of: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, liked (0/1) and weights of the voting tracks: the labels, or the seeds and the disliked ratings."""
    labels = collect_labels(lib.keys, tracks, pseudo_until, library, row_of)
    if not seeds:
        return labels.rows, labels.liked, evidence_weights(labels)
    missing = [s for s in seeds if s not in row_of]
    if missing:
        raise RankError(f"seed track {missing[0]} has no vector: check the path, or run `recsys embed` first")
    # around seeds: the seeds are the liked evidence, the disliked ratings still vote against their neighbours
    disliked = labels.subset(labels.explicit & (labels.targets <= DISLIKED + 1e-6))
    rows = np.concatenate([np.array([row_of[s] for s in seeds], dtype=np.int64), disliked.rows])
    liked = np.concatenate([np.ones(len(seeds)), np.zeros(len(disliked.rows))])
    weights = np.concatenate([np.ones(len(seeds)), evidence_weights(disliked)])
    return rows, liked, weights


def _strongest(rows: np.ndarray, liked: np.ndarray, weights: np.ndarray, most: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At most ``most`` voters: the heaviest (5 and 1 stars first), the earliest listed among equals.

    The search costs about 0.3 ms per voter at 100,000 tracks (HNSW, 2 cores): 5,000 ratings would take the whole
    playlist budget. Past ``most`` ratings the classifier, fit on all of them, carries the rest.
    """
    if len(rows) <= most:
        return rows, liked, weights
    keep = np.sort(np.argsort(-weights, kind="stable")[:most])
    return rows[keep], liked[keep], weights[keep]


def _scaled_caps(keys: Sequence[str], tracks: Sequence[Track], liked_rows: np.ndarray, root: str,
                 loose: frozenset[str], top_n: int, max_per_artist: int, max_per_album: int) -> tuple[int, int]:
    """The caps raised to ``ceil(top_n / albums)`` (and ``/ artists``) of the liked evidence, never lowered.

    A taste that lies in two albums cannot fill a playlist at 3 tracks per album: with the evidence rule the list
    would stop at six-odd tracks although the owner's own ratings vouch for the rest of those albums. A taste spread
    over 40 albums keeps the configured caps (100 / 40 < 3), so variety stays where there is variety to keep.
    """
    wanted = {keys[r] for r in np.asarray(liked_rows).tolist()}
    mine = [t for t in tracks if t.key in wanted]
    albums = {album_of(t.album, t.albumartist, t.artist, t.path, loose) for t in mine} - {""}
    artists = {artist_of(t.artist, t.albumartist, t.path, root, loose) for t in mine} - {""}
    return (max(max_per_artist, -(-top_n // len(artists))) if artists else max_per_artist,
            max(max_per_album, -(-top_n // len(albums))) if albums else max_per_album)


def rank(lib: Any, tracks: Sequence[Track], model: RatingModel | None, settings: RankSettings, *, mode: str = "taste",
         seeds: Sequence[str] = (), include_rated: bool = False, include_played: bool = False,
         min_rating: float | None = None, scorer: str = "blend", search: Search | None = None,
         exists: Callable[[str], bool] = os.path.exists, allowed: np.ndarray | None = None,
         library: Catalogue | None = None, boost: np.ndarray | None = None, rested: Collection[str] = ()) -> Ranking:
    """The ``top_n`` recommended tracks, best first; ``lib`` has ``keys``, ``vectors`` (L2-normalised) and ``meta``.

    ``tracks`` need be only those with a rating, plays or skips (``Track.has_history``) when ``library`` holds every
    track of the library (its album and artist votes, its root folder); without it ``tracks`` are the library.

    ``search(queries, k) -> (cosines, rows)`` finds neighbours (the snapshot's FAISS index; default exact).
    ``allowed`` (a boolean per row, e.g. the ``--where`` filter's mask) keeps only those rows as candidates; every
    rated track still votes. ``rested`` (track keys: those of recent playlists, ``recsys.home.recent``) come after
    every other candidate that passes the rules: the playlist holds them only where the others cannot fill it.
    ``boost`` (a factor per row, e.g. a tag's probability) multiplies the relevance the order follows.
    ``settings`` holds the knobs (:class:`RankSettings`); the rest is this request's.
    """
    top_n, max_per_artist, max_per_album, mmr_lambda = (settings.top_n, settings.max_per_artist,
                                                        settings.max_per_album, settings.mmr_lambda)
    w_model, w_knn, played_min, max_voters = settings.w_model, settings.w_knn, settings.played_min, settings.max_voters
    neighbours_k, pseudo_until = settings.neighbours_k, settings.pseudo_until
    album_vote, artist_vote, min_liked_share = settings.album_vote, settings.artist_vote, settings.min_liked_share
    min_audio_votes, block_unliked_albums = settings.min_audio_votes, settings.block_unliked_albums
    scale_caps = settings.scale_caps
    if mode not in MODES:
        raise RankError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if scorer not in SCORERS:
        raise RankError(f"unknown scorer {scorer!r}: choose one of {', '.join(SCORERS)}")
    if model is None and scorer == "classifier":
        raise RankError("the classifier alone needs a classifier: run `recsys train-classifier` first")
    vectors = np.asarray(lib.vectors, dtype=np.float32)
    if len(vectors) == 0:
        raise RankError("the library has no vectors: run `recsys embed` first")
    n = len(vectors)
    library = Catalogue.of(tracks) if library is None else library
    row_of = dict(zip(lib.keys, range(len(lib.keys)), strict=True))  # a million keys: zip, not a comprehension
    evidence, liked, weights = _strongest(*_evidence(lib, tracks, seeds, pseudo_until, library, row_of), max_voters)
    if model is None and not liked.any():
        raise RankError("no liked or often played tracks to learn your taste from: rate some tracks 4 stars or "
                        "more in your player, pass --seed, or run `recsys train-classifier`")

    hoods = neighbourhoods(search or exact_search(vectors), vectors, evidence, neighbours_k)
    root, loose = library.root, library.loose
    voting = album_vote > 0 or artist_vote > 0
    groups = library_groups(lib.keys, row_of, library, root, evidence, loose) if voting else None
    p_knn, support = vote(hoods, evidence, liked, weights, n, groups=groups, album_vote=album_vote,
                           artist_vote=artist_vote)
    use_model = model is not None and (scorer == "classifier" or (scorer == "blend" and model.blend))
    p_model = model.snapshot_probability(vectors, getattr(lib, "folder", None)) if use_model else None
    if scorer == "neighbours" or p_model is None:
        like, how = p_knn, "neighbours"
    elif scorer == "classifier":
        like, how = p_model, model.kind
    else:
        like, how = (w_model * p_model + w_knn * p_knn) / (w_model + w_knn), f"blend ({model.kind} + neighbours)"
    predicted = shown_rating(like)

    candidate = np.ones(n, dtype=bool)
    left_out = [t.key for t in tracks if (t.rating is not None and not include_rated)
                or (t.rating is None and t.playcount >= played_min and not include_played)]
    left_out_rows = np.fromiter(map(row_of.get, left_out, repeat(-1)), np.int64, len(left_out))
    candidate[left_out_rows[left_out_rows >= 0]] = False
    owned = np.flatnonzero(~candidate)  # rated (or often played) and left out: so are their copies (``_mmr``)
    if len(seeds):
        candidate[[row_of[s] for s in seeds]] = False
    if min_rating is not None:
        candidate &= predicted >= min_rating
    if allowed is not None:
        candidate &= allowed
    relevance = uncertainty(like, support) if mode == "uncertain" else like
    if boost is not None:  # e.g. `playlist --tag`: the order is the taste times the tag's probability
        relevance = relevance * boost
    rows = np.flatnonzero(candidate)
    if scale_caps and mode == "taste" and not len(seeds):
        max_per_artist, max_per_album = _scaled_caps(lib.keys, tracks, evidence[liked > 0.5], root, loose, top_n,
                                                     max_per_artist, max_per_album)
    rules = _Rules(top_n, mmr_lambda, max_per_artist, max_per_album, exists, min_liked_share or 0.0, min_audio_votes,
                   block_unliked_albums)
    if not len(rows):
        return Ranking([], how, 0, _stop_reason(0, top_n, 0, 0, Counter(), rules))
    candidates = len(rows)
    removed: Counter[str] = Counter()
    if mode == "taste" and not len(seeds) and scorer != "classifier" and min_liked_share is not None:
        liked_votes = p_knn[rows] * (support[rows] + ALPHA) - ALPHA * PRIOR  # vote() shrinks toward the prior
        weak = liked_votes <= min_liked_share * support[rows] + 1e-6  # no vote at all is no evidence either
        sound_alone = ~weak & ~_in_groups_of(groups, evidence[liked > 0.5], rows)
        thin = sound_alone & (liked_votes < min_audio_votes - 1e-6)
        if thin.any():  # a loose file has nothing but its sound: the liked share alone judges it
            which = np.flatnonzero(thin)
            thin[which[_ungrouped(library, lib.keys, rows[which], root, loose)]] = False
        unliked = sound_alone & ~thin & (_in_groups_of(groups, evidence[liked <= 0.5], rows) if block_unliked_albums
                                         else False)
        for reason, mask in ((WEAK, weak), (AUDIO_ONLY, thin), (UNLIKED, unliked)):
            if mask.any():
                removed[reason] = int(mask.sum())
        rows = rows[~(weak | thin | unliked)]
        if not len(rows):
            return Ranking([], how, candidates, _stop_reason(0, top_n, candidates, candidates, removed, rules),
                           dict(removed))
    order = _rest(relevance, rows, lib.keys, rested, mmr_lambda)
    size = min(len(rows), max(SHORTLIST_MIN, SHORTLIST_PER_PICK * top_n))
    short = rows[np.argpartition(-order[rows], size - 1)[:size]] if size < len(rows) else rows
    short = short[np.argsort(-order[short], kind="stable")]

    # a snapshot (with ``column``) reads only the columns taken here; its ``meta`` would read every one of them
    meta = lib if hasattr(lib, "column") else lib.meta
    paths = _take(meta, "path", short)
    artist_raw, album_raw, title_raw = (_take(meta, c, short) for c in ("artist", "album", "title"))
    owners = library.albumartists_of(lib.keys[r] for r in short)  # the snapshot has no album-artist column
    artists = [artist_of(a, None, p, root, loose) for a, p in zip(artist_raw, paths, strict=True)]  # the performer
    albums = [album_of(al, aa, a, p, loose) for al, aa, a, p in zip(album_raw, owners, artist_raw, paths, strict=True)]
    recordings = [recording_key(a, t) for a, t in zip(artist_raw, title_raw, strict=True)]
    seed_rows = [row_of[s] for s in seeds]
    seed_recordings = [recording_key(a, t) for a, t in zip(_take(meta, "artist", seed_rows),
                                                             _take(meta, "title", seed_rows), strict=True)]
    owned_recordings = _owned_recordings(meta, owned, title_raw)
    picked, mmr_removed = _mmr(vectors, short, order[short], artists, albums, recordings, paths, rules,
                               seed_rows, seed_recordings, getattr(lib, "agreement", None), owned, owned_recordings)
    removed.update(mmr_removed)
    chosen = short[picked]
    starts, numbers, durations = (_take(meta, c, chosen) for c in ("start_s", "track_number", "duration_s"))
    if groups is None:
        album_voters = artist_voters = [(0, 0)] * len(chosen)
    else:
        album_voters = shared_voters(groups.album, evidence, liked, chosen)
        artist_voters = shared_voters(groups.artist, evidence, liked, chosen)
    near_liked, near_disliked = _nearest_rated(vectors, chosen, lib.keys, tracks, row_of, seeds)
    picked_keys = {lib.keys[r] for r in chosen.tolist()}
    ratings = {t.key: t.rating for t in tracks if t.rating is not None and t.key in picked_keys}
    out = [RankedTrack(key=lib.keys[r], path=paths[j], start_s=float(starts[i] or 0.0), score=float(relevance[r]),
                       predicted=float(predicted[r]), artist=artist_raw[j] or "",
                       title=title_raw[j] or "", album=album_raw[j] or "", track_number=numbers[i],
                       duration_s=durations[i], because=[x.label for x in near_liked[i]], like=float(like[r]),
                       like_model=None if p_model is None else float(p_model[r]), like_neighbours=float(p_knn[r]),
                       near_liked=near_liked[i], near_disliked=near_disliked[i], album_voters=album_voters[i],
                       artist_voters=artist_voters[i], rating=ratings.get(lib.keys[r]))
           for i, (j, r) in enumerate(zip(picked, chosen, strict=True))]
    shortlisted = len(short) + removed[WEAK] + removed[AUDIO_ONLY] + removed[UNLIKED]  # the evidence rule saw all
    resting = 0 if order is relevance else int((order[rows] < relevance[rows]).sum()) - int(
        (order[chosen] < relevance[chosen]).sum())
    return Ranking(out, how, candidates, _stop_reason(len(out), top_n, candidates, shortlisted, removed, rules),
                   dict(removed), resting)


def _owned_recordings(meta: Any, owned: np.ndarray, titles: Sequence[str | None]) -> set[str]:
    """The performer-and-title keys (``recording_key``) of the ``owned`` rows whose title is one of ``titles`` (the
    shortlist's): the only ones a candidate's key can equal. Every owned title is normalised (``tag_key`` uncached: a
    few hundred thousand distinct titles would only churn its cache), the artist only of those few."""
    wanted = {tag_key(t) for t in titles} - {""}
    owned_titles = _take(meta, "title", owned)
    normalised = map(getattr(tag_key, "__wrapped__", tag_key), owned_titles)
    same = np.fromiter(map(wanted.__contains__, normalised), bool, len(owned))
    which = np.flatnonzero(same)
    return {recording_key(a, owned_titles[j]) for a, j in zip(_take(meta, "artist", owned[which]), which.tolist(),
                                                              strict=True)} - {""}


def _rest(relevance: np.ndarray, rows: np.ndarray, keys: Sequence[str], rested: Collection[str],
          lam: float) -> np.ndarray:
    """``relevance`` with the ``rested`` tracks among ``rows`` pushed below every other: lowered by more than MMR's
    whole range (``lam * relevance`` in [0, lam], the variety term in [-(1 - lam), 0]), so MMR takes one only when no
    other candidate is left. Pushed down, not left out: resting never shortens a playlist they could fill."""
    if not rested:
        return relevance
    tired = np.fromiter((keys[r] in rested for r in rows.tolist()), dtype=bool, count=len(rows))
    if not tired.any():
        return relevance
    order = np.array(relevance, dtype=np.float64)
    order[rows[tired]] -= 2.0 + 2.0 / max(lam, 1e-3)
    return order


def _ungrouped(library: Catalogue, keys: Sequence[str], rows: np.ndarray, root: str,
               loose: frozenset[str]) -> np.ndarray:
    """For each of ``rows``: it has no album and no artist (``album_of``, ``artist_of``: an untagged file of a loose
    folder), so no rating of its album or artist can ever vouch for it. A bisection per row in the catalogue."""
    out = np.zeros(len(rows), dtype=bool)
    for j, i in enumerate(library.positions(keys[row] for row in rows.tolist())):
        if i >= 0:
            path, album, albumartist, artist = (library.paths[i], library.albums[i], library.albumartists[i],
                                                library.artists[i])
            out[j] = not album_of(album, albumartist, artist, path, loose) and not artist_of(artist, albumartist,
                                                                                             path, root, loose)
    return out


def shown_rating(like: np.ndarray) -> np.ndarray:
    """The predicted rating shown for a like-probability, in [0, 1] (0.2 per star): 1 star at 0, 3 at even odds,
    5 at certainty.

    One monotone function of the probability that ranked the track, so the stars and "like 87 %" can never
    disagree (a separate regression of the stars once printed 2.9 stars next to 87 %), and ``min_rating`` filters
    on that same quantity: ``--min-rating 4`` keeps the tracks of like-probability 75 % and up.
    """
    return (0.2 + 0.8 * np.clip(like, 0.0, 1.0)).astype(np.float32)


def uncertainty(like: np.ndarray, support: np.ndarray) -> np.ndarray:
    """How unsure the ranking is about each track, in [0, 1]: what ``--mode uncertain`` offers first.

    The uncertainty of the very probability shown (``like``: the votes' share shrunk toward ``PRIOR`` with
    ``ALPHA`` votes' worth, blended with the classifier as the playlist blends it), read as the mean of a Beta
    posterior whose weight is the votes' (``support``) plus the prior's: its standard deviation
    ``sqrt(p (1 - p) / (support + ALPHA + 1))``, scaled to 1 at even odds with no vote. One prior for both: a
    uniform one here once ranked first the tracks no vote reaches, which the playlist then showed at "like 0 %"
    (the prior's "not liked until the neighbours say so"). So what is offered is near even odds AND thinly voted;
    a track no rated track reaches is not liked by the shrinkage, not uncertain, and the unrated rest of an album
    the owner rated 19 times with 1-2 stars is judged, however unsure the classifier alone is.
    """
    p = np.clip(np.asarray(like, dtype=np.float64), 0.0, 1.0)
    weight = np.asarray(support, dtype=np.float64) + ALPHA
    return np.clip(2.0 * np.sqrt((ALPHA + 1.0) * p * (1.0 - p) / (weight + 1.0)), 0.0, 1.0).astype(np.float32)


def _in_groups_of(groups: Groups | None, evidence_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each of ``rows``: it is in the album or of the artist of one of ``evidence_rows`` (of a liked track: its
    votes are not its sound's alone; of a not-liked one: the owner has judged its album or artist)."""
    if groups is None or not len(evidence_rows):
        return np.zeros(len(rows), dtype=bool)
    out = np.zeros(len(rows), dtype=bool)
    for ids in (groups.album, groups.artist):
        mine = ids[evidence_rows]
        out |= np.isin(ids[rows], mine[mine >= 0])
    return out


def _nearest_rated(vectors: np.ndarray, chosen: np.ndarray, keys: Sequence[str], tracks: Sequence[Track],
                   row_of: dict[str, int], seeds: Sequence[str]) -> tuple[list[list[Near]], list[list[Near]]]:
    """For each chosen track, the nearest liked (or seed) and the nearest disliked tracks, with stars and cosine."""
    wanted = set(seeds)
    by_key = {t.key: t for t in tracks if t.rating is not None or t.key in wanted}
    if seeds:
        liked_keys = list(seeds)
    else:
        liked_keys = [t.key for t in by_key.values() if t.rating is not None and t.rating >= LIKED - 1e-6]
    disliked_keys = [t.key for t in by_key.values() if t.rating is not None and t.rating <= DISLIKED + 1e-6]

    def nearest(wanted: list[str]) -> list[list[Near]]:
        rows = np.array([row_of[k] for k in wanted if k in row_of], dtype=np.int64)
        if not len(rows) or not len(chosen):
            return [[] for _ in chosen]
        sims = vectors[chosen] @ vectors[rows].T
        result = []
        for i in range(len(chosen)):
            row = _best_first(sims[i], EXPLAIN_N)[:EXPLAIN_N]
            result.append([])
            for j in row:
                t = by_key.get(keys[rows[j]])
                stars = (t.stars if t is not None and t.stars is not None else 5.0)
                result[-1].append(Near(t.label if t else keys[rows[j]], stars, float(sims[i, j])))
        return result

    return nearest(liked_keys), nearest(disliked_keys)
