"""`recsys train-classifier` and `recsys playlist`: the library's vectors joined to the owner's taste, live.

Both read the index snapshot (vectors and tags, no lancedb or torch on the way) and the player database afresh on
every run, so ratings given a minute ago count and nothing is ever copied out of the player.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.index.ann import LibraryVectors, Searcher, current_snapshot
from recsys.library.sources import load_library
from recsys.library.track import Track
from recsys.recommender.classifier import TrainReport, train_classifier
from recsys.recommender.persistence import ClassifierError, RatingModel
from recsys.recommender.playlist_eval import PlaylistEval, evaluate_playlist
from recsys.recommender.rank import RankedTrack, Ranking, rank
from recsys.recommender.xspf import FORMATS, Inputs, write_playlist


class NotEmbeddedError(RecsysError):
    """The player's tracks have no vectors yet."""


@dataclass
class Taste:
    """The index snapshot and the library's tracks (with ratings and plays, read just now)."""

    lib: LibraryVectors
    tracks: list[Track]
    source: str
    inputs: Inputs = field(default_factory=Inputs)  # what the playlist must never overwrite


def models_dir(settings: Settings) -> Path:
    return settings.home_path / "models"


def load_taste(settings: Settings) -> Taste:
    """The snapshot and the live library; an error naming what to run when none of the tracks is embedded."""
    lib = current_snapshot(settings.home_path, settings.index)
    library = load_library(settings.library.db, settings.library.folders)
    source = str(library.db_path or ", ".join(library.folders))
    embedded = set(lib.keys)
    if not any(t.key in embedded for t in library.tracks):
        raise NotEmbeddedError(f"none of the {len(library.tracks)} tracks of {source} is embedded yet: "
                               "run `recsys embed` first")
    inputs = Inputs(library.db_path, library.folders, {t.path for t in library.tracks} | set(lib.values("path")))
    return Taste(lib, library.tracks, source, inputs)


VOTE_EF_SEARCH = 64  # HNSW breadth for the neighbour votes: recall@21 1.000 at 100k (128 for `similar`), 1.7x faster


def _search(settings: Settings, lib: LibraryVectors):
    """The snapshot's FAISS search (exact, or HNSW above ``index.exact_max_tracks``) as ``(queries, k) -> arrays``."""
    searcher = Searcher(lib, settings.home_path, ef_search=settings.index.hnsw_ef_search)
    return lambda queries, k: searcher.search_arrays(queries, k, ef_search=VOTE_EF_SEARCH)


def _train(settings: Settings, taste: Taste, tracks: Sequence[Track], models: Path,
           tracking: str | None) -> TrainReport:
    c = settings.classifier
    return train_classifier(taste.lib, tracks, models, tracking, min_ratings=c.min_ratings, seed=c.seed,
                            pseudo_until=c.pseudo_until, neighbours_k=c.knn_k, search=_search(settings, taste.lib),
                            w_model=settings.recommend.w_model, w_knn=settings.recommend.w_knn)


def train_from_player(settings: Settings) -> TrainReport:
    """Train the rating classifier on the player's current ratings, save it under ``<home>/models``, track it."""
    from recsys.tracking import tracking_uri

    taste = load_taste(settings)
    return _train(settings, taste, taste.tracks, models_dir(settings),
                  tracking_uri(settings.home_path, settings.tracking.uri))


@dataclass
class PlaylistRequest:
    """What `recsys playlist` was asked for; None means the configured default."""

    top_n: int | None = None
    out: str | None = None
    name: str | None = None
    seeds: Sequence[str] = ()
    include_rated: bool = False
    mode: str = "taste"
    min_stars: float | None = None
    include_played: bool = False
    max_per_artist: int | None = None
    max_per_album: int | None = None
    fmt: str | None = None
    force: bool = False


@dataclass
class Playlist:
    path: Path
    title: str
    tracks: list[RankedTrack]
    scorer: str  # what ranked: 'blend (logistic + neighbours)', 'neighbours', ...
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None  # why it is shorter than asked


def _format(req: PlaylistRequest, settings: Settings) -> str:
    if req.fmt:
        return req.fmt
    if req.out and Path(req.out).suffix.lower() in (".m3u8", ".m3u"):
        return "m3u8"
    return settings.recommend.format


def _free_default_path(folder: Path, stem: str, ext: str) -> Path:
    """``<stem>.<ext>`` in ``folder``, or ``<stem>-2.<ext>``... when that exists: the default never overwrites."""
    candidate, n = folder / f"{stem}.{ext}", 2
    while candidate.exists():
        candidate, n = folder / f"{stem}-{n}.{ext}", n + 1
    return candidate


