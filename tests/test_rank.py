"""rank(): neighbour votes, the blend, candidates, playlist rules and why a list is short, explanations, speed."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from recsys.app.ranking import rank_settings
from recsys.config import Settings
from recsys.library.catalogue import Catalogue
from recsys.library.track import Track, make_key
from recsys.recommender.labels import collect_labels
from recsys.recommender.neighbours import exact_search, library_groups, neighbourhoods, vote
from recsys.recommender.persistence import RatingModel
from recsys.recommender.rank import RankError, RankSettings
from recsys.recommender.rank import rank as real_rank


@dataclass
class Lib:
    keys: list[str]
    vectors: np.ndarray
    meta: object
    encoder_id: str = "enc"


PRODUCTION = rank_settings(Settings())  # the knobs a user gets (recsys/default.yaml's), through the one builder
KNOBS = {f.name for f in dataclasses.fields(RankSettings)}


def rank(lib, tracks, model, **kwargs):
    """rank() as `recsys playlist` calls it: the production settings section but for the knobs a test names (and
    says why). The files of these synthetic libraries do not exist: every test but one says they do."""
    knobs = dataclasses.replace(PRODUCTION, **{k: kwargs.pop(k) for k in list(kwargs) if k in KNOBS})
    kwargs.setdefault("exists", lambda path: True)
    return real_rank(lib, tracks, model, knobs, **kwargs)


def few_liked(*args, **kwargs):
    """rank() for tests about something else, whose owners like fewer tracks than the rule for tracks recommended on
    their sound alone asks votes of (``min_audio_votes``, 4 liked tracks' worth): that rule off, and only there."""
    return rank(*args, **{"min_audio_votes": 0.0, **kwargs})


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def library(n=200, dim=16, seed=0, n_artists=40, as_table=False, vectors=None):
    rng = np.random.default_rng(seed)
    vectors = unit(rng.normal(size=(n, dim))) if vectors is None else vectors
    paths = [f"/m/{i:05d}.flac" for i in range(n)]
    meta = {"key": paths, "path": paths, "start_s": [0.0] * n, "artist": [f"Artist {i % n_artists}" for i in range(n)],
            "title": [f"Song {i}" for i in range(n)], "album": [f"Album {i % (2 * n_artists)}" for i in range(n)],
            "track_number": [i % 12 + 1 for i in range(n)], "duration_s": [200.0] * n}
    return Lib(paths, vectors, pa.table(meta) if as_table else meta)


def clusters(n_clusters=6, per=30, dim=16, seed=0, spread=0.15):
    """Tracks around ``n_clusters`` random centres; returns (vectors, cluster of each track)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_clusters, dim)))
    which = np.repeat(np.arange(n_clusters), per)
    return unit(centres[which] + spread * rng.normal(size=(len(which), dim)) / np.sqrt(dim) * 4), which


def linear_model(dim, direction, blend=True):
    """A logistic 'classifier' whose logit is 8 * (v . direction): P(liked) rises along ``direction``."""
    arrays = {"coef": (8.0 * direction).astype(np.float32), "bias": np.float32(0.0),
              "stars_coef": (0.5 * direction).astype(np.float32), "stars_bias": np.float32(0.5),
              "rated_vectors": direction[None, :].astype(np.float32)}
    return RatingModel("logistic", arrays, {"kind": "logistic", "blend": blend})


def test_two_liked_styles_stay_distinct():
    vectors, which = clusters()
    lib = library(n=len(vectors), vectors=vectors, n_artists=len(vectors))
    # the owner likes styles 0 and 3 (half of each: enough liked votes for tracks their sound alone recommends),
    # dislikes style 1
    tracks = [Track(path=lib.keys[i], rating=1.0) for c in (0, 3) for i in np.flatnonzero(which == c)[:15]]
    tracks += [Track(path=lib.keys[i], rating=0.2) for i in np.flatnonzero(which == 1)[:3]]
    out = rank(lib, tracks, None, top_n=20, mmr_lambda=1.0).tracks
    styles = [int(which[lib.keys.index(t.key)]) for t in out]
    assert set(styles) == {0, 3} and min(styles.count(0), styles.count(3)) >= 8, styles
    # a track halfway between the two liked styles is what a centroid of them would rank first: the votes do not
    between = unit(vectors[which == 0].mean(0) + vectors[which == 3].mean(0))
    lib = library(n=len(vectors) + 1, vectors=np.vstack([vectors, between]), n_artists=len(vectors) + 1)
    assert float(lib.vectors[-1] @ unit(vectors[which == 0].mean(0))) > 0.5  # near both styles, in neither
    out = rank(lib, tracks, None, top_n=20, mmr_lambda=1.0).tracks
    assert lib.keys[-1] not in [t.key for t in out] and len(out) == 20


def test_votes_are_probabilities_shrunk_to_the_prior():
    vectors, which = clusters(n_clusters=3, per=20)
    lib = library(n=len(vectors), vectors=vectors)
    tracks = [Track(path=lib.keys[i], rating=1.0) for i in np.flatnonzero(which == 0)[:4]]
    tracks += [Track(path=lib.keys[i], rating=0.2) for i in np.flatnonzero(which == 1)[:4]]
    labels = collect_labels(lib.keys, tracks)
    hoods = neighbourhoods(exact_search(vectors), vectors, labels.rows, 10)
    assert not (hoods.rows == labels.rows[:, None]).any()  # a track never votes for itself
    p, support = vote(hoods, labels.rows, labels.liked, np.ones(len(labels.rows)), len(vectors))
    assert p[which == 0].mean() > 0.4 > 0.05 > p[which == 1].mean()
    assert (p[support == 0] == 0).all() and (0 <= p).all() and (p <= 1).all()
    assert (p[labels.rows[:4]] >= 0.5).all()  # a liked track's own vote counts (for --include-rated)
    half, _ = vote(hoods, labels.rows, labels.liked, np.ones(len(labels.rows)), len(vectors), prior=0.5)
    assert np.allclose(half[support == 0], 0.5)


def test_a_rated_album_votes_for_its_unrated_tracks_but_the_library_root_is_no_album():
    rng = np.random.default_rng(3)
    n = 120
    vectors = unit(rng.normal(size=(n, 16)))  # the audio says nothing: only the albums can
    folders = [f"/lib/Artist {i % 4}/Album {i % 12}" if i < 96 else "/lib" for i in range(n)]
    paths = [f"{f}/t{i}.ogg" for i, f in enumerate(folders)]
    meta = {"key": paths, "path": paths, "start_s": [0.0] * n, "artist": [""] * n, "title": [""] * n,
            "album": [""] * n, "track_number": [None] * n, "duration_s": [60.0] * n}
    lib = Lib(paths, vectors, meta)
    album = np.array([i % 12 if i < 96 else -1 for i in range(n)])
    stars = {int(i): 1.0 for i in np.flatnonzero(album == 0)[:3]}
    stars |= {int(i): 0.2 for i in np.flatnonzero(album == 1)[:3]}
    stars |= {int(i): 1.0 for i in range(96, 100)}  # liked tracks straight in the library's root folder
    tracks = [Track(path=p, rating=stars.get(i)) for i, p in enumerate(paths)]
    lifted = {"max_per_album": 10_000, "max_per_artist": 10_000, "mmr_lambda": 1.0, "top_n": n, "min_liked_share": None}

    def best5(**kw):  # the five highest like-probabilities (the playlist alternates artists, so not its order)
        out = sorted(rank(lib, tracks, None, **lifted, **kw).tracks, key=lambda t: -t.like_neighbours)
        return [lib.keys.index(t.key) for t in out[:5]], {t.key: t.like_neighbours for t in out}, out

    top, _, with_album = best5()
    assert all(album[i] == 0 for i in top), top  # the 5 unrated tracks of the liked album
    first = next(t for t in with_album if lib.keys.index(t.key) == top[0])
    assert first.album_voters == (3, 0) and first.artist_voters == (3, 0)  # what --explain shows
    off, without, _ = best5(album_vote=0, artist_vote=0)
    assert sum(album[i] == 0 for i in off) < 3  # the votes through the index alone cannot find them here
    root = [t for t in with_album if t.path.startswith("/lib/t")]
    assert root and all(t.like_neighbours == pytest.approx(without[t.key]) for t in root)  # the root is no album
    disliked = [t for t in with_album if album[lib.keys.index(t.key)] == 1]
    assert all(t.like_neighbours <= without[t.key] for t in disliked)  # the disliked album votes against its rest
    assert sum(t.like_neighbours for t in disliked) < 0.5 * sum(without[t.key] for t in disliked)


def test_album_and_artist_groups_are_named_only_around_the_evidence():
    tracks = [Track(path="/m/a/1.ogg", album="Best Of", artist="Band"),  # the evidence
              Track(path="/m/b/2.ogg", album="best of", artist="BAND"),  # same album and artist, other case
              Track(path="/m/c/3.ogg", album="Other", artist="band"),  # same artist only
              Track(path="/m/d/4.ogg", album="Else", artist="Nobody"),  # nothing shared
              Track(path="/m/5.ogg"), Track(path="/m/6.ogg")]  # untagged, in the library's root folder
    row_of = {t.key: i for i, t in enumerate(tracks)}
    g = library_groups(list(row_of), row_of, Catalogue.of(tracks), "/m", np.array([0, 4]))
    assert g.album[0] == g.album[1] >= 0 and g.album[2] != g.album[0] and g.album[3] == -1
    assert g.artist[0] == g.artist[1] == g.artist[2] >= 0 and g.artist[3] == -1
    assert g.album[4] == g.album[5] == -1 and g.artist[4] == -1  # a flat library is not one album


def test_untagged_tracks_are_capped_by_folder():
    vectors, which = clusters(n_clusters=2, per=30)
    n = len(vectors)
    paths = [f"/lib/{'liked' if c == 0 else 'other'}-{i % 3}/t{i}.ogg" for i, c in enumerate(which)]
    meta = {"key": paths, "path": paths, "start_s": [0.0] * n, "artist": [""] * n, "title": [""] * n,
            "album": [""] * n, "track_number": [None] * n, "duration_s": [60.0] * n}
    lib = Lib(paths, vectors, meta)
    tracks = [Track(path=paths[i], rating=1.0) for i in np.flatnonzero(which == 0)[:3]]
    tracks += [Track(path=p) for p in paths]
    ranking = rank(lib, tracks, None, top_n=20, max_per_album=2, max_per_artist=100, scale_caps=False,
                   min_liked_share=None)
    folders = [t.path.rsplit("/", 1)[0] for t in ranking.tracks]
    assert max(folders.count(f) for f in folders) <= 2 and len(ranking.tracks) == 12  # 6 folders x 2
    assert ranking.stopped.startswith("12 of 20 tracks: stopped by the album cap (--max-per-album 2)")
    assert "removed" in ranking.stopped and ranking.removed["album cap"] > 0
    assert ranking.tracks[0].label == ranking.tracks[0].path.rsplit("/", 1)[1]  # untagged: the file name


def test_played_tracks_are_not_recommended_unless_asked():
    lib = library()
    sims = lib.vectors @ lib.vectors[0]
    near = [int(i) for i in np.argsort(-sims)[1:4]]
    tracks = [Track(path=lib.keys[0], rating=1.0)] + [Track(path=lib.keys[i], playcount=5) for i in near]
    keys = [t.key for t in few_liked(lib, tracks, None, top_n=10, max_per_artist=10, max_per_album=10).tracks]
    assert not {lib.keys[i] for i in near} & set(keys)
    again = few_liked(lib, tracks, None, top_n=10, max_per_artist=10, max_per_album=10, include_played=True).tracks
    assert {lib.keys[i] for i in near} <= {t.key for t in again}


def test_taste_ranking_skips_rated_and_missing_and_explains():
    lib = library()
    sims = lib.vectors @ lib.vectors[0]
    order = np.argsort(-sims)
    missing = lib.keys[int(order[1])]
    tracks = [Track(path=lib.keys[0], rating=1.0, artist="Artist 0", title="Song 0"),
              Track(path=lib.keys[int(order[-1])], rating=0.2, artist="X", title="Disliked")]
    out = few_liked(lib, tracks, None, top_n=10, max_per_artist=10, max_per_album=10,
               exists=lambda p: p != missing).tracks
    keys = [t.key for t in out]
    assert lib.keys[0] not in keys and missing not in keys and len(out) == 10
    assert np.mean([sims[lib.keys.index(k)] for k in keys]) > np.quantile(sims, 0.8)
    first = out[0]
    assert first.because == ["Artist 0 - Song 0"] and first.predicted == pytest.approx(0.2 + 0.8 * first.like)
    assert first.near_liked[0].stars == 5.0 and first.near_liked[0].similarity == pytest.approx(
        float(sims[lib.keys.index(first.key)]), abs=1e-5)
    assert first.near_disliked[0].label == "X - Disliked" and first.near_disliked[0].stars == 1.0
    assert first.like == first.like_neighbours and first.like_model is None
    with_rated = few_liked(lib, tracks, None, top_n=10, include_rated=True, max_per_artist=10, max_per_album=10)
    assert with_rated.tracks[0].key == lib.keys[0]


def test_diversity_rules_hold():
    lib = library(n=400, n_artists=8, as_table=True)
    lib.meta = lib.meta.set_column(4, "title", pa.array([f"Song {i % 150}" for i in range(400)]))
    lib.vectors[2] = lib.vectors[1]  # near-identical copies (cos > 0.995) must not both appear
    tracks = [Track(path=lib.keys[0], rating=1.0)]
    out = rank(lib, tracks, None, top_n=20, max_per_artist=3, max_per_album=2, mmr_lambda=0.7, scale_caps=False,
               min_liked_share=None).tracks
    artists = [t.artist for t in out]
    assert len(out) == 20
    assert max(artists.count(a) for a in artists) <= 3
    assert max([t.album for t in out].count(a) for a in {t.album for t in out}) <= 2
    assert all(a != b for a, b in zip(artists, artists[1:], strict=False))
    pairs = [(t.artist, t.title) for t in out]
    assert len(set(pairs)) == len(pairs)
    chosen = lib.vectors[[lib.keys.index(t.key) for t in out]]
    assert (chosen @ chosen.T)[~np.eye(len(out), dtype=bool)].max() <= 0.995


def test_mmr_lambda_trades_relevance_for_variety():
    vectors, which = clusters(n_clusters=10, per=30)
    lib = library(n=len(vectors), vectors=vectors, n_artists=len(vectors))
    tracks = [Track(path=lib.keys[i], rating=1.0) for c in range(4) for i in np.flatnonzero(which == c)[:15]]
    focused = few_liked(lib, tracks, None, top_n=15, mmr_lambda=1.0).tracks
    varied = few_liked(lib, tracks, None, top_n=15, mmr_lambda=0.3).tracks

    def spread(out):
        v = lib.vectors[[lib.keys.index(t.key) for t in out]]
        return float((v @ v.T).mean())

    assert spread(varied) < spread(focused)
    assert [t.score for t in focused] == sorted((t.score for t in focused), reverse=True)


def test_seeds_build_around_given_tracks():
    lib = library()
    tracks = [Track(path=lib.keys[0], rating=1.0)]
    out = rank(lib, tracks, None, top_n=5, seeds=[lib.keys[5]], max_per_artist=5, max_per_album=5,
               mmr_lambda=1.0).tracks
    sims = lib.vectors @ lib.vectors[5]
    assert lib.keys[5] not in [t.key for t in out]
    assert lib.keys.index(out[0].key) == int(np.argsort(-sims)[1])
    with pytest.raises(RankError, match="seed track /nope has no vector"):
        rank(lib, tracks, None, seeds=["/nope"])


def test_blend_classifier_only_and_the_chance_gate():
    lib = library(n=300, n_artists=300)
    direction = lib.vectors[7]
    tracks = [Track(path=lib.keys[i], rating=1.0) for i in (100, 101)]
    gated = few_liked(lib, tracks, linear_model(16, direction, blend=False), top_n=10)
    alone = few_liked(lib, tracks, None, top_n=10)
    assert gated.scorer == "neighbours" and [t.key for t in gated.tracks] == [t.key for t in alone.tracks]
    only = few_liked(lib, tracks, linear_model(16, direction), top_n=10, scorer="classifier", mmr_lambda=1.0)
    p = linear_model(16, direction).like_probability(lib.vectors)
    assert only.tracks[0].like == pytest.approx(max(p[i] for i in range(300) if i not in (100, 101)), abs=1e-6)
    blend = few_liked(lib, tracks, linear_model(16, direction), top_n=10, w_model=1.0, w_knn=1.0)
    t = blend.tracks[0]
    assert blend.scorer.startswith("blend") and t.like == pytest.approx((t.like_model + t.like_neighbours) / 2)
    assert t.predicted == pytest.approx(0.2 + 0.8 * t.like)
    high = few_liked(lib, tracks, linear_model(16, direction), top_n=10, min_rating=0.4)
    assert high.tracks and all(t.predicted >= 0.4 and t.like >= 0.25 - 1e-6 for t in high.tracks)


def test_uncertain_mode_picks_from_all_unrated_not_the_top():
    lib = library(n=300, n_artists=300)
    model = linear_model(16, lib.vectors[0])
    tracks = [Track(path=lib.keys[0], rating=1.0)]
    taste = rank(lib, tracks, model, top_n=10).tracks
    unsure = rank(lib, tracks, model, top_n=10, mode="uncertain", max_per_album=10).tracks
    assert not {t.key for t in taste} & {t.key for t in unsure}
    assert rank(lib, tracks, None, top_n=10, mode="uncertain").tracks  # the votes' doubt needs no classifier


def test_uncertain_mode_skips_an_album_the_owner_has_judged():
    """Issue 27: a soundtrack rated 19 times with 1-2 stars is judged, however unsure the classifier alone is (an
    even-odds classifier here) and however far its unrated tracks sound from every rated one."""
    rng = np.random.default_rng(3)
    far = unit(rng.normal(size=16))
    judged = unit(np.vstack([far + 0.05 * rng.normal(size=(19, 16)),  # 19 rated 1-2 stars, alike
                             rng.normal(size=(6, 16))]))  # 6 unrated that sound like nothing rated
    centres = unit(rng.normal(size=(5, 16)))
    rest = unit(np.repeat(centres, 24, axis=0) + 0.1 * rng.normal(size=(120, 16)))  # the rest: near 5 liked ones
    vectors = np.vstack([judged, rest]).astype(np.float32)
    lib = library(n=len(vectors), vectors=vectors, n_artists=len(vectors))
    lib.meta["album"] = ["Disliked OST"] * 25 + [f"Album {i}" for i in range(120)]
    lib.meta["artist"] = ["Composer"] * 25 + [f"Artist {i}" for i in range(120)]
    tracks = [Track(path=lib.keys[i], rating=0.2 if i % 2 else 0.4, album="Disliked OST", artist="Composer")
              for i in range(19)]
    tracks += [Track(path=lib.keys[25 + 24 * i], rating=1.0, album=f"Album {24 * i}", artist=f"Artist {24 * i}")
               for i in range(5)]
    tracks += [Track(path=lib.keys[i], album="Disliked OST", artist="Composer") for i in range(19, 25)]
    even = RatingModel("logistic", {"coef": np.zeros(16, np.float32), "bias": np.float32(0.0),
                                    "stars_coef": np.zeros(16, np.float32), "stars_bias": np.float32(0.5),
                                    "rated_vectors": vectors[[*range(19), *range(25, 145, 24)]]},
                       {"kind": "logistic", "blend": True})
    unsure = rank(lib, tracks, even, top_n=10, mode="uncertain", max_per_album=10, max_per_artist=10).tracks
    assert len(unsure) == 10
    assert not {t.key for t in unsure} & set(lib.keys[19:25]), [t.album for t in unsure]


def test_uncertain_mode_offers_even_odds_of_the_probability_it_shows():
    """Issue 27 walk: `--mode uncertain` printed `1.0*  like 0%` on every track: it ranked by a uniform prior's
    doubt (no vote at all: even odds) while the probability shown is shrunk toward PRIOR 0 (no vote: 0 %). One
    prior for both: what it offers is near even odds of the like-probability shown, and thinly voted."""
    vectors, which = clusters(n_clusters=6, per=30)
    lib = library(n=len(vectors), vectors=vectors, n_artists=len(vectors))
    liked = [i for i in range(180) if which[i] == 0][:6]
    mixed = [i for i in range(180) if which[i] == 1][:4]  # a style the owner rated 5 and 1 stars alike
    tracks = [Track(path=lib.keys[i], rating=1.0) for i in liked]
    tracks += [Track(path=lib.keys[i], rating=1.0 if j % 2 else 0.2) for j, i in enumerate(mixed)]
    unsure = rank(lib, tracks, None, top_n=8, mode="uncertain", max_per_album=8, max_per_artist=8).tracks
    assert len(unsure) == 8
    assert all(0.2 <= t.like <= 0.8 for t in unsure), [round(t.like, 2) for t in unsure]
    assert unsure[0].score == pytest.approx(max(t.score for t in unsure))


def test_a_copy_of_a_rated_track_is_no_candidate_unless_include_rated():
    """Issue 27 walk: "You Lose..." (cosine 1.00 to the main theme rated 5*) came 3rd, `near liked: ... Main Theme
    5* cos 1.00`. A copy of a rated track, by sound or by performer and title (the lists' one-recording rule), is
    no discovery: left out and counted, unless --include-rated."""
    vectors, which = clusters(n_clusters=6, per=30)
    vectors = vectors.copy()
    liked = [i for i in range(180) if which[i] == 0][:8]
    vectors[liked[-1] + 1] = vectors[liked[0]]  # an unrated copy of a liked track (another name, same sound)
    lib = library(n=len(vectors), vectors=vectors, n_artists=len(vectors))
    lib.meta["artist"][liked[-1] + 2], lib.meta["title"][liked[-1] + 2] = lib.meta["artist"][liked[1]], "Song 1"
    lib.meta["title"][liked[1]] = "Song 1"  # ... and one of the same performer and title
    copies = {lib.keys[liked[-1] + 1], lib.keys[liked[-1] + 2]}
    tracks = [Track(path=lib.keys[i], rating=1.0, artist=lib.meta["artist"][i], title=lib.meta["title"][i])
              for i in liked]
    out = few_liked(lib, tracks, None, top_n=40, max_per_album=40, max_per_artist=40, min_liked_share=None)
    assert len(out.tracks) > 10 and not copies & {t.key for t in out.tracks}
    assert out.removed.get("copy of a track you rated or play often") == 2
    both = few_liked(lib, tracks, None, top_n=40, max_per_album=40, max_per_artist=40, min_liked_share=None,
                     include_rated=True)
    assert "copy of a track you rated or play often" not in both.removed  # one version of each, as in every list
    assert {lib.keys[liked[0]], lib.keys[liked[-1] + 1]} & {t.key for t in both.tracks}


def test_stars_shown_are_the_like_probability_and_min_rating_filters_on_them():
    """Issue 27: '2.9* ... like 87%' came from a second model (a ridge regression of the stars); the stars shown and
    --min-rating are one monotone function of the probability that ranked."""
    lib = library(n=300, n_artists=300)
    direction = lib.vectors[7]
    model = linear_model(16, -direction)  # its ridge stars fall where its (and the votes') like-probability rises
    tracks = [Track(path=lib.keys[i], rating=1.0) for i in (100, 101)]
    out = few_liked(lib, tracks, model, top_n=30, w_model=1.0, w_knn=1.0, max_per_album=30,
                    max_per_artist=30).tracks
    likes = np.array([t.like for t in out])
    stars = np.array([t.predicted * 5 for t in out])
    assert np.allclose(stars, 1 + 4 * likes, atol=1e-5)  # 3 stars at even odds, 5 at certainty
    assert all((s >= 3.0) == (p >= 0.5) for s, p in zip(stars, likes, strict=True))
    kept = few_liked(lib, tracks, model, top_n=30, w_model=1.0, w_knn=1.0, max_per_album=30, max_per_artist=30,
                     min_rating=0.2 + 0.8 * float(np.median(likes))).tracks
    assert kept and all(t.like >= float(np.median(likes)) - 1e-6 for t in kept)
    assert {t.key for t in out if t.like > float(np.median(likes)) + 1e-6} <= {t.key for t in kept}


def test_no_taste_is_a_clear_error():
    with pytest.raises(RankError, match="no liked or often played tracks"):
        rank(library(), [], None)


def test_a_large_snapshot_table_fills_the_playlist():
    """20,000 x 128 read from a pyarrow table, with a blended classifier: a full playlist (its time is a benchmark's
    business: benchmarks/playlist_latency.py)."""
    lib = library(n=20_000, dim=128, seed=1, n_artists=5000, as_table=True)
    rng = np.random.default_rng(2)
    rated = rng.choice(20_000, 100, replace=False)
    tracks = [Track(path=lib.keys[i], rating=0.2 * (1 + i % 5), playcount=int(i % 7)) for i in rated]
    model = linear_model(128, lib.vectors[rated[0]])
    out = few_liked(lib, tracks, model, top_n=100).tracks  # random ratings in 128-D: few liked votes per track
    assert len(out) == 100 and len({t.key for t in out}) == 100


def test_files_missing_on_disk_are_not_candidates(tmp_path):
    lib = library(n=20, n_artists=20)
    real = []
    for i in range(len(lib.keys)):
        path = tmp_path / f"{i}.flac"
        if i % 2 == 0:
            path.write_bytes(b"x")
        real.append(str(path))
    lib.keys, lib.meta["path"] = real, real
    ranking = few_liked(lib, [Track(path=real[0], rating=1.0)], None, top_n=20, exists=os.path.exists)
    assert len(ranking.tracks) == 9 and all(int(t.key.rsplit("/", 1)[1].split(".")[0]) % 2 == 0
                                            for t in ranking.tracks)
    assert "missing file 10" in ranking.stopped


def test_only_the_strongest_ratings_vote_past_max_voters():
    vectors, which = clusters(n_clusters=2, per=30)
    lib = library(n=len(vectors), vectors=vectors, n_artists=len(vectors))
    # style 0: three 5-star ratings; style 1: many 4-star ones. With 3 voters only the 5-star ones vote.
    tracks = [Track(path=lib.keys[i], rating=1.0) for i in np.flatnonzero(which == 0)[:3]]
    tracks += [Track(path=lib.keys[i], rating=0.8) for i in np.flatnonzero(which == 1)[:10]]
    out = few_liked(lib, tracks, None, top_n=10, max_voters=3, mmr_lambda=1.0).tracks
    assert {int(which[lib.keys.index(t.key)]) for t in out} == {0}
    assert {int(which[lib.keys.index(t.key)]) for t in few_liked(lib, tracks, None, top_n=10).tracks} >= {1}


def test_the_evidence_rule_stops_short_rather_than_recommend_what_the_ratings_argue_against():
    vectors, which = clusters(n_clusters=3, per=20)  # cluster 0 liked, 1 disliked, 2 never rated
    n = len(vectors)
    paths = [f"/lib/style{c}/t{i}.ogg" for i, c in enumerate(which)]
    meta = {"key": paths, "path": paths, "start_s": [0.0] * n, "artist": [""] * n, "title": [""] * n,
            "album": [""] * n, "track_number": [None] * n, "duration_s": [60.0] * n}
    lib = Lib(paths, vectors, meta)
    stars = {int(i): 1.0 for i in np.flatnonzero(which == 0)[:5]}
    stars |= {int(i): 0.2 for i in np.flatnonzero(which == 1)[:5]}
    tracks = [Track(path=p, rating=stars.get(i)) for i, p in enumerate(paths)]
    kw = {"top_n": 40, "max_per_album": 10_000, "max_per_artist": 10_000}
    off = rank(lib, tracks, None, min_liked_share=None, **kw)
    assert len(off.tracks) == 40 and any(which[lib.keys.index(t.key)] == 1 for t in off.tracks)  # filled up
    on = rank(lib, tracks, None, **kw)
    styles = [which[lib.keys.index(t.key)] for t in on.tracks]
    assert 15 <= len(styles) < 40 and styles.count(1) == 0  # the 15 unrated liked-style tracks, not the disliked
    assert on.stopped.startswith(f"{len(styles)} of 40 tracks: stopped by the evidence rule")
    assert "recommend.min_liked_share" in on.stopped and on.removed["too little liked evidence"] > 0


def test_sound_alone_needs_more_than_one_liked_track():
    vectors, which = clusters(n_clusters=3, per=20, spread=0.05)  # cluster 0 liked a lot, 1 liked once, 2 unrated
    n = len(vectors)
    albums = ["Liked Album" if c == 1 and i % 2 else "" for i, c in enumerate(which)]  # half of style 1 is tagged
    paths = [f"/lib/style{c}{'' if albums[i] or c != 1 else '-loose'}/t{i}.ogg" for i, c in enumerate(which)]
    meta = {"key": paths, "path": paths, "start_s": [0.0] * n, "artist": [""] * n, "title": [""] * n,
            "album": albums, "track_number": [None] * n, "duration_s": [60.0] * n}
    lib = Lib(paths, vectors, meta)
    many = np.flatnonzero(which == 0)[:8]
    once = next(i for i in np.flatnonzero(which == 1) if albums[i])  # one liked track, of the tagged album
    stars = {int(i): 1.0 for i in many} | {int(once): 1.0}
    tracks = [Track(path=p, rating=stars.get(i), album=albums[i]) for i, p in enumerate(paths)]
    kw = {"top_n": 60, "max_per_album": 10_000, "max_per_artist": 10_000}

    off = rank(lib, tracks, None, min_audio_votes=0.0, exists=lambda p: True, **kw)
    untagged_once = {lib.keys[i] for i in np.flatnonzero(which == 1) if not albums[i]}
    assert untagged_once & {t.key for t in off.tracks}  # one liked track vouched for its untagged neighbours

    on = rank(lib, tracks, None, exists=lambda p: True, **kw)  # the default: four liked tracks' worth
    got = {t.key for t in on.tracks}
    assert not untagged_once & got  # its sound alone, one liked track: not enough
    assert {lib.keys[i] for i in np.flatnonzero(which == 1) if albums[i] and i != once} <= got  # album-mates stay
    assert {lib.keys[i] for i in np.flatnonzero(which == 0) if i not in many} <= got  # eight liked neighbours do
    assert on.removed["too few liked votes for a track recommended on its sound alone"] >= len(untagged_once)
    assert "recommend.min_audio_votes" in (on.stopped or "")
    seeded = rank(lib, tracks, None, seeds=[lib.keys[once]], exists=lambda p: True, **kw)
    assert untagged_once & {t.key for t in seeded.tracks}  # around a seed the rule does not apply


def test_a_folder_tagged_unevenly_is_one_album_for_the_votes():
    """A soundtrack whose composers tagged their own tracks (and one file left untagged) lies in one folder: the
    owner's ratings of one tag vouch for the rest of the folder. A folder of many albums' tracks stays apart."""
    vectors, _ = clusters(n_clusters=1, per=40)
    tags = ["OST"] * 6 + ["OST: Gold Edition"] * 3 + [""] + [f"Single {i}" for i in range(30)]
    paths = [f"/lib/Soundtrack/t{i}.ogg" for i in range(10)] + [f"/lib/Singles/s{i}.ogg" for i in range(30)]
    n = len(paths)
    meta = {"key": paths, "path": paths, "start_s": [0.0] * n, "artist": [""] * n, "title": [""] * n,
            "album": tags, "track_number": [None] * n, "duration_s": [60.0] * n}
    lib = Lib(paths, vectors, meta)
    tracks = [Track(path=paths[i], rating=1.0, album=tags[i]) for i in range(4)]  # four of "OST" liked
    tracks += [Track(path=paths[10], rating=1.0, album=tags[10])]  # and one single
    tracks += [Track(path=p, album=a) for p, a in zip(paths, tags, strict=True) if p not in {t.path for t in tracks}]
    library = Catalogue.of(tracks)
    evidence = np.array([lib.keys.index(t.path) for t in tracks if t.rating is not None])
    groups = library_groups(lib.keys, {k: i for i, k in enumerate(lib.keys)}, library, "/lib", evidence)
    assert len({int(groups.album[i]) for i in range(10)}) == 1 and groups.album[0] >= 0  # tags differ: one album
    assert len({int(groups.album[i]) for i in range(10, 40)}) == 30  # 30 tags: each single its own album
    assert groups.album[10] != groups.album[0]

    got = rank(lib, tracks, None, top_n=40, max_per_album=10_000, max_per_artist=10_000, min_audio_votes=3.0)
    keys = {t.key for t in got.tracks}
    assert set(paths[4:10]) <= keys  # the Gold Edition and the untagged file: album-mates of the liked tracks
    assert not keys & set(paths[11:])  # one liked single does not vouch for the other singles' folder


def test_sound_alone_is_not_enough_for_an_album_you_rated_without_liking_it():
    vectors, _ = clusters(n_clusters=1, per=60)  # one sound: every track is near every liked one
    folders = ["Liked"] * 20 + ["Meh"] * 20 + ["Mixed"] * 20
    paths = [f"/lib/{f}/t{i}.ogg" for i, f in enumerate(folders)]  # untagged: the folder is the album
    n = len(paths)
    meta = {"key": paths, "path": paths, "start_s": [0.0] * n, "artist": [""] * n, "title": [""] * n,
            "album": [""] * n, "track_number": [None] * n, "duration_s": [60.0] * n}
    lib = Lib(paths, vectors, meta)
    stars = {i: 1.0 for i in range(10)} | {20: 0.6} | {40: 1.0, 41: 0.6}  # Meh: one 3-star rating, nothing liked
    tracks = [Track(path=p, rating=stars.get(i)) for i, p in enumerate(paths)]
    kw = {"top_n": 60, "max_per_album": 10_000, "max_per_artist": 10_000}
    meh = {paths[i] for i in range(21, 40)}

    off = few_liked(lib, tracks, None, block_unliked_albums=False, **kw)
    assert len(meh & {t.path for t in off.tracks}) >= 10  # its sound alone vouched for the album you found so-so

    on = few_liked(lib, tracks, None, **kw)
    got = {t.path for t in on.tracks}
    assert not meh & got
    assert {paths[i] for i in range(10, 20)} <= got and {paths[i] for i in range(42, 60)} & got  # liked albums stay
    assert on.removed["its album or artist is rated and none of it liked"] >= 10
    seeded = few_liked(lib, tracks, None, seeds=[paths[0]], **kw)
    assert meh & {t.path for t in seeded.tracks}  # around a seed the rule does not apply


def test_caps_rise_for_a_taste_of_few_albums_unless_disabled():
    vectors, which = clusters(n_clusters=2, per=30)
    n = len(vectors)
    paths = [f"/lib/Artist {c}{i % 2}/Album/t{i}.ogg" for i, c in enumerate(which)]  # two albums per style
    meta = {"key": paths, "path": paths, "start_s": [0.0] * n, "artist": [""] * n, "title": [""] * n,
            "album": [""] * n, "track_number": [None] * n, "duration_s": [60.0] * n}
    lib = Lib(paths, vectors, meta)
    tracks = [Track(path=paths[i], rating=1.0) for i in np.flatnonzero(which == 0)[:4]]
    tracks += [Track(path=paths[i], rating=0.2) for i in np.flatnonzero(which == 1)[:4]]
    fixed = few_liked(lib, tracks, None, top_n=20, scale_caps=False)
    assert len(fixed.tracks) == 6 and "cap (--max-per-a" in fixed.stopped
    scaled = few_liked(lib, tracks, None, top_n=20)  # two liked albums and artists: caps of top_n / 2
    assert len(scaled.tracks) == 20 and all(which[lib.keys.index(t.key)] == 0 for t in scaled.tracks)


def test_a_compilation_is_one_album_under_the_cap():
    """The album cap groups a "Various Artists" album as the votes do: by its album artist, which only the live
    library holds (the snapshot has artist and album). On main each of its twelve singers made an album of its own,
    and 11 of its tracks filled one playlist under ``max_per_album: 3``. The caps are not raised here
    (``scale_caps``: a taste of one album would raise the album cap to the whole playlist)."""
    rng = np.random.default_rng(7)
    centre = unit(rng.normal(size=16))
    near = unit(centre + 0.35 * unit(rng.normal(size=(12, 16))))  # the compilation: one sound, no two copies
    vectors = np.concatenate([near, unit(rng.normal(size=(40, 16)))]).astype(np.float32)
    tracks = [Track(path=f"/m/VA/Hits/{i:02d}.ogg", album="Hits", albumartist="Various Artists",
                    artist=f"Singer {i}", title=f"Song {i}", rating=1.0 if i == 0 else None) for i in range(12)]
    tracks += [Track(path=f"/m/Solo {i}/Misc/{i:02d}.ogg", album="Misc", artist=f"Solo {i}", title=f"T {i}")
               for i in range(40)]
    paths = [t.path for t in tracks]
    meta = {"key": paths, "path": paths, "start_s": [0.0] * len(paths), "artist": [t.artist for t in tracks],
            "title": [t.title for t in tracks], "album": [t.album for t in tracks],
            "track_number": [None] * len(paths), "duration_s": [60.0] * len(paths)}
    ranking = rank(Lib(paths, vectors, meta), tracks, None, top_n=20, max_per_album=3, scale_caps=False,
                        exists=lambda p: True)
    assert [t.album for t in ranking.tracks] == ["Hits"] * 3, [t.path for t in ranking.tracks]
    assert ranking.removed["album cap"] == 8 and "album cap (--max-per-album 3) 8" in ranking.stopped


def flat_untagged(n_styles=6, per=30, seed=0, spread=0.15):
    """A "Downloads" folder: every track untagged, straight in one folder under an anonymous name."""
    vectors, which = clusters(n_clusters=n_styles, per=per, seed=seed, spread=spread)
    order = np.random.default_rng(seed).permutation(len(vectors))  # the name says nothing of the style
    vectors, which = vectors[order], which[order]
    n = len(vectors)
    paths = [f"/home/me/Downloads/track{i:03d}.ogg" for i in range(n)]
    meta = {"key": paths, "path": paths, "start_s": [0.0] * n, "artist": [""] * n, "title": [""] * n,
            "album": [""] * n, "track_number": [None] * n, "duration_s": [60.0] * n}
    return Lib(paths, vectors, meta), which


def test_a_flat_untagged_library_gets_a_full_playlist_that_follows_the_ratings():
    lib, which = flat_untagged()
    rng = np.random.default_rng(1)
    stars = {}
    for style, value, count in ((0, 1.0, 6), (1, 0.8, 6), (2, 0.2, 5), (3, 0.2, 5), (4, 0.6, 2), (5, 0.6, 2)):
        for i in rng.permutation(np.flatnonzero(which == style))[:count]:
            stars[int(i)] = value
    tracks = [Track(path=p, rating=stars.get(i)) for i, p in enumerate(lib.keys)]
    ranking = rank(lib, tracks, None, top_n=20)
    styles = [int(which[lib.keys.index(t.key)]) for t in ranking.tracks]
    assert len(styles) == 20, ranking.stopped  # neither one album (capped at 3) nor one artist
    assert sum(s in (0, 1) for s in styles) >= 16 and not {2, 3} & set(styles), styles
    labels = collect_labels(lib.keys, tracks)
    assert set(labels.artists) == {""} and len(set(labels.albums)) == len(labels.albums)  # no group at all


def test_the_ranking_knobs_come_from_the_settings_and_these_tests_run_on_the_production_ones():
    """``rank_settings`` is the one place the ranking's section is built: each knob from its setting (the values
    below are all off the defaults), and this file's ``rank`` runs on what a user gets from recsys/default.yaml."""
    from recsys.config import load_settings

    assert rank_settings(load_settings(environ={}, remembered=False)) == PRODUCTION == rank_settings(Settings())
    recommend = {"top_n": 7, "max_per_artist": 2, "max_per_album": 5, "mmr_lambda": 0.4, "w_model": 0.3,
                 "w_knn": 0.6, "played_min": 9, "max_voters": 11, "album_vote": 0.25, "artist_vote": 0.125,
                 "min_liked_share": 0.375, "min_audio_votes": 2.5, "block_unliked_albums": False, "scale_caps": False}
    got = rank_settings(load_settings(overrides={"recommend": recommend,
                                                 "classifier": {"knn_k": 13, "pseudo_until": 17}},
                                      environ={}, remembered=False))
    assert got == RankSettings(**recommend, neighbours_k=13, pseudo_until=17)
    assert all(getattr(PRODUCTION, k) != v for k, v in recommend.items())  # each value above is one a test can see


@pytest.mark.parametrize("seed", range(3))
def test_library_groups_join_exactly_the_tracks_album_of_and_artist_of_join(seed):
    """The album and artist ids (tag values coded once, a lookup per track) put a track with an evidence track exactly
    when the one rule says so: the same ``album_of`` key (joined through the evidence's release folders, those of
    at most RELEASE_MAX_TAGS album tags), the same ``artist_of`` key; on messy libraries (compilations, album titles
    several artists share, untagged files, loose folders, tracks without a vector, CUE segments of one file)."""
    import random

    rng = random.Random(seed)
    for _ in range(60):
        _check_groups(rng)


def _check_groups(rng) -> None:  # noqa: ANN001 - a random.Random
    """One random library: library_groups against album_of / artist_of (see the test above)."""
    from recsys.library.groups import album_of, artist_of
    from recsys.library.text import tag_key
    from recsys.recommender.neighbours import RELEASE_MAX_TAGS

    files = [f"{rng.choice(['/m', '/m/A', '/m/A/X', '/m/A/Y', '/m/B', '/m/B/Z', '/m/VA/Hits', '/m/dump'])}/t{i}.flac"
             for i in range(rng.randint(1, 80))]
    segments = [(make_key(p, start, True), p) for p in files if rng.random() < 0.2 for start in (0.0, 212.5)]
    rows = sorted((key, p, rng.choice(["", "X", "x ", "Hits", "Greatest Hits", "Y"]),
                   rng.choice(["", "", "Various Artists", "A", "B"]), rng.choice(["", "A", "B", "a", "C"]))
                  for key, p in [*((p, p) for p in files), *segments])  # a CUE file's tracks: keys of one path
    library = Catalogue(*(list(column) for column in zip(*rows, strict=True)))
    keys = [k for k, *_ in rows if rng.random() < 0.9]
    rng.shuffle(keys)
    if not keys:
        return
    row_of = {k: i for i, k in enumerate(keys)}
    evidence = np.array(rng.sample(range(len(keys)), min(len(keys), rng.randint(1, 6))))
    root, loose = rng.choice(["/m", "", "/m/A"]), frozenset(rng.sample(["/m/dump", "/m/B"], rng.randint(0, 2)))
    groups = library_groups(keys, row_of, library, root, evidence, loose)
    tags = {k: (al, aa, ar) for k, _, al, aa, ar in rows}
    path = {k: p for k, p, *_ in rows}
    album = {k: album_of(*tags[k], path[k], loose | {root}) for k in keys}
    artist = {k: artist_of(tags[k][2], tags[k][1], path[k], root, loose | {root}) for k in keys}
    folder = {k: path[k].rpartition("/")[0] for k in keys}
    releases = {folder[keys[e]] for e in evidence} - loose - {root}
    releases = {f for f in releases if len({tag_key(al) for _, p, al, _, _ in rows
                                               if p.rpartition("/")[0] == f} - {""}) <= RELEASE_MAX_TAGS}
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for k in keys:
        if folder[k] in releases and album[k]:
            parent[find(album[k])] = find(f"folder:{folder[k]}")
    # named (the docstring's rule): a tag, the untagged album's folder or the untagged artist's parent folder
    # of an evidence track, or a track of its release folder; only those can share its groups
    mine = [keys[e] for e in evidence.tolist()]
    album_tags = {tag_key(tags[k][0]) for k in mine} - {""}
    artist_tags = {tag_key(tags[k][1]) or tag_key(tags[k][2]) for k in mine} - {""}
    album_folders = {folder[k] for k in mine if not tag_key(tags[k][0])} - loose - {root}
    artist_folders = {folder[k].rpartition("/")[0] for k in mine if not artist[k].startswith("artist:")}

    def named(k: str) -> bool:
        al, aa, ar = (tag_key(t) for t in tags[k])
        return (al in album_tags or aa in artist_tags or (not al and folder[k] in album_folders)
                or (not aa and (ar in artist_tags or (not ar and folder[k].rpartition("/")[0] in artist_folders)))
                or folder[k] in releases)

    for r, k in enumerate(keys):
        for e in evidence.tolist():
            e_key = keys[e]
            same_album = (named(k) and bool(album[k]) and bool(album[e_key])
                          and find(album[k]) == find(album[e_key]))
            assert (groups.album[r] >= 0 and groups.album[r] == groups.album[e]) == same_album, (k, e_key)
            same_artist = bool(artist[k]) and artist[k] == artist[e_key]
            assert (groups.artist[r] >= 0 and groups.artist[r] == groups.artist[e]) == same_artist, (k, e_key)
