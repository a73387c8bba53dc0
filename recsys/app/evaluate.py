"""`recsys eval`: the retrieval metrics of :mod:`recsys.index.retrieval` for any encoder, or for the current table;
with ``--playlist``, the playlists the owner's ratings give, scored on hidden ratings (:func:`eval_playlist`).

Encoders are scored by :mod:`recsys.app.encoder_scores`; the playlists are ranked by :mod:`recsys.app.ranking`, as
`recsys playlist` ranks them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from recsys.app.encoder_scores import TABLE, EvalError, Score, encoder_rows, score_rows, shown_id, table_rows
from recsys.app.ranking import PlaylistRequest, build_ranking
from recsys.app.taste import load_taste, require_history, train
from recsys.config import Settings
from recsys.embedder.active import resolve_encoder
from recsys.index.ann import read_manifest
from recsys.index.store import TrackStore
from recsys.library.sources import load_configured_library
from recsys.library.track import Track
from recsys.recommender.classifier import ClassifierReport
from recsys.recommender.persistence import RatingModel
from recsys.recommender.playlist_eval import PlaylistEval, evaluate_playlist
from recsys.recommender.rank import Ranking


def evaluate(settings: Settings, specs: Sequence[str] = (),
             progress: Callable[[int], object] | None = None) -> list[Score]:
    """`recsys eval`: metrics of each spec (``table``, the default: the rows the index was built from; else an encoder
    spec as ``embed.encoder`` takes it, or a checkpoint path), scored on the same tracks (those of the configured
    library, read only when an encoder must run). Reads only: no home lock, nothing written in the home (crops an
    encoder must decode go to a temporary table), so a read-only home or a running `recsys embed` does not stop it."""
    specs = list(specs) or [TABLE]
    tracks = load_configured_library(settings).tracks if any(spec != TABLE for spec in specs) else []
    home = settings.home_path
    store = TrackStore.of(settings, writable=False)
    named = []
    for spec in specs:
        if spec == TABLE:
            manifest = read_manifest(home)
            if manifest is None or not store.count:
                raise EvalError(f"nothing is embedded in {home}: run `recsys embed`, or name an encoder with "
                                "--encoder")
            named.append((spec, "current table", manifest["encoder_id"], TABLE,
                          table_rows(store, manifest["encoder_id"])))
            continue
        resolved = resolve_encoder(spec, home, settings.train.device)
        rows, source = encoder_rows(settings, resolved, tracks, store, progress)
        named.append((spec, resolved.label, shown_id(settings, resolved), source, rows))
    return score_rows(named)


def eval_playlist(settings: Settings, splits: int | None = None,
                  progress: Callable[[str], object] | None = None) -> PlaylistEval:
    """`recsys eval --playlist`: hide albums' ratings, train and build as the real commands do, count the hidden
    (``progress``: a line per split)."""
    taste = load_taste(settings)
    require_history(taste)
    r = settings.recommend
    req = PlaylistRequest()

    def train_split(tracks: Sequence[Track], folder: Path) -> ClassifierReport:
        return train(settings, taste, tracks, folder, None)

    def build(tracks: Sequence[Track], model: RatingModel | None, top_n: int, scorer: str) -> Ranking:
        return build_ranking(settings, taste, tracks, model, dataclasses.replace(req, top_n=top_n), scorer)

    return evaluate_playlist(taste.lib, taste.tracks, build, train_split, splits=splits or r.eval_splits,
                             hidden_fraction=r.eval_hidden_fraction, seed=settings.classifier.seed, progress=progress)