def _output_path(req: PlaylistRequest, settings: Settings, name: str, fmt: str) -> Path:
    if req.out:
        return Path(req.out).expanduser()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-.") or "recsys"
    return _free_default_path(Path(settings.recommend.out_dir).expanduser(), f"{safe}-{date.today().isoformat()}", fmt)


def _model(settings: Settings, lib: LibraryVectors, notes: list[str]) -> RatingModel | None:
    """The trained classifier, or None (the neighbour votes alone) with a note saying why."""
    try:
        model = RatingModel.load(models_dir(settings), lib.encoder_id)
    except ClassifierError as exc:
        notes.append(f"no usable classifier ({exc}); ranking by the neighbour votes of your rated tracks alone")
        return None
    if not model.blend:
        notes.append("the classifier is not clearly better than chance (see `recsys train-classifier`): ranking by "
                     "the neighbour votes of your rated tracks alone")
    return model


def _seed_keys(lib: LibraryVectors, seeds: Sequence[str]) -> list[str]:
    from recsys.index.similar import resolve_query

    return [lib.keys[resolve_query(lib, seed)] for seed in seeds]


def build_ranking(settings: Settings, taste: Taste, tracks: Sequence[Track], model: RatingModel | None,
                  req: PlaylistRequest, scorer: str = "blend") -> Ranking:
    """The ranking `recsys playlist` writes (and `recsys eval --playlist` scores), from the settings and request."""
    r = settings.recommend
    return rank(taste.lib, tracks, model, top_n=req.top_n or r.top_n, mode=req.mode,
                seeds=_seed_keys(taste.lib, req.seeds), include_rated=req.include_rated,
                include_played=req.include_played, played_min=r.played_min,
                min_rating=None if req.min_stars is None else req.min_stars / 5.0,
                max_per_artist=req.max_per_artist or r.max_per_artist,
                max_per_album=req.max_per_album or r.max_per_album, mmr_lambda=r.mmr_lambda, w_model=r.w_model,
                w_knn=r.w_knn, neighbours_k=settings.classifier.knn_k, max_voters=r.max_voters,
                pseudo_until=settings.classifier.pseudo_until, album_vote=r.album_vote, artist_vote=r.artist_vote,
                scorer=scorer, search=_search(settings, taste.lib), exists=os.path.exists)


def make_playlist(settings: Settings, req: PlaylistRequest) -> Playlist:
    """Rank the library for the owner's taste (or around seed tracks) and write the playlist file."""
    fmt = _format(req, settings)
    if fmt not in FORMATS:
        raise RecsysError(f"unknown playlist format {fmt!r}: choose one of {', '.join(FORMATS)}")
    taste = load_taste(settings)
    notes: list[str] = [taste.lib.behind] if taste.lib.behind else []
    model = _model(settings, taste.lib, notes)
    ranking = build_ranking(settings, taste, taste.tracks, model, req)
    if not ranking.tracks:
        raise RecsysError(f"no track is left to recommend ({ranking.stopped or 'every candidate was filtered'}): "
                          "try --include-rated, --include-played, a lower --min-rating, or embed more music")
    if ranking.stopped:
        notes.append(f"the playlist is short: {ranking.stopped}")
    name = req.name or settings.recommend.name
    title = f"{name} ({req.mode}, {date.today().isoformat()})"
    path = write_playlist(_output_path(req, settings, name, fmt), ranking.tracks, title, fmt=fmt, overwrite=req.force,
                          inputs=taste.inputs)
    return Playlist(path=path, title=title, tracks=ranking.tracks, scorer=ranking.scorer, notes=notes,
                    stopped=ranking.stopped)


def eval_playlist(settings: Settings, splits: int | None = None) -> PlaylistEval:
    """`recsys eval --playlist`: hide albums' ratings, train and build as the real commands do, count the hidden."""
    taste = load_taste(settings)
    r = settings.recommend
    req = PlaylistRequest()

    def train(tracks: Sequence[Track], folder: Path) -> TrainReport:
        return _train(settings, taste, tracks, folder, None)

    def build(tracks: Sequence[Track], model: RatingModel | None, top_n: int, scorer: str) -> Ranking:
        return build_ranking(settings, taste, tracks, model, dataclasses.replace(req, top_n=top_n), scorer)

    return evaluate_playlist(taste.lib, taste.tracks, build, train, splits=splits or r.eval_splits,
                             hidden_fraction=r.eval_hidden_fraction, seed=settings.classifier.seed)
