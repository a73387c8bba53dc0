"""A song path: tracks that lead from track A to track B by sound.

The two unit vectors are joined by the great circle between them (slerp: every point on it is a unit vector, so
"nearest" means the same along the whole way, which a straight line through the sphere's inside would not give);
``steps`` points are spaced evenly on it, A first and B last, and each inner point takes the nearest track not used
yet through the index's search. The playlist's rules hold: at most ``max_per_artist`` / ``max_per_album`` tracks
(A and B count), never the same artist twice in a row, no recording twice (the same performer and title, or
``recsys.library.groups.one_recording_with``), no missing file. A point whose nearest few hundred tracks are all
ruled out is left out, and the path says how many were and which rule removed the candidates.

Numpy and a search callable only (``recsys.recommender.neighbours.Search``): no torch, no index import here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recsys.choices import MAX_PATH_STEPS
from recsys.errors import RecsysError
from recsys.library.groups import Agreement, one_recording_with
from recsys.recommender.neighbours import Search

SEARCH_K = 32  # neighbours asked per point at first; widened fourfold while every one is ruled out
SEARCH_MAX = 2048  # past this many ruled-out neighbours a point is left out (the rules, not the index, stop it)


class PathError(RecsysError):
    """The path cannot be built from what was given."""


@dataclass(frozen=True)
class TrackFacts:
    """What the rules need of a track: its artist and album group (see ``recsys.recommender.labels``; '' when
    unknown), its ``recording_key`` ('' when untagged) and its file."""

    artist: str
    album: str
    recording: str
    path: str


@dataclass
class SongPath:
    rows: list[int]  # A, the picked tracks, B
    similarity: list[float]  # each track's cosine to its point on the way (1.0 for A and B)
    left_out: int = 0  # inner points no track could fill under the rules
    removed: dict[str, int] = field(default_factory=dict)  # candidates each rule removed


def slerp(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` unit vectors evenly spaced on the great circle from ``a`` to ``b`` (both included), (steps, D).

    Nearly equal vectors are interpolated linearly (then normalised); opposite ones have no single great circle,
    so the way goes through a fixed direction perpendicular to ``a``.
    """
    a = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    b = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    cos = float(np.clip(a @ b, -1.0, 1.0))
    if cos > 1 - 1e-9:
        points = (1 - t) * a + t * b
    elif cos < -1 + 1e-9:
        basis = np.eye(len(a))[int(np.argmin(np.abs(a)))]  # the axis least aligned with a
        perp = basis - (basis @ a) * a
        perp /= np.linalg.norm(perp)
        angle = np.pi * t
        points = np.cos(angle) * a + np.sin(angle) * perp
    else:
        omega = np.arccos(cos)
        points = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def song_path(vectors: np.ndarray, search: Search, start: int, end: int, steps: int,
              facts: Callable[[int], TrackFacts], *, max_per_artist: int = 3, max_per_album: int = 3,
              allowed: Callable[[int], bool] | None = None,
              exists: Callable[[str], bool] | None = None, agreement: Agreement | None = None) -> SongPath:
    """The path from row ``start`` to row ``end`` in ``steps`` tracks (both ends included).

    ``search(queries, k) -> (cosines, rows)`` is the index's search; ``facts(row)`` what the rules need of a row;
    ``allowed(row)`` a filter on the inner tracks (``--where``); ``exists(path)`` whether a file is there;
    ``agreement(row, row)`` the fingerprint agreement of two close tracks' files (None: unknown).
    """
    if steps < 2:
        raise PathError(f"--steps {steps}: a path has at least 2 tracks (A and B)")
    if steps > MAX_PATH_STEPS:
        raise PathError(f"--steps {steps}: a path has at most {MAX_PATH_STEPS} tracks")
    if start == end:
        raise PathError("A and B are the same track: choose two different tracks")
    vectors = np.asarray(vectors)
    points = slerp(vectors[start], vectors[end], steps)
    used = [start]
    sims = [1.0]
    per_artist: Counter[str] = Counter()
    per_album: Counter[str] = Counter()
    recordings: set[str] = set()
    removed: Counter[str] = Counter()
    ruled_out: set[int] = set()

    def take(row: int) -> None:
        f = facts(row)
        per_artist[f.artist] += 1 if f.artist else 0
        per_album[f.album] += 1 if f.album else 0
        if f.recording:
            recordings.add(f.recording)

    take(start)
    take(end)  # B is in the path from the start: it counts toward its artist's and album's caps
    left_out = 0
    for point in points[1:-1]:
        if len(used) + len(ruled_out) + 1 >= len(vectors):  # every track is on the path or ruled out: none is left
            left_out += 1
            continue
        choice, last_artist = None, facts(used[-1]).artist
        k = SEARCH_K
        while choice is None:
            cos, rows = search(point[None, :], min(k, len(vectors)))
            for c, row in zip(cos[0], rows[0], strict=True):
                row = int(row)
                if row < 0 or row in ruled_out or row == end or row in used:
                    continue
                reason = _rule(row, facts(row), vectors, [*used, end], per_artist, per_album, recordings,
                               max_per_artist, max_per_album, allowed, exists, agreement)
                if reason is not None:
                    ruled_out.add(row)
                    removed[reason] += 1
                    continue
                if last_artist and facts(row).artist == last_artist:
                    continue  # allowed later, just not right after the same artist
                choice = (row, float(c))
                break
            if choice is not None or k >= min(SEARCH_MAX, len(vectors)):
                break
            k *= 4
        if choice is None:
            left_out += 1
            continue
        used.append(choice[0])
        sims.append(choice[1])
        take(choice[0])
    used.append(end)
    sims.append(1.0)
    return SongPath(used, sims, left_out, dict(removed))


def _rule(row: int, f: TrackFacts, vectors: np.ndarray, on_path: list[int], per_artist: Counter[str],
          per_album: Counter[str], recordings: set[str], max_per_artist: int, max_per_album: int,
          allowed: Callable[[int], bool] | None, exists: Callable[[str], bool] | None,
          agreement: Agreement | None) -> str | None:
    """The rule that removes ``row`` for good, or None when it may be picked (``on_path``: the tracks picked, and B)."""
    if allowed is not None and not allowed(row):
        return "filter"
    if (f.recording and f.recording in recordings) or one_recording_with(vectors, row, on_path, agreement):
        return "duplicate"
    if f.artist and per_artist[f.artist] >= max_per_artist:
        return "artist cap"
    if f.album and per_album[f.album] >= max_per_album:
        return "album cap"
    if exists is not None and not exists(f.path):
        return "missing file"
    return None
