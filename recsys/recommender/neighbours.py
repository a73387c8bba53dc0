"""Nearest-neighbour expansion: every rated (or often played) track votes for its k nearest tracks.

Each piece of evidence ``e`` (a label: liked 1 or not 0, a weight) finds its k nearest tracks through the index
(FAISS: exact up to ``index.exact_max_tracks``, HNSW above) and casts a vote for each neighbour ``c`` of weight
``w_e * exp(-(1 - cos(e, c)) / tau_e)``, where ``tau_e = 1 - cos`` of e's k-th neighbour: the nearest neighbours
count about fully, the k-th e^-1, whatever the encoder's cosine scale; a rated track also votes for itself with
kernel 1 (so ``--include-rated`` ranks it by its own stars). A track's like-probability is the share of its votes
that come from liked evidence, shrunk toward ``prior`` with ``alpha`` votes' worth of weight:

    p(c) = (liked votes + alpha * prior) / (all votes + alpha)

The prior is 0 ("not liked until the neighbours say so"): most unrated tracks of a library are not ones the owner
likes, and the share of liked among the RATINGS overstates it (people rate what they like), so a track no evidence
reaches must not rank above one a liked track vouches for. Two distinct tastes stay distinct (each liked track
votes around itself; nothing is averaged into a centroid), and the score is a probability on the classifier's
scale, so the blend of the two means the same for every encoder.

Weights: an explicit rating counts 0.5 + |stars - 3| / 4 (5 and 1 stars: 1.0, 4 and 2: 0.75, 3: 0.5); a play-history
pseudo-label keeps its weight (0.2).

Album and artist votes. Every evidence track also votes for every other track of its album (album tag, else its
folder) with kernel ``album_vote`` and of its artist (tag, else the album folder's parent) with ``artist_vote``: the
unrated tracks of an album you rated five times five stars are the likeliest to please, whatever the encoder hears.
On the development corpus (14 soundtracks, two liked) this took the top 20 from 58 % liked-style tracks (the votes
through the index alone) to 100 %, and the disliked ones in it from 1.2 to 0 (benchmarks/RESULTS.md). Untagged
tracks of a loose folder (the library's root, a folder of more files than an album holds) have no album and no artist
(a flat library is not one album nor one artist), untagged ones just under the root no artist
(``recsys.library.groups.artist_of``). A folder whose files carry at most ``RELEASE_MAX_TAGS`` album tags is
one album whatever the tags say (``library_groups``): on the development corpus, soundtracks whose composers tagged
their own tracks had liked tracks left out because only one rated track shared their tag.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

import numpy as np

from recsys.library.catalogue import Catalogue
from recsys.library.groups import album_of, artist_of
from recsys.library.text import tag_key
from recsys.recommender.labels import Labels

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # queries, k -> (cosines, rows), best first
ALPHA = 1.0
PRIOR = 0.0
RELEASE_MAX_TAGS = 3  # album tags one release folder may carry (editions, discs, composers)


@dataclass
class Neighbourhoods:
    """The k nearest tracks of each evidence track (itself left out): cosines and rows, (E, k) each."""

    sims: np.ndarray
    rows: np.ndarray


def exact_search(vectors: np.ndarray) -> Search:
    """Exact inner-product search over ``vectors`` (what a flat snapshot does)."""
    import faiss

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), np.asarray(vectors, dtype=np.float32),
                         min(k, len(vectors)), metric=faiss.METRIC_INNER_PRODUCT)

    return search


def neighbourhoods(search: Search, vectors: np.ndarray, rows: np.ndarray, k: int) -> Neighbourhoods:
    """One batched search for every evidence row; the row itself (or, failing that, the farthest hit) is dropped."""
    if not len(rows):
        return Neighbourhoods(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64))
    want = min(k + 1, len(vectors))
    sims, hits = search(np.asarray(vectors[rows], dtype=np.float32), want)
    sims, hits = np.asarray(sims, dtype=np.float32), np.asarray(hits, dtype=np.int64)
    is_self = hits == rows[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), want - 1)
    keep = np.ones_like(is_self)
    keep[np.arange(len(rows)), drop] = False
    width = want - 1
    if width == 0:
        return Neighbourhoods(np.zeros((len(rows), 0), np.float32), np.zeros((len(rows), 0), np.int64))
    return Neighbourhoods(sims[keep].reshape(len(rows), width), hits[keep].reshape(len(rows), width))


@dataclass
class Groups:
    """Album and artist id of every library row (-1: none known), for the album and artist votes."""

    album: np.ndarray
    artist: np.ndarray


def _folder(path: str) -> str:
    return path.rpartition("/")[0]  # os.path.dirname's job at a fifth of its cost (a 100,000-track loop)


class _TagCodes(dict):
    """Tag value -> 1 when its ``tag_key`` is one of ``tags``, 2 when it is blank, else 0: each distinct value is
    normalised when first met (``__missing__``), every other lookup stays in C."""

    def __init__(self, tags: set[str]) -> None:
        super().__init__()
        self._tags = tags

    def __missing__(self, value: str) -> int:
        key = tag_key(value)
        code = self[value] = 2 if not key else 1 if key in self._tags else 0
        return code


def _matching(values: Sequence[str], tags: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``values``: whether its ``tag_key`` is one of ``tags``, and whether it is blank; one pass over a
    million tracks' values (a dict lookup each, in C), each distinct value normalised once."""
    codes = np.fromiter(map(_TagCodes(tags).__getitem__, values), np.int8, len(values))
    return codes == 1, codes == 2


