"""`recsys train-classifier`: learn the owner's taste from the star ratings in the player, live."""

from __future__ import annotations

from recsys.app.settings import library_inputs
from recsys.app.taste import load_taste, require_history, train
from recsys.config import Settings
from recsys.home import models_dir
from recsys.home.claim import claim_home
from recsys.recommender.classifier import ClassifierReport


def train_from_player(settings: Settings) -> ClassifierReport:
    """Train the rating classifier on the player's current ratings, save it under ``<home>/models``, track it.

    The home is claimed (recsys's own, writable) and the tracking store checked before any work: a read-only home or
    a tracking URI naming the player database is one line up front, not an error after training."""
    from recsys.tracking import tracking_uri

    inputs = library_inputs(settings)
    home = claim_home(settings.home_path, inputs)
    uri = tracking_uri(home, settings.tracking.uri, inputs)
    taste = load_taste(settings)
    require_history(taste)
    return train(settings, taste, taste.tracks, models_dir(home), uri)
