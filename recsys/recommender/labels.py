"""What the owner told us: star ratings (and, while they are few, plays and skips) joined to the library's rows.

A track is LIKED at 4 stars and up; the classifier and the neighbour votes both estimate the probability of that.
Every explicit rating of a track with a vector is a label of weight 1. While explicit ratings are fewer than
``pseudo_until`` (default 500), the play history of UNRATED tracks adds weak pseudo-labels of weight 0.2: at least 3
plays and at most one skip per 4 plays -> liked-ish (3.5 stars); at least 3 skips and more skips than plays ->
disliked-ish (1.5 stars); any other history says too little. Every rating that is not used is counted by reason.

Groups. Near-identical tracks of one album must never sit on both sides of a validation split, and neither should
one artist's albums: album and artist are those of :mod:`recsys.library.groups` (the keys the caps and the votes
use too). ``grouped_folds`` keeps every album and every artist on one side.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys.library.catalogue import Catalogue
from recsys.library.groups import album_of, artist_of, library_root, loose_folders
from recsys.library.track import Track

log = logging.getLogger(__name__)

LIKED = 0.8  # 4 stars and up
PSEUDO_MIN_EVENTS = 3
PSEUDO_LIKED_TARGET, PSEUDO_DISLIKED_TARGET, PSEUDO_WEIGHT = 0.7, 0.3, 0.2


@dataclass
class Labels:
    """Training labels joined to the library's rows."""

    rows: np.ndarray  # row index into the library's vectors
    targets: np.ndarray  # rating in [0, 1]
    weights: np.ndarray
    explicit: np.ndarray  # bool: an explicit rating (else a pseudo-label)
    albums: list[str]
    artists: list[str]
    used: dict[str, int]
    dropped: dict[str, int]

    @property
    def liked(self) -> np.ndarray:
        """1.0 for a liked label (4 stars and up; a liked-ish play history), else 0.0."""
        return np.where(self.explicit, self.targets >= LIKED - 1e-6, self.targets > 0.5).astype(np.float64)

    def subset(self, mask: np.ndarray) -> Labels:
        """The labels where ``mask`` holds (counts are kept as they were)."""
        idx = np.flatnonzero(mask)
        return Labels(self.rows[idx], self.targets[idx], self.weights[idx], self.explicit[idx],
                      [self.albums[i] for i in idx], [self.artists[i] for i in idx], self.used, self.dropped)


