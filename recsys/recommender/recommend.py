"""`recsys train-classifier` and `recsys playlist`: the library's vectors joined to the owner's taste, live.

Both read the index snapshot (vectors and tags, no lancedb or torch on the way) and the player database afresh on
every run, so ratings given a minute ago count and nothing is ever copied out of the player.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.index.ann import LibraryVectors, current_snapshot
from recsys.library.sources import load_library
from recsys.library.track import Track
from recsys.recommender.classifier import ClassifierError, RatingModel, TrainReport, train_classifier
from recsys.recommender.rank import RankedTrack, rank
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


def train_from_player(settings: Settings) -> TrainReport:
    """Train the rating classifier on the player's current ratings, save it under ``<home>/models``, track it."""
    from recsys.tracking import tracking_uri

    taste = load_taste(settings)
    c = settings.classifier
    return train_classifier(taste.lib, taste.tracks, models_dir(settings),
                            tracking_uri(settings.home_path, settings.tracking.uri), min_ratings=c.min_ratings,
                            seed=c.seed, pseudo_until=c.pseudo_until, knn_k=c.knn_k)


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
    fmt: str | None = None
    force: bool = False


@dataclass
class Playlist:
    path: Path
    title: str
    tracks: list[RankedTrack]
    scorer: str  # 'mlp', 'knn' or 'similarity only'
    notes: list[str] = field(default_factory=list)


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
    """The trained classifier, or None (similarity to liked tracks alone) with a note saying why."""
    try:
        return RatingModel.load(models_dir(settings), lib.encoder_id)
    except ClassifierError as exc:
        notes.append(f"no usable classifier ({exc}); ranking by similarity to your liked tracks alone")
        return None


def _seed_keys(lib: LibraryVectors, seeds: Sequence[str]) -> list[str]:
    from recsys.index.similar import resolve_query

    return [lib.keys[resolve_query(lib, seed)] for seed in seeds]


def make_playlist(settings: Settings, req: PlaylistRequest) -> Playlist:
    """Rank the library for the owner's taste (or around seed tracks) and write the playlist file."""
    fmt = _format(req, settings)
    if fmt not in FORMATS:
        raise RecsysError(f"unknown playlist format {fmt!r}: choose one of {', '.join(FORMATS)}")
    taste = load_taste(settings)
    notes: list[str] = [taste.lib.behind] if taste.lib.behind else []
    model = _model(settings, taste.lib, notes)
    r = settings.recommend
    ranked = rank(taste.lib, taste.tracks, model, top_n=req.top_n or r.top_n, mode=req.mode,
                  seeds=_seed_keys(taste.lib, req.seeds), include_rated=req.include_rated,
                  min_rating=None if req.min_stars is None else req.min_stars / 5.0,
                  max_per_artist=r.max_per_artist, max_per_album=r.max_per_album, mmr_lambda=r.mmr_lambda,
                  w_model=r.w_model, w_knn=r.w_knn, exists=os.path.exists)
    if not ranked:
        raise RecsysError("no track is left to recommend (every embedded track is rated, missing or filtered): "
                          "try --include-rated, a lower --min-rating, or embed more music")
    name = req.name or r.name
    title = f"{name} ({req.mode}, {date.today().isoformat()})"
    path = write_playlist(_output_path(req, settings, name, fmt), ranked, title, fmt=fmt, overwrite=req.force,
                          inputs=taste.inputs)
    return Playlist(path=path, title=title, tracks=ranked, scorer=model.kind if model else "similarity only",
                    notes=notes)
