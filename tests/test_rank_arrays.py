"""The playlist's array work against the straightforward per-row rules it replaced: the owned copies that MMR removes
(one product per candidate), the labels joined to the library's rows (one loop over the tracks)."""

from __future__ import annotations

import logging
import random
from collections import Counter

import numpy as np
import pytest
from test_rank import clusters, library, rank, unit

import recsys.recommender.rank as rank_module
from recsys.library.groups import DUPLICATE_CANDIDATE_COS, album_of, artist_of, library_root, loose_folders
from recsys.library.track import Track, make_key
from recsys.recommender.labels import (
    PSEUDO_DISLIKED_TARGET,
    PSEUDO_LIKED_TARGET,
    PSEUDO_MIN_EVENTS,
    PSEUDO_WEIGHT,
    collect_labels,
)


class _OneProductPerCandidate:
    """``_mmr``'s owned copies as it found them before: every owned row within DUPLICATE_CANDIDATE_COS of the
    candidate, one product of all the owned vectors per candidate asked about, never a guess."""

    def __init__(self, vectors: np.ndarray, cand: np.ndarray, owned: np.ndarray) -> None:
        self._owned, self._owned_vectors, self._cand = owned, np.asarray(vectors[owned], np.float32), cand

    def near(self, i: int, upcoming: np.ndarray, alive: np.ndarray) -> np.ndarray:
        return self._owned[self._owned_vectors @ self._cand[i] >= DUPLICATE_CANDIDATE_COS]

    def guessed(self) -> bool:
        return False


def _copies_library(seed: int):
    """Clusters of tracks; the owner rated or often played some, and the library holds copies of those: near ones
    (cosine about 0.9 to 0.999, some with the files' fingerprints compared), the same performer and title spelt
    otherwise, and exact duplicates (ties in every score)."""
    rng = np.random.default_rng(seed)
    vectors, which = clusters(n_clusters=4, per=60, dim=16, seed=seed)
    vectors = vectors.copy()
    lib = library(n=len(vectors), vectors=vectors, n_artists=37)
    owned = rng.choice(len(vectors), 40, replace=False)
    others = np.setdiff1d(np.arange(len(vectors)), owned)
    agree = {}
    for j, o in enumerate(owned.tolist()):
        c = int(others[j])
        kind = j % 5
        if kind == 0:  # a copy by sound: cosine over SAME_RECORDING_COS
            vectors[c] = unit(vectors[o] + 0.01 * rng.normal(size=vectors.shape[1]))
        elif kind == 1:  # near, but not one recording by the cosine ...
            vectors[c] = unit(vectors[o] + rng.uniform(0.15, 0.35) * rng.normal(size=vectors.shape[1]) / 4)
        elif kind == 2:  # ... unless the fingerprints say so
            vectors[c] = unit(vectors[o] + 0.2 * rng.normal(size=vectors.shape[1]) / 4)
            agree[(c, o)] = 0.9
        elif kind == 3:  # the same performer and title, tagged otherwise
            lib.meta["artist"][c] = lib.meta["artist"][o].upper()
            lib.meta["title"][c] = "  " + lib.meta["title"][o].replace(" ", "  ")
        else:  # an exact duplicate of an unowned track: the same score
            vectors[c] = vectors[int(others[-1 - j])]
    lib.vectors = vectors
    lib.agreement = lambda a, b: agree.get((a, b), agree.get((b, a)))
    tracks = [Track(path=lib.keys[o], rating=1.0 if which[o] < 2 else 0.2) if k % 2 else
              Track(path=lib.keys[o], playcount=50) for k, o in enumerate(owned.tolist())]
    return lib, tracks


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("batch", "passes"), [(64, 3), (3, 3), (2, 1)])
def test_owned_copies_are_removed_as_one_product_per_candidate_removes_them(monkeypatch, seed, batch, passes):
    """The batched copies (a guessing pass, then one product; past GUESS_PASSES, batches in MMR order) remove the
    very candidates, in the same order and counts, as the product per candidate did."""
    lib, tracks = _copies_library(seed)
    kwargs = {"top_n": 60, "max_per_album": 60, "max_per_artist": 60, "min_liked_share": None,
              "min_audio_votes": 0.0, "played_min": 10}
    monkeypatch.setattr(rank_module, "COPY_BATCH", batch)
    monkeypatch.setattr(rank_module, "GUESS_PASSES", passes)
    got = rank(lib, tracks, None, **kwargs)
    monkeypatch.setattr(rank_module, "_OwnedCopies", _OneProductPerCandidate)
    want = rank(lib, tracks, None, **kwargs)
    assert want.removed.get(rank_module.COPY, 0) >= 3  # copies by sound, by fingerprint and by name were met
    assert [t.key for t in got.tracks] == [t.key for t in want.tracks]
    assert got.removed == want.removed and got.stopped == want.stopped