def collect_labels(keys: Sequence[str], tracks: Sequence[Track], pseudo_until: int = 500,
                   library: Catalogue | None = None, row_of: dict[str, int] | None = None) -> Labels:
    """Join ratings (and, when explicit ones are few, play history) to the library's rows; count what is dropped.
    ``library`` is every track of the library (whose root names the untagged artists), when ``tracks`` are only
    those with a rating, plays or skips (``Track.has_history``); ``row_of`` is ``keys``' index when the caller has
    it (a million keys: built once per playlist)."""
    row_of = dict(zip(keys, range(len(keys)), strict=True)) if row_of is None else row_of
    if library is not None:
        root, loose = library.root, library.loose
    else:
        paths = [t.path for t in tracks]
        root = library_root(paths)
        loose = loose_folders(paths, root)
    # the first entry of each key counts; what is dropped is counted in the order of the entries. A few hundred
    # thousand tracks have a history and a few thousand a rating: only those are looked at one by one
    keys_of = [t.key for t in tracks]
    first = dict(zip(reversed(keys_of), range(len(tracks) - 1, -1, -1), strict=True))
    kept = None if len(first) == len(tracks) else set(first.values())
    events: list[tuple[int, str]] = []  # (entry, why it is dropped)
    if kept is not None:
        events += [(i, "duplicate entry" if tracks[i].rating is not None else "duplicate unrated entry")
                   for i in range(len(tracks)) if i not in kept]
    explicit: list[tuple[int, float, Track]] = []
    for i in [i for i, t in enumerate(tracks) if t.rating is not None and (kept is None or i in kept)]:
        t = tracks[i]
        if not 0.0 <= t.rating <= 1.0:
            events.append((i, "rating out of range"))
            log.debug("rating dropped (out of range %r): %s", t.rating, t.key)
        elif t.key not in row_of:
            events.append((i, "no vector (not embedded)"))
            log.debug("rating dropped (no vector): %s", t.key)
        else:
            explicit.append((row_of[t.key], float(t.rating), t))
    dropped = Counter(reason for _, reason in sorted(events))
    pseudo: list[tuple[int, float, Track]] = []
    if len(explicit) < pseudo_until:
        unrated = [t for i, t in enumerate(tracks) if t.rating is None and (kept is None or i in kept)]
        for t in unrated:
            if t.key not in row_of:
                continue
            plays, skips = t.playcount, t.skipcount
            if plays >= PSEUDO_MIN_EVENTS and 4 * skips <= plays:
                pseudo.append((row_of[t.key], PSEUDO_LIKED_TARGET, t))
            elif skips >= PSEUDO_MIN_EVENTS and skips > plays:
                pseudo.append((row_of[t.key], PSEUDO_DISLIKED_TARGET, t))
    every = explicit + pseudo
    used = {"explicit": len(explicit), "pseudo (plays)": sum(1 for p in pseudo if p[1] > 0.5),
            "pseudo (skips)": sum(1 for p in pseudo if p[1] < 0.5)}
    labels = Labels(rows=np.array([e[0] for e in every], dtype=np.int64),
                    targets=np.array([e[1] for e in every], dtype=np.float32),
                    weights=np.array([1.0] * len(explicit) + [PSEUDO_WEIGHT] * len(pseudo), dtype=np.float32),
                    explicit=np.array([True] * len(explicit) + [False] * len(pseudo), dtype=bool),
                    # a track of no album is a group of its own (a flat library is not one group)
                    albums=[album_of(t.album, t.albumartist, t.artist, t.path, loose) or f"track:{t.key}"
                            for _, _, t in every],
                    artists=[artist_of(t.artist, t.albumartist, t.path, root, loose) for _, _, t in every],
                    used=used, dropped=dict(dropped))
    log.info("ratings used: %s; dropped: %s", used, dict(dropped) or "none")
    return labels


def group_ids(labels: Labels) -> np.ndarray:
    """One integer per label: labels sharing an album or an artist (transitively) share the id (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for album, artist in zip(labels.albums, labels.artists, strict=True):
        a = find(album)
        if artist:
            b = find(artist)
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = [find(a) for a in labels.albums]
    index = {r: i for i, r in enumerate(sorted(set(roots)))}
    return np.array([index[r] for r in roots], dtype=np.int64)


def grouped_folds(labels: Labels, n_folds: int, seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """(train, validation) masks over ``labels``, one pair per fold: whole groups (album and artist) per fold, seeded.

    Groups go to folds in a seeded order, biggest first, each to the fold with the fewest explicit ratings so far, so
    folds come out about equal. Validation is explicit ratings only; pseudo-labels only ever train, and those of a
    fold's groups stay out of its training set. With fewer than two groups (every rating in one album) the folds are
    by track, and the returned description says so.
    """
    groups = group_ids(labels)
    how = "album and artist (folder where untagged)"
    explicit_groups = sorted(set(groups[labels.explicit].tolist()))
    if len(explicit_groups) < 2:
        groups = np.arange(len(labels.rows))
        explicit_groups = sorted(set(groups[labels.explicit].tolist()))
        how = "track (all ratings are in one album)"
    n_folds = max(2, min(n_folds, len(explicit_groups)))
    counts = Counter(groups[labels.explicit].tolist())
    order = np.random.default_rng(seed).permutation(len(explicit_groups))
    ranked = sorted((explicit_groups[i] for i in order), key=lambda g: -counts[g])  # stable: seeded among equals
    load = [0] * n_folds
    fold_of = np.full(int(groups.max()) + 1, -1)
    for g in ranked:
        f = min(range(n_folds), key=lambda i: (load[i], i))
        fold_of[g] = f
        load[f] += counts[g]
    fold = fold_of[groups]
    return [(fold != f, (fold == f) & labels.explicit) for f in range(n_folds)], how
