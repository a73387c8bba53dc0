"""How well vectors group tracks that belong together, with the library's tags as weak labels.

For every query track, its 10 nearest neighbours by cosine (the query itself and exact copies of its file, same
content id, are left out: a copy is not a recommendation) are checked for the same album (album artist or artist +
album, compared case- and space-insensitively) and the same artist. precision@10 of a query is the share of those
neighbours that share its album (artist), out of the most that could: min(10, other tracks of that album), so 1.0 is
perfect on any library, whatever the album sizes. A track without the tag, or alone with it, is no query; how many
queries were usable is reported with each number, and so is chance: the precision random neighbours would
score on the same queries, so a number is never read without its floor. numpy only: no torch, no lancedb.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from recsys.library.groups import album_of
from recsys.library.text import tag_key

K = 10


def group_labels(albums: Sequence[str | None], artists: Sequence[str | None]) -> tuple[list[str], list[str]]:
    """(album labels, artist labels); empty where the tag is missing (a folder is no evidence of sound here). The
    album is ``recsys.library.groups.album_of`` of the tags: two "Greatest Hits" of different artists are
    different albums."""
    album = [album_of(b, None, a, "") if tag_key(b) else "" for a, b in zip(artists, albums, strict=True)]
    return album, [tag_key(a) for a in artists]


CHUNK = 1024  # queries scored together: a chunk x N similarity block, never the whole N x N matrix


def _neighbours(x: np.ndarray, cids: np.ndarray, rows: slice, k: int) -> list[np.ndarray]:
    """Top-k rows by cosine for the queries ``rows``, leaving out each query and copies of its file."""
    sims = x[rows] @ x.T
    sims[cids[rows, None] == cids[None, :]] = -np.inf
    kk = min(k, len(x))
    top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk else np.zeros((len(sims), 0), dtype=np.int64)
    out = []
    for q, cand in enumerate(top):
        cand = cand[np.argsort(-sims[q, cand], kind="stable")]
        out.append(cand[np.isfinite(sims[q, cand])])
    return out


def _precision(neighbours: Sequence[np.ndarray], labels: np.ndarray, cids: np.ndarray,
               k: int) -> tuple[float, float, int]:
    """(mean capped precision@k, its chance level, queries) over queries whose label is set and shared by another
    track (not a copy). Chance is what k neighbours drawn at random from the candidates (every track but the query's
    own copies) would score on average: k x relevant / candidates / min(k, relevant), at most 1."""
    per_label = Counter(labels.tolist())
    per_copy = Counter(zip(labels.tolist(), cids.tolist(), strict=True))
    copies = Counter(cids.tolist())
    scores, chance = [], []
    for q, found in enumerate(neighbours):
        label = labels[q]
        relevant = per_label[label] - per_copy[(label, cids[q])] if label else 0
        if relevant > 0:
            cap = min(k, relevant)
            scores.append(int(np.sum(labels[found] == label)) / cap)
            candidates = len(labels) - copies[cids[q]]
            chance.append(min(1.0, min(k, candidates) * relevant / candidates / cap))
    if not scores:
        return float("nan"), float("nan"), 0
    return float(np.mean(scores)), float(np.mean(chance)), len(scores)


def retrieval_metrics(vectors: np.ndarray, albums: Sequence[str | None], artists: Sequence[str | None],
                      content_ids: Sequence[str], k: int = K) -> dict[str, float | int]:
    """Same-album and same-artist precision@k of ``vectors`` (N x D, L2-normalised), with their chance levels and
    the usable query counts.

    A metric with no usable query is NaN: the comparison is impossible, not zero.
    """
    x = np.asarray(vectors, dtype=np.float32)
    album, artist = group_labels(albums, artists)
    cids = np.asarray(content_ids, dtype=object)
    neighbours: list[np.ndarray] = []
    for start in range(0, len(x), CHUNK):
        neighbours += _neighbours(x, cids, slice(start, start + CHUNK), k)
    album_p, album_c, album_n = _precision(neighbours, np.asarray(album, dtype=object), cids, k)
    artist_p, artist_c, artist_n = _precision(neighbours, np.asarray(artist, dtype=object), cids, k)
    return {"album_p10": album_p, "artist_p10": artist_p, "album_chance": album_c, "artist_chance": artist_c,
            "album_queries": album_n, "artist_queries": artist_n, "tracks": len(x)}