def _labels_one_loop(keys, tracks, pseudo_until, root, loose):  # noqa: ANN001, ANN202 - the reference
    """collect_labels as one loop over the tracks (the rule as written before it was made array work)."""
    row_of = {k: i for i, k in enumerate(keys)}
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    explicit, unrated = [], []
    for t in tracks:
        if t.key in seen:
            dropped["duplicate entry" if t.rating is not None else "duplicate unrated entry"] += 1
            continue
        seen.add(t.key)
        if t.rating is None:
            unrated.append(t)
        elif not 0.0 <= t.rating <= 1.0:
            dropped["rating out of range"] += 1
        elif t.key not in row_of:
            dropped["no vector (not embedded)"] += 1
        else:
            explicit.append((row_of[t.key], float(t.rating), t))
    pseudo = []
    if len(explicit) < pseudo_until:
        for t in unrated:
            if t.key in row_of and t.playcount >= PSEUDO_MIN_EVENTS and 4 * t.skipcount <= t.playcount:
                pseudo.append((row_of[t.key], PSEUDO_LIKED_TARGET, t))
            elif t.key in row_of and t.skipcount >= PSEUDO_MIN_EVENTS and t.skipcount > t.playcount:
                pseudo.append((row_of[t.key], PSEUDO_DISLIKED_TARGET, t))
    every = explicit + pseudo
    return ([e[0] for e in every], [e[1] for e in every], [1.0] * len(explicit) + [PSEUDO_WEIGHT] * len(pseudo),
            [album_of(t.album, t.albumartist, t.artist, t.path, loose) or f"track:{t.key}" for _, _, t in every],
            [artist_of(t.artist, t.albumartist, t.path, root, loose) for _, _, t in every], list(dropped.items()))


@pytest.mark.parametrize("seed", range(6))
def test_collect_labels_joins_and_drops_as_one_loop_over_the_tracks(seed):
    """Duplicate entries (rated and not, the first one counts), ratings out of range, tracks without a vector, CUE
    segments of one file, plays and skips around the pseudo-label thresholds, with few ratings and with many: the
    same labels, and what is dropped counted the same, in the same order."""
    rng = random.Random(seed)
    tracks = []
    for i in range(rng.randint(30, 120)):
        folder = rng.choice(["/m/A", "/m/A/X", "/m/B", "/m"])
        segment = rng.random() < 0.15
        tracks.append(Track(path=f"{folder}/t{i % 50}.flac", start_s=rng.choice([0.0, 180.0]) if segment else 0.0,
                            segment=segment, album=rng.choice(["", "X", "Hits"]), artist=rng.choice(["", "A", "b"]),
                            albumartist=rng.choice(["", "Various Artists"]),
                            rating=rng.choice([None, None, None, 0.2, 0.8, 1.0, 1.4, -0.2]),
                            playcount=rng.randint(0, 6), skipcount=rng.randint(0, 5)))
    keys = [t.key for t in tracks if rng.random() < 0.85]
    rng.shuffle(keys)
    keys = list(dict.fromkeys(keys + [make_key("/m/none.flac")]))
    paths = [t.path for t in tracks]
    root = library_root(paths)
    loose = loose_folders(paths, root)
    for pseudo_until in (0, 500):
        labels = collect_labels(keys, tracks, pseudo_until)
        rows, targets, weights, albums, artists, dropped = _labels_one_loop(keys, tracks, pseudo_until, root, loose)
        assert labels.rows.tolist() == rows and labels.targets.tolist() == pytest.approx(targets)
        assert labels.weights.tolist() == pytest.approx(weights)
        assert labels.albums == albums and labels.artists == artists
        assert list(labels.dropped.items()) == dropped


def test_collect_labels_logs_what_it_drops_in_entry_order(caplog):
    """The debug lines name the dropped ratings in the order of the entries."""
    tracks = [Track(path="/m/a.flac", rating=1.5), Track(path="/m/b.flac", rating=0.8),
              Track(path="/m/a.flac", rating=0.8), Track(path="/m/c.flac", rating=-1.0)]
    with caplog.at_level(logging.DEBUG, logger="recsys.recommender.labels"):
        labels = collect_labels(["/m/a.flac"], tracks)
    assert list(labels.dropped.items()) == [("rating out of range", 2), ("no vector (not embedded)", 1),
                                            ("duplicate entry", 1)]
    assert [r.getMessage().split(": ")[-1] for r in caplog.records if "dropped (" in r.getMessage()] == [
        "/m/a.flac", "/m/b.flac", "/m/c.flac"]


@pytest.mark.parametrize("seed", range(5))
def test_best_first_is_the_stable_sorts_beginning(seed):
    """Ties (many equal values, -inf for the dead, NaN), every length: the head is exactly where the stable sort of all
    the values begins, ties at its end included."""
    rng = np.random.default_rng(seed)
    for size in (1, 2, 5, 64, 300):
        values = rng.choice(np.array([0.1, 0.5, 0.5, 0.9, -np.inf, np.nan], np.float32), size)
        full = np.argsort(-values, kind="stable")
        for n in (1, 2, 3, 64, 500):
            head = rank_module._best_first(values, n)
            assert len(head) >= min(n, size) and head.tolist() == full[:len(head)].tolist()
            assert len(head) == size or not values[full[len(head)]] >= values[head[-1]]  # no tie left out