def library_groups(keys: Sequence[str], row_of: Mapping[str, int], library: Catalogue, root: str,
                   evidence: np.ndarray, loose: frozenset[str] = frozenset()) -> Groups:
    """Album and artist ids of the library's rows that share an album or an artist with an ``evidence`` row.

    Only those can get an album or artist vote, so only those are named: the normalised names of every track cost
    0.9 s at 100,000 tracks (3 s on a loaded machine), more than the playlist may take. A track is named when its
    folder, its album folder's parent or a tag (each distinct tag value normalised once by ``tag_key``, the rule
    ``album_of`` and ``artist_of`` compare by) matches an evidence track's: each tag column's distinct values are
    tested once, so the test of every track is a dict lookup, and only untagged tracks' folders are looked at. The
    evidence tracks are found in the catalogue by bisection (it is in key order), the named ones' rows through
    ``row_of``. Rows no track names, and untagged tracks of a loose folder
    (``recsys.library.groups.loose_folders``: the root, a folder of more files than an album holds; a flat library
    is not one album nor one artist), get -1.

    A release folder joins its tracks into one album whatever their tags say: an evidence track's folder (not the
    root) whose files carry at most ``RELEASE_MAX_TAGS`` album tags is one release tagged unevenly (a soundtrack
    whose composers tagged their own tracks, an edition name on some files, a tag missing on others). Its album is
    then the tag albums and the folder together, so the disc folders of one album tag stay one album too.
    """
    album, artist = np.full(len(keys), -1, np.int64), np.full(len(keys), -1, np.int64)
    mine = [i for i in library.positions(keys[r] for r in np.asarray(evidence).tolist()) if i >= 0]
    paths, albums, albumartists, artists = library.paths, library.albums, library.albumartists, library.artists
    # what album_of and artist_of read: the album tag, else the folder; the (album) artist tag, else its parent
    album_tags = {tag_key(albums[i]) for i in mine} - {""}
    loose = loose | {root}
    album_folders = {_folder(paths[i]) for i in mine if not tag_key(albums[i])} - loose
    artist_tags = {tag_key(albumartists[i]) or tag_key(artists[i]) for i in mine} - {""}
    artist_folders = {_folder(_folder(paths[i])) for i in mine if not (tag_key(albumartists[i]) or tag_key(artists[i]))}
    releases = _release_folders(library, {_folder(paths[i]) for i in mine} - loose)
    # which tag values match, each distinct value tested once (a few per album), then set lookups per track
    in_album, untagged_album = _matching(albums, album_tags)
    by_albumartist, no_owner = _matching(albumartists, artist_tags)
    by_artist, no_artist = _matching(artists, artist_tags)
    # the album: its tag, else (untagged) its folder; the artist: the album artist's tag, else the artist's, else
    # (both untagged) the album folder's parent
    named = in_album | by_albumartist
    named |= no_owner & by_artist
    if album_folders:
        for i in np.flatnonzero(untagged_album & ~named).tolist():
            named[i] = _folder(paths[i]) in album_folders
    if artist_folders:
        for i in np.flatnonzero(no_owner & no_artist & ~named).tolist():
            named[i] = _folder(_folder(paths[i])) in artist_folders
    for rows in releases.values():
        named[rows] = True
    which = np.flatnonzero(named).tolist()
    rows_of = np.fromiter(map(row_of.get, _at(library.keys, which), repeat(-1)), np.int64, len(which))
    has = rows_of >= 0  # a track without a vector gets no vote
    which, rows_of = [i for i, h in zip(which, has.tolist(), strict=True) if h], rows_of[has]
    if not which:
        return Groups(album, artist)
    # album-mates (same tags and folder) are named once: the named tracks grouped by their three tags and folder,
    # the groups in the order of their first track
    named_paths = _at(paths, which)
    folders = map(itemgetter(0), map(str.rpartition, named_paths, repeat("/")))  # _folder's rule, in C
    mates = list(zip(_at(albums, which), _at(albumartists, which), _at(artists, which), folders, strict=True))
    groups = dict.fromkeys(mates)  # in the order of their first track
    first = dict(zip(reversed(mates), range(len(mates) - 1, -1, -1), strict=True))  # each group's first track
    mate = np.fromiter(map(dict(zip(groups, range(len(groups)), strict=True)).__getitem__, mates), np.int64,
                       len(mates))
    joined = _Union()
    names = []  # (album name, artist name) of each set of album-mates
    for group in groups:
        album_tag, albumartist, artist_tag, folder = group
        path = named_paths[first[group]]
        album_name = album_of(album_tag, albumartist, artist_tag, path, loose)
        names.append((album_name, artist_of(artist_tag, albumartist, path, root, loose)))
        if folder in releases and album_name:
            joined.join(album_name, f"folder:{folder}")
    ids: dict[str, int] = {}
    album_ids = np.array([ids.setdefault(joined.find(a), len(ids)) if a else -1 for a, _ in names], np.int64)
    artist_ids = np.array([ids.setdefault(a, len(ids)) if a else -1 for _, a in names], np.int64)
    album[rows_of], artist[rows_of] = album_ids[mate], artist_ids[mate]
    return Groups(album, artist)


