"""rank(): candidates, taste scores, diversity rules, seeds, uncertain mode, explanations, speed on 100k x 128."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from recsys.library.track import Track
from recsys.recommender.classifier import RatingModel
from recsys.recommender.rank import RankError
from recsys.recommender.rank import rank as real_rank


@dataclass
class Lib:
    keys: list[str]
    vectors: np.ndarray
    meta: object
    encoder_id: str = "enc"


def rank(*args, **kwargs):
    """The files of these synthetic libraries do not exist: every test but one says they do."""
    kwargs.setdefault("exists", lambda path: True)
    return real_rank(*args, **kwargs)


def unit(rng, n, dim):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def library(n=200, dim=16, seed=0, n_artists=40, as_table=False):
    rng = np.random.default_rng(seed)
    vectors = unit(rng, n, dim)
    paths = [f"/m/{i:05d}.flac" for i in range(n)]
    meta = {"key": paths, "path": paths, "start_s": [0.0] * n, "artist": [f"Artist {i % n_artists}" for i in range(n)],
            "title": [f"Song {i}" for i in range(n)], "album": [f"Album {i % (2 * n_artists)}" for i in range(n)],
            "track_number": [i % 12 + 1 for i in range(n)], "duration_s": [200.0] * n}
    return Lib(paths, vectors, pa.table(meta) if as_table else meta)


def mlp_model(dim, direction):
    """A one-unit 'MLP' whose logit is 8 * (v . direction): predicted rating rises along ``direction``."""
    w1 = np.zeros((64, dim), dtype=np.float32)
    w1[0], w1[1] = direction, -direction
    w2 = np.zeros(64, dtype=np.float32)
    w2[0], w2[1] = 8.0, -8.0
    arrays = {"w1": w1, "b1": np.zeros(64, np.float32), "w2": w2, "b2": np.float32(0.0),
              "rated_vectors": direction[None, :].astype(np.float32)}
    return RatingModel("mlp", arrays, {})


def test_taste_ranking_prefers_liked_neighbourhood_and_skips_rated_and_missing():
    lib = library()
    liked = lib.vectors[0]
    sims = lib.vectors @ liked
    tracks = [Track(path=lib.keys[0], rating=1.0, artist="Artist 0", title="Song 0")]
    missing = lib.keys[int(np.argsort(-sims)[1])]
    out = rank(lib, tracks, None, top_n=10, max_per_artist=10, max_per_album=10,
               exists=lambda p: p != missing)
    keys = [t.key for t in out]
    assert lib.keys[0] not in keys and missing not in keys and len(out) == 10
    assert np.mean([sims[lib.keys.index(k)] for k in keys]) > np.quantile(sims, 0.9)
    assert all(t.because == ["Artist 0 - Song 0"] for t in out) and out[0].predicted is None
    with_rated = rank(lib, tracks, None, top_n=10, include_rated=True, max_per_artist=10, max_per_album=10)
    assert with_rated[0].key == lib.keys[0]


def test_diversity_rules_hold():
    lib = library(n=400, n_artists=8, as_table=True)
    lib.meta = lib.meta.set_column(4, "title", pa.array([f"Song {i % 150}" for i in range(400)]))
    # Near-identical copies of track 1 (cos > 0.995) must not both appear.
    lib.vectors[2] = lib.vectors[1]
    tracks = [Track(path=lib.keys[0], rating=1.0)]
    out = rank(lib, tracks, None, top_n=20, max_per_artist=3, max_per_album=2, mmr_lambda=0.7)
    artists = [t.artist for t in out]
    assert len(out) == 20
    assert max(artists.count(a) for a in artists) <= 3
    assert max([t.album for t in out].count(a) for a in {t.album for t in out}) <= 2
    assert all(a != b for a, b in zip(artists, artists[1:], strict=False))
    pairs = [(t.artist, t.title) for t in out]
    assert len(set(pairs)) == len(pairs)
    chosen = lib.vectors[[lib.keys.index(t.key) for t in out]]
    sims = chosen @ chosen.T
    assert sims[~np.eye(len(out), dtype=bool)].max() <= 0.995


def test_mmr_lambda_trades_relevance_for_variety():
    lib = library(n=300, n_artists=300)
    tracks = [Track(path=lib.keys[0], rating=1.0)]
    focused = rank(lib, tracks, None, top_n=15, mmr_lambda=1.0)
    varied = rank(lib, tracks, None, top_n=15, mmr_lambda=0.3)

    def spread(out):
        v = lib.vectors[[lib.keys.index(t.key) for t in out]]
        return float((v @ v.T).mean())

    assert spread(varied) < spread(focused)
    assert [t.score for t in focused] == sorted((t.score for t in focused), reverse=True)


def test_seeds_build_around_given_tracks():
    lib = library()
    tracks = [Track(path=lib.keys[0], rating=1.0)]
    seed = lib.keys[5]
    out = rank(lib, tracks, None, top_n=5, seeds=[seed], max_per_artist=5, max_per_album=5, mmr_lambda=1.0)
    sims = lib.vectors @ lib.vectors[5]
    assert seed not in [t.key for t in out]
    assert lib.keys.index(out[0].key) == int(np.argsort(-sims)[1])
    with pytest.raises(RankError, match="seed track /nope has no vector"):
        rank(lib, tracks, None, seeds=["/nope"])


def test_model_scores_min_rating_and_explanations():
    lib = library()
    direction = lib.vectors[7]
    model = mlp_model(16, direction)
    tracks = [Track(path=lib.keys[7], rating=1.0, artist="A", title="Liked")]
    out = rank(lib, tracks, model, top_n=10, min_rating=0.7, w_knn=0.0)
    assert out and all(t.predicted >= 0.7 for t in out)
    assert all(t.because == ["A - Liked"] for t in out)
    predicted = model.predict(lib.vectors)
    assert out[0].predicted == pytest.approx(max(p for i, p in enumerate(predicted) if i != 7), abs=1e-6)


def test_uncertain_mode_picks_from_all_unrated_not_the_top():
    lib = library(n=300, n_artists=300)
    direction = lib.vectors[0]
    model = mlp_model(16, direction)
    tracks = [Track(path=lib.keys[0], rating=1.0)]
    taste = rank(lib, tracks, model, top_n=10)
    unsure = rank(lib, tracks, model, top_n=10, mode="uncertain", max_per_album=10)
    assert not {t.key for t in taste} & {t.key for t in unsure}
    unc = model.uncertainty(lib.vectors)
    picked = [lib.keys.index(t.key) for t in unsure]
    assert np.mean(unc[picked]) > np.quantile(unc, 0.9)
    with pytest.raises(RankError, match="needs a classifier"):
        rank(lib, tracks, None, mode="uncertain")


def test_no_taste_is_a_clear_error():
    with pytest.raises(RankError, match="no liked or played tracks"):
        rank(library(), [], None)


def test_fast_on_100k_by_128():
    lib = library(n=100_000, dim=128, seed=1, n_artists=5000, as_table=True)
    rng = np.random.default_rng(2)
    rated = rng.choice(100_000, 5000, replace=False)
    tracks = [Track(path=lib.keys[i], rating=0.2 * (1 + i % 5), playcount=int(i % 7)) for i in rated]
    model = mlp_model(128, lib.vectors[rated[0]])
    started = time.perf_counter()
    out = rank(lib, tracks, model, top_n=100)
    elapsed = time.perf_counter() - started
    assert len(out) == 100 and elapsed < 1.0, elapsed


def test_files_missing_on_disk_are_not_candidates(tmp_path):
    lib = library(n=20, n_artists=20)
    real = []
    for i in range(len(lib.keys)):
        path = tmp_path / f"{i}.flac"
        if i % 2 == 0:
            path.write_bytes(b"x")
        real.append(str(path))
    lib.keys, lib.meta["path"] = real, real
    out = real_rank(lib, [Track(path=real[0], rating=1.0)], None, top_n=20)
    assert len(out) == 9 and all(int(t.key.rsplit("/", 1)[1].split(".")[0]) % 2 == 0 for t in out)
