"""`recsys train-classifier`: learn the owner's taste from the star ratings in the player, live."""

from __future__ import annotations

from recsys.app.taste import load_taste, train
from recsys.config import Settings
from recsys.home import models_dir
from recsys.recommender.classifier import ClassifierReport


def train_from_player(settings: Settings) -> ClassifierReport:
    """Train the rating classifier on the player's current ratings, save it under ``<home>/models``, track it."""
    from recsys.tracking import tracking_uri

    taste = load_taste(settings)
    return train(settings, taste, taste.tracks, models_dir(settings.home_path),
                 tracking_uri(settings.home_path, settings.tracking.uri))