def _at(values: Sequence[str], indices: list[int]) -> list[str]:
    """``values`` at ``indices`` (in C: a list of a few hundred thousand)."""
    if not indices:
        return []
    picked = itemgetter(*indices)(values)
    return [picked] if len(indices) == 1 else list(picked)


def _release_folders(library: Catalogue, candidates: set[str]) -> dict[str, list[int]]:
    """The ``candidates`` whose own files (not their subfolders') carry at most ``RELEASE_MAX_TAGS`` distinct album
    tags (compared by ``tag_key``), each with the catalogue indices of its files.

    Keys begin with the path and the catalogue is in key order, so everything under a folder is one run of entries,
    found by bisection: a few folders' files are read, never the whole library's.
    """
    keys, paths, albums = library.keys, library.paths, library.albums
    out = {}
    for folder in candidates:
        prefix, rows = folder + "/", []
        i = bisect.bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            if _folder(paths[i]) == folder:
                rows.append(i)
            i += 1
        if len({tag_key(albums[i]) for i in rows} - {""}) <= RELEASE_MAX_TAGS:
            out[folder] = rows
    return out


class _Union:
    """Disjoint sets of names (union-find): the tag albums and release folders that are one album."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def find(self, name: str) -> str:
        parent = self._parent.get(name, name)
        if parent == name:
            return name
        top = self.find(parent)
        self._parent[name] = top
        return top

    def join(self, a: str, b: str) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self._parent[a] = b


def shared_voters(ids: np.ndarray, rows: np.ndarray, liked: np.ndarray, chosen: np.ndarray
                  ) -> list[tuple[int, int]]:
    """For each ``chosen`` row, (liked, not liked) evidence tracks in its group, itself left out: what --explain
    shows of the album and artist votes."""
    out = []
    for r in np.asarray(chosen).tolist():
        g = ids[r]
        same = (ids[rows] == g) & (rows != r) if g >= 0 else np.zeros(len(rows), bool)
        out.append((int((liked[same] > 0.5).sum()), int((liked[same] <= 0.5).sum())))
    return out


def _group_votes(ids: np.ndarray, rows: np.ndarray, weights: np.ndarray, liked: np.ndarray, strength: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(liked votes, all votes) each row gets from the evidence sharing its group; none for an evidence's own row."""
    mine = ids[rows]
    known = mine >= 0
    size = int(ids.max()) + 1 if len(ids) else 0
    if not known.any() or strength <= 0:
        return np.zeros(len(ids)), np.zeros(len(ids))
    pos = np.bincount(mine[known], (weights * liked)[known], minlength=size)
    total = np.bincount(mine[known], weights[known], minlength=size)
    has = ids >= 0
    got_pos = np.where(has, pos[np.maximum(ids, 0)], 0.0) * strength
    got_total = np.where(has, total[np.maximum(ids, 0)], 0.0) * strength
    np.subtract.at(got_pos, rows[known], strength * (weights * liked)[known])  # it votes for itself already
    np.subtract.at(got_total, rows[known], strength * weights[known])
    return np.maximum(got_pos, 0.0), np.maximum(got_total, 0.0)


