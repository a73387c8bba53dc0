"""Named regions of the library map: where on the page the tracks of one album, artist or genre gather.

A map of unlabelled clusters tells a user nothing about what a region is. The 2-D layout is clustered by k-means
(numpy, k-means++ seeding, fixed seed: the same library gives the same labels) into about sqrt(N) regions (6 for
40 tracks, 16 for 250) and at most ``MAX_REGIONS``; each region is named by the tag most of its tracks share: its
most common album (with that album's most common artist), artist or genre, the most specific of them that covers
at least ``SPECIFIC`` of what the best-covering one does (an artist's three albums in one region are named by the
artist; an album that is the whole region by the album). Untagged tracks count against a name: a few tagged
strays among untagged tracks do not name the region. The page shows the share when it is not all of them.
Neighbouring regions of the same name are one region (a large album split by k-means is one label). A region of
fewer than ``MIN_TRACKS`` tracks, or none tagged, is not named. The label sits on the region's track nearest its
centre of mass, so it is drawn on the region's points even when the region is not convex.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

FACETS = ("album", "artist", "genre")  # most specific first
MAX_REGIONS = 24
SPECIFIC = 0.8  # the most specific name that covers at least this share of what the broadest name covers
MIN_TRACKS = 3
MERGE_DISTANCE = 0.15  # same-named regions closer than this share of the map's side are one region


@dataclass
class Region:
    x: float  # where the label goes, in the points' coordinates
    y: float
    label: str
    facet: str  # which tag named it: album, artist or genre
    share: float  # of its tracks, the share the name covers
    tracks: int

    def as_json(self) -> dict:
        out = asdict(self)
        out.update(x=int(round(self.x)), y=int(round(self.y)), share=round(self.share, 3))
        return out


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The nearest centre of each point (|x|^2 - 2 x.c + |c|^2: no (N, k, 2) temporary)."""
    return ((c * c).sum(axis=1)[None, :] - 2.0 * x @ c.T).argmin(axis=1)


def kmeans(points: np.ndarray, k: int, seed: int = 0, iterations: int = 50, sample: int = 10000) -> np.ndarray:
    """The cluster (0..k-1) of each point: Lloyd's iterations from a k-means++ seeding, fit on at most ``sample``
    points (a seeded draw), then every point to its nearest centre."""
    x = np.asarray(points, dtype=np.float64)
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    fit = x[np.sort(rng.choice(n, sample, replace=False))] if n > sample else x
    m = len(fit)
    centres = [fit[rng.integers(m)]]
    d2 = ((fit - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = d2.sum()
        pick = rng.choice(m, p=d2 / total) if total > 0 else rng.integers(m)
        centres.append(fit[pick])
        d2 = np.minimum(d2, ((fit - fit[pick]) ** 2).sum(axis=1))
    c = np.array(centres)
    assign = np.full(m, -1, dtype=np.int64)
    for _ in range(iterations):
        new = _nearest(fit, c)
        if np.array_equal(new, assign):
            break
        assign = new
        counts = np.bincount(assign, minlength=k)
        for axis in range(fit.shape[1]):
            sums = np.bincount(assign, weights=fit[:, axis], minlength=k)
            c[:, axis] = np.where(counts > 0, sums / np.maximum(counts, 1), c[:, axis])
    return _nearest(x, c)


def _name(members: np.ndarray, facets: Mapping[str, Sequence[str]]) -> tuple[str, str, float] | None:
    """(label, facet, share) of one region's track indices, or None when none of them is tagged."""
    found = []
    for facet in FACETS:
        values = [facets[facet][i].strip() for i in members if facet in facets and facets[facet][i].strip()]
        if not values:
            continue
        value, count = Counter(values).most_common(1)[0]
        label = value
        if facet == "album" and "artist" in facets:
            artists = Counter(facets["artist"][i].strip() for i in members
                              if facets["album"][i].strip() == value and facets["artist"][i].strip())
            label = f"{value} ({artists.most_common(1)[0][0]})" if artists else value
        found.append((label, facet, count / len(members)))  # untagged tracks count against a name
    if not found:
        return None
    best = max(share for *_, share in found)
    return next(f for f in found if f[2] >= SPECIFIC * best)


def regions(points: np.ndarray, facets: Mapping[str, Sequence[str]], seed: int = 0) -> list[Region]:
    """The named regions of the layout ``points`` (N, 2), largest first; ``facets`` maps 'album', 'artist' and
    'genre' to each track's tag ('' when untagged; any may be absent)."""
    x = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(x)
    if n < MIN_TRACKS:
        return []
    k = int(np.clip(round(np.sqrt(n)), 1, MAX_REGIONS))
    assign = kmeans(x, k, seed)
    side = float(np.ptp(x, axis=0).max()) or 1.0
    named: list[tuple[str, str, np.ndarray]] = []
    for j in range(k):
        members = np.flatnonzero(assign == j)
        if len(members) < MIN_TRACKS:
            continue
        name = _name(members, facets)
        if name is None:
            continue
        label, facet, _ = name
        for m, (other, _, others) in enumerate(named):  # one label for an album k-means split in two
            if other == label and np.linalg.norm(x[others].mean(0) - x[members].mean(0)) < MERGE_DISTANCE * side:
                named[m] = (label, facet, np.concatenate([others, members]))
                break
        else:
            named.append((label, facet, members))
    out = []
    for label, facet, members in named:
        _, _, share = _name(members, facets) or (label, facet, 0.0)
        centre = x[members].mean(axis=0)
        anchor = members[((x[members] - centre) ** 2).sum(axis=1).argmin()]
        out.append(Region(float(x[anchor, 0]), float(x[anchor, 1]), label, facet, share, len(members)))
    return sorted(out, key=lambda r: -r.tracks)
