"""The short stage-1 run of `recsys demo`: a small cnn trained from scratch for a few epochs on the demo library,
compared with the current encoder on held-out albums, as `recsys train-encoder` does on a real library."""

from __future__ import annotations

from collections.abc import Callable

from recsys.app.train_encoder import Progress, train_encoder
from recsys.config import Settings

DEMO_CHANNELS = [16, 32, 64, 64]  # a small cnn: caching and 5 epochs over the demo's 40 tracks take ~30 s on 2 cores
DEMO_HOLDOUT = 0.6  # of the demo's 10 albums of 4: 3 validation and 3 test albums (12 tracks, enough for p@10)


def demo_training(settings: Settings, epochs: int = 5, echo: Callable[[str], None] = print,
                  progress: Progress | None = None) -> dict:
    """A short training run for `recsys demo`; returns the before/after metrics on the held-out test albums and
    whether the new encoder was activated."""
    settings.train.base = "cnn"
    settings.train.epochs = epochs
    settings.train.channels = list(DEMO_CHANNELS)
    settings.train.holdout = DEMO_HOLDOUT
    settings.train.min_tracks = min(settings.train.min_tracks, 8)
    report = train_encoder(settings, progress=progress, echo=echo)
    before, after = report.scores
    for name, s in (("current encoder", before), (f"trained cnn ({len(report.fit.history)} epochs)", after)):
        echo(f"{name} ({s.label}), held-out albums: same-album precision@10 {s.metrics['album_p10']:.3f}, "
             f"same-artist {s.metrics['artist_p10']:.3f}")
    echo(report.decision)
    return {"before": before.as_json(), "after": after.as_json(), "activated": report.activated,
            "decision": report.decision, "seconds": report.seconds}