def evidence_weights(labels: Labels) -> np.ndarray:
    """Rating-weighted votes: stronger stars count more; pseudo-labels keep their own (small) weight."""
    strength = 0.5 + np.abs(labels.targets.astype(np.float64) - 0.6) * 1.25
    return np.where(labels.explicit, strength, labels.weights).astype(np.float64)


def vote(hoods: Neighbourhoods, rows: np.ndarray, liked: np.ndarray, weights: np.ndarray, n: int,
         prior: float = PRIOR, alpha: float = ALPHA, groups: Groups | None = None, album_vote: float = 0.0,
         artist_vote: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Like-probability of every one of the ``n`` tracks, and the vote weight behind it (0: the prior alone).

    ``rows`` are the evidence tracks' own rows (each votes for itself too), in the order of ``hoods``; with
    ``groups`` each also votes for the rest of its album and artist (kernels ``album_vote``, ``artist_vote``).
    """
    own = np.bincount(rows, weights, minlength=n).astype(np.float64)
    own_liked = np.bincount(rows, weights * liked, minlength=n).astype(np.float64)
    if groups is not None:
        for ids, strength in ((groups.album, album_vote), (groups.artist, artist_vote)):
            got_liked, got = _group_votes(ids, rows, weights, liked, strength)
            own_liked += got_liked
            own += got
    if not hoods.rows.size:
        return ((own_liked + alpha * prior) / (own + alpha)).astype(np.float32), own.astype(np.float32)
    found = hoods.rows >= 0  # HNSW marks missing hits with -1
    last = np.where(found, hoods.sims, np.inf).min(axis=1)
    tau = np.maximum(1.0 - np.where(np.isfinite(last), last, 0.0).astype(np.float64), 1e-4)
    kernel = np.exp(-np.clip(1.0 - hoods.sims, 0.0, None) / tau[:, None]) * weights[:, None] * found
    flat = np.where(found, hoods.rows, 0).ravel()
    total = np.bincount(flat, kernel.ravel(), minlength=n) + own
    pos = np.bincount(flat, (kernel * liked[:, None]).ravel(), minlength=n) + own_liked
    return ((pos + alpha * prior) / (total + alpha)).astype(np.float32), total.astype(np.float32)
