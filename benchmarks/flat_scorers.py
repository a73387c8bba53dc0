"""What the sound alone can do for a taste playlist of a flat, untagged library, and how far any ranker could go.

The owners of ``taste_quality.py`` (two liked soundtracks, two disliked, about 35-50 ratings), on the development
corpus copied as a "Downloads" folder (``taste_quality.py --flat-untagged``: anonymous names, no tags; its home must
be embedded first). For each draw every scorer orders the candidates (unrated, played fewer than 3 times) and the top
20 is scored: the share of the liked soundtracks' tracks, the disliked soundtracks' tracks in it, and whether it
meets the bar of issue 25 item 5 (a full top 20, >= 80 % liked, none disliked; a shorter list counts its missing
places as not liked).

Two families, in numpy on the home's snapshot (vectors, and the tag head's probabilities when the snapshot has them):

- **owner**: what a ranker knows, the owner's ratings: kernel votes of every rated track (liked 4-5 stars = 1, else
  0; weight ``exp(beta (cos - 1))``), the same with a veto of candidates with a disliked track among their 2 nearest
  rated tracks, logistic regression on the vectors, on the tags (log-probabilities) and on both, and k-means
  clusters of the whole library as "sound albums" whose rated tracks vote for the rest (faiss k-means).
- **ceiling**: what a ranker could do if the owner had rated EVERY other track of the library (each candidate
  scored with the labels of all other tracks, liked soundtrack or not): weighted 5 nearest neighbours, 5-fold
  logistic regression and kernel ridge regression (leave-one-out). No ranker of these vectors knows more than
  that, so where this falls short of the bar the vectors, not the ranking, stand in the way.

    PYTHONPATH=. python benchmarks/taste_quality.py --flat-untagged --draws 0 --large 0 --no-eval   # embed once
    PYTHONPATH=. python benchmarks/flat_scorers.py --first-seed 0 --large 20

``rank()`` itself (as ``taste_quality.py --flat-untagged --rank ""`` runs it) is the first line.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
from taste_quality import LIFTED, corpus, draw_plan, flat_untagged, owner

from recsys.synth.player_db import write_clementine_db

Scorer = Callable[[np.ndarray], np.ndarray]  # targets (1 liked, 0 not, NaN unknown) -> a score per track
BAR_LIKED = 0.8
CEILING = "ceiling: 5 nearest, every other track labelled"


def kernel_vote(sims: np.ndarray, beta: float = 20.0) -> Scorer:
    """Share of the known tracks' kernel weight that is liked, with half a vote of "not liked" at cosine 0.5."""
    def score(y: np.ndarray) -> np.ndarray:
        known = ~np.isnan(y)
        weight = np.exp(beta * (sims[:, known] - 1.0))
        return (weight @ y[known]) / (weight.sum(axis=1) + np.exp(-beta / 2))
    return score


def vetoed(base: Scorer, sims: np.ndarray, disliked: np.ndarray, m: int = 2) -> Scorer:
    """``base``, minus 10 for a track with a disliked track among its ``m`` nearest known tracks."""
    def score(y: np.ndarray) -> np.ndarray:
        known = np.flatnonzero(~np.isnan(y))
        nearest = known[np.argsort(-sims[:, known], axis=1)[:, :m]]
        return base(y) - 10.0 * disliked[nearest].any(axis=1)
    return score


def radius_veto(base: Scorer, sims: np.ndarray, disliked: np.ndarray, liked: np.ndarray) -> Scorer:
    """``base``, minus 10 for a track nearer a disliked track than the owner's liked tracks typically are: the radius
    is the median, over the liked rated tracks, of their cosine to their nearest disliked one (the owner's ratings
    calibrate it, not the corpus)."""
    nearest = sims[:, disliked].max(axis=1) if disliked.any() else np.full(len(sims), -np.inf)
    radius = float(np.median(nearest[liked])) if liked.any() else np.inf

    def score(y: np.ndarray) -> np.ndarray:
        return base(y) - 10.0 * (nearest >= radius)
    return score


def logistic(features: np.ndarray, lam: float = 100.0) -> Scorer:
    from recsys.recommender.models import fit_logistic

    def score(y: np.ndarray) -> np.ndarray:
        known = ~np.isnan(y)
        coef, bias = fit_logistic(features[known], y[known], np.ones(int(known.sum())), lam)
        return features @ coef + bias
    return score


def clusters(vectors: np.ndarray, k: int) -> np.ndarray:
    """The k-means (spherical, faiss) cluster of every track: the library's "sound albums"."""
    import faiss

    data = np.ascontiguousarray(vectors, dtype=np.float32)
    km = faiss.Kmeans(data.shape[1], k, niter=25, nredo=5, seed=1234, spherical=True, verbose=False,
                      min_points_per_centroid=1)
    km.train(data)
    return km.index.search(data, 1)[1][:, 0]


def cluster_vote(cluster: np.ndarray, k: int, base: Scorer) -> Scorer:
    """``base`` plus the liked share of the rated tracks of the track's ``cluster`` (a "sound album")."""
    def score(y: np.ndarray) -> np.ndarray:
        known = ~np.isnan(y)
        liked = np.bincount(cluster[known], weights=y[known], minlength=k)
        rated = np.bincount(cluster[known], minlength=k)
        return base(y) + (liked / (rated + 1.0))[cluster]
    return score


def leave_out(scorer: Scorer, folds: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The ceiling: each candidate scored with the labels of every track outside its fold known."""
    def score(full: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        out = np.full(len(full), -np.inf)
        for part in np.array_split(np.random.default_rng(0).permutation(candidates), folds):
            y = full.copy()
            y[part] = np.nan
            out[part] = scorer(y)[part]
        return out
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/devcorpus"))
    parser.add_argument("--dir", type=Path, default=Path("/tmp/recsys-taste"))
    parser.add_argument("--encoder", default="musicnn")
    parser.add_argument("--draws", type=int, default=0)
    parser.add_argument("--large", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    a = parser.parse_args()
    from recsys.config import IndexSettings
    from recsys.index.ann import current_snapshot

    root = a.dir / (a.encoder.replace("/", "_").replace(":", "_") + "-flat")
    tracks = flat_untagged(corpus(a.corpus), root / "Downloads")
    lib = current_snapshot(root / "home", IndexSettings())
    vectors = np.asarray(lib.vectors, dtype=np.float32)
    row = {p: i for i, p in enumerate(lib.values("path"))}
    label = np.empty(len(vectors), dtype=object)
    for t in tracks:
        label[row[t.path]] = t.soundtrack
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)  # a track is never its own neighbour
    tags = None if lib.tags is None else np.log(np.clip(np.asarray(lib.tags, dtype=np.float32), 1e-4, 1.0))
    nearest10 = np.argsort(-sims, axis=1)[:, :10]
    print("same-soundtrack precision@10 (each track's 10 nearest):", ", ".join(
        f"{name} {np.mean(label[nearest10[label == name]] == name):.2f}" for name in sorted(set(label))
        if np.sum(label == name) >= 8))
    vote = kernel_vote(sims)
    sound_albums = {k: clusters(vectors, k) for k in (10, 15, 25)}

    results: dict[str, list[tuple[float, int]]] = {}
    by_pair: dict[str, list[tuple[float, int]]] = {}
    for seed, large in draw_plan(a.draws, a.large, a.first_seed):
        songs, liked, disliked = owner(tracks, seed, large)
        rating = np.full(len(vectors), np.nan)
        plays = np.zeros(len(vectors))
        for s in songs:
            rating[row[s.path]] = s.rating if s.rating >= 0 else np.nan
            plays[row[s.path]] = s.playcount
        candidates = np.flatnonzero(np.isnan(rating) & (plays < 3))
        is_liked = np.isin(label, list(liked))
        is_disliked = np.isin(label, list(disliked))
        y = np.where(np.isnan(rating), np.nan, (rating >= 0.8).astype(float))
        owner_scorers: dict[str, Scorer] = {
            "owner: kernel votes": vote,
            "owner: kernel votes, disliked-in-2-nearest veto": vetoed(vote, sims, rating <= 0.4),
            "owner: kernel votes, radius veto (owner-calibrated)": radius_veto(vote, sims, rating <= 0.4,
                                                                              rating >= 0.8),
            "owner: logistic on vectors": logistic(vectors),
            "owner: kernel ridge on vectors": kernel_ridge(sims),
        }
        if tags is not None:
            owner_scorers["owner: logistic on tags"] = logistic(tags)
            owner_scorers["owner: logistic on vectors + tags"] = logistic(np.hstack([vectors, tags]))
        for k, cluster in sound_albums.items():
            owner_scorers[f"owner: kernel votes + k-means {k} sound albums"] = cluster_vote(cluster, k, vote)
        scores = {"owner: rank() (the playlist's ranking, caps lifted, no classifier)":
                  _ranked(lib, songs, root / "tuning.db", row)}
        scores.update({name: f(y) for name, f in owner_scorers.items()})
        truth = is_liked.astype(float)
        # a track is never its own neighbour (the diagonal is -inf): every label known is every OTHER label known
        scores[CEILING] = _nearest(sims, 5)(truth)
        scores["ceiling: logistic, every other track labelled"] = leave_out(logistic(vectors, 10.0), 5)(truth,
                                                                                                       candidates)
        scores["ceiling: kernel ridge, every other track labelled"] = kernel_ridge_loo(sims, truth)
        nearest5 = scores[CEILING]
        ten = np.argsort(-sims, axis=1)[:, :10]  # the candidate's 10 nearest, every label known
        scores["ceiling: 5 nearest, vetoed if a disliked track is among the 10 nearest"] = (
            nearest5 - 10.0 * is_disliked[ten].any(axis=1))
        for name, score in scores.items():
            top = candidates[np.argsort(-score[candidates], kind="stable")[:20]]
            top = top[np.isfinite(score[top])]
            results.setdefault(name, []).append((float(is_liked[top].sum()) / 20, int(is_disliked[top].sum())))
            if name == CEILING:
                pair = "+".join(sorted(liked))
                by_pair.setdefault(pair, []).append((float(is_liked[top].mean()), int(is_disliked[top].sum())))
        print(f"draw {seed}{' (large)' if large else ''}: pool {is_liked[candidates].mean():.0%} liked", flush=True)
    print(f"{'scorer':70s} top 20 liked  disliked  draws meeting the bar")
    for name, rows in results.items():
        bar = sum(liked_share >= BAR_LIKED and d == 0 for liked_share, d in rows)
        print(f"{name:70s} {statistics.mean(r[0] for r in rows):12.0%}  {statistics.mean(r[1] for r in rows):8.2f}"
              f"  {bar} of {len(rows)}")
    print(f"{CEILING}, by liked pair:")
    for pair, rows in sorted(by_pair.items()):
        print(f"  {pair:70s} {statistics.mean(r[0] for r in rows):12.0%}  {statistics.mean(r[1] for r in rows):8.2f}"
              f"  ({len(rows)} draws)")


def kernel_ridge(sims: np.ndarray, gamma: float = 5.0, lam: float = 1.0) -> Scorer:
    """Kernel ridge regression of the known labels (kernel ``exp(gamma (cos - 1))``), predicted for every track."""
    kernel = np.exp(gamma * (np.where(np.isfinite(sims), sims, 1.0) - 1.0))  # the diagonal: cosine 1

    def score(y: np.ndarray) -> np.ndarray:
        known = np.flatnonzero(~np.isnan(y))
        target = y[known] - y[known].mean()
        return kernel[:, known] @ np.linalg.solve(kernel[np.ix_(known, known)] + lam * np.eye(len(known)), target)
    return score


def kernel_ridge_loo(sims: np.ndarray, truth: np.ndarray, gamma: float = 5.0, lam: float = 1.0) -> np.ndarray:
    """Kernel ridge regression of ``truth`` (kernel ``exp(gamma (cos - 1))``), each track predicted from all the
    others (the closed-form leave-one-out: ``y_i - a_i / H_ii`` with ``H = (K + lam I)^-1``, ``a = H y``)."""
    kernel = np.exp(gamma * (np.where(np.isfinite(sims), sims, 1.0) - 1.0))  # the diagonal: cosine 1
    inverse = np.linalg.inv(kernel + lam * np.eye(len(kernel)))
    centred = truth - truth.mean()
    return truth - (inverse @ centred) / np.diag(inverse)


def _ranked(lib, songs: list, db: Path, row: dict[str, int]) -> np.ndarray:
    """The order of ``rank()`` itself as a score (its picks best first, every other track below them)."""
    import dataclasses

    from recsys.app.ranking import rank_settings
    from recsys.config import Settings
    from recsys.library.sources import load_library
    from recsys.recommender.rank import rank

    write_clementine_db(db, songs)
    knobs = dataclasses.replace(rank_settings(Settings()), top_n=20, max_per_artist=LIFTED, max_per_album=LIFTED)
    picks = rank(lib, load_library(db, []).tracks, None, knobs).tracks
    score = np.full(len(row), -np.inf)  # not in the playlist
    for i, t in enumerate(picks):
        score[row[t.path]] = len(picks) - i
    return score


def _nearest(sims: np.ndarray, k: int, beta: float = 20.0) -> Scorer:
    """Liked share of the ``k`` nearest known tracks, weighted by ``exp(beta (cos - 1))``."""
    def score(y: np.ndarray) -> np.ndarray:
        known = np.flatnonzero(~np.isnan(y))
        order = np.argsort(-sims[:, known], axis=1)[:, :k]
        weight = np.exp(beta * (np.take_along_axis(sims[:, known], order, axis=1) - 1.0))
        return (weight * y[known][order]).sum(axis=1) / weight.sum(axis=1)
    return score


if __name__ == "__main__":
    main()
