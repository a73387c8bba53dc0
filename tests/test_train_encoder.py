"""Stage 1 training: cache-fed contrastive training, its guards, checkpoints, activation and the CLI around it.

Tiny settings throughout (a 4-block cnn with few channels, 1 s excerpts) so the whole file runs in well under a minute
on two CPU cores. Whether training helps is tests/test_encoder_quality.py's claim.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from recsys.config import load_settings
from recsys.embedder.encoders import CNN_DEFAULTS, CnnEncoder
from recsys.embedder.evaluation import Score, build_cache
from recsys.embedder.train import (
    BEST,
    EncoderCollapsed,
    Trainer,
    TrainError,
    TrainingInterrupted,
    decide,
    nt_xent,
)
from recsys.library.sources import load_library

CHANNELS = [8, 16, 32, 32]
TINY = f"""
train:
  channels: {CHANNELS}
  excerpt_seconds: 1.0
  window_seconds: 8.0
  min_tracks: 4
  workers: 1
  epochs: 2
  lr: 0.003
embed:
  workers: 1
audio:
  crop_seconds: 6.0
"""


def _settings(lib, text: str = TINY):
    config = lib.root / "tiny.yaml"
    config.write_text(text)
    settings = load_settings(config, environ={})
    settings.home, settings.library.db = str(lib.home), str(lib.db)
    return settings, config


def _trainer(settings, models: Path, **changes):
    for key, value in changes.items():
        setattr(settings.train, key, value)
    tracks = load_library(settings.library.db, []).tracks
    config = {**CNN_DEFAULTS, "channels": list(settings.train.channels), "seed": settings.train.seed}
    cache, _ = build_cache(settings, tracks, config)
    return Trainer(settings.train, cache.for_tracks(tracks), cache.folder, models,
                   cache.frontend.frames(settings.train.excerpt_seconds), config)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nt_xent_rewards_matching_pairs():
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    assert nt_xent(z, z, 0.1) < 0.1 < nt_xent(z, z.roll(1, 0), 0.1)


def test_training_is_deterministic_with_a_seed(small_library, tmp_path):
    settings, _ = _settings(small_library, TINY.replace("epochs: 2", "epochs: 1"))
    _trainer(settings, tmp_path / "a").fit()
    _trainer(settings, tmp_path / "b").fit()
    _trainer(settings, tmp_path / "c", seed=1).fit()
    a, b, c = (_weights(tmp_path / x / BEST) for x in "abc")
    assert _same(a, b)
    assert not _same(a, c)


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_identically(small_library, tmp_path, monkeypatch):
    settings, _ = _settings(small_library)
    _trainer(settings, tmp_path / "whole").fit()

    interrupted = _trainer(settings, tmp_path / "cut")
    real_step, calls = Trainer._train_step, []

    def step_then_ctrl_c(self, *args):
        calls.append(1)
        if self.epoch == 1 and len(calls) > 10:
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(Trainer, "_train_step", step_then_ctrl_c)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        interrupted.fit()
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    resumed = _trainer(settings, tmp_path / "cut")
    resumed.resume()
    assert resumed.epoch == 1
    resumed.fit()
    assert _same(_weights(tmp_path / "whole" / BEST), _weights(tmp_path / "cut" / BEST))


def test_resume_refuses_a_checkpoint_of_another_architecture(small_library, tmp_path):
    settings, _ = _settings(small_library)
    _trainer(settings, tmp_path / "m", epochs=1).fit()
    other = _trainer(settings, tmp_path / "m", channels=[8, 16, 16, 16])
    with pytest.raises(TrainError, match="another cnn architecture"):
        other.resume()


def test_collapse_guard_stops_training(small_library, tmp_path, monkeypatch):
    settings, _ = _settings(small_library)

    def one_point(self, logmel, project=True):  # every track -> the same vector, still trainable
        return self.projection.bias.expand(len(logmel), -1) + 0.0 * logmel.mean()

    monkeypatch.setattr(CnnEncoder, "embed_logmel", one_point)
    with pytest.raises(EncoderCollapsed, match="collapsed at epoch 1.*one point"):
        _trainer(settings, tmp_path / "m").fit()
    assert not (tmp_path / "m" / BEST).exists()


def _score(album: float, artist: float = math.nan) -> Score:
    return Score("x", "x", "id", "cache", {"album_p10": album, "artist_p10": artist})


def test_activation_needs_a_better_score_or_a_flag():
    assert decide(_score(0.5), _score(0.6), None)[0]
    assert not decide(_score(0.6), _score(0.6), None)[0]
    assert not decide(_score(0.5), _score(0.9), False)[0]
    assert decide(_score(0.9), _score(0.5), True)[0]
    activated, why = decide(_score(math.nan), _score(math.nan), None)
    assert not activated and "comparison impossible" in why
    assert decide(_score(math.nan, 0.2), _score(math.nan, 0.4), None)[0]  # artist decides without albums


def test_too_few_tracks_says_how_many_are_needed(small_library):
    _, config = _settings(small_library, TINY.replace("min_tracks: 4", "min_tracks: 50"))
    r = small_library.run("--config", str(config), "train-encoder", "--db", str(small_library.db), "-q")
    assert r.exit_code == 1
    assert "only 12 of the library's 12 tracks" in r.output and "at least 50" in r.output


def test_eval_refuses_a_checkpoint_of_another_architecture(small_library, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": 1, "arch": "transformer", "config": {}, "state_dict": {}, "extra": {}}, path)
    r = small_library.run("eval", "--db", str(small_library.db), "--encoder", str(path))
    assert r.exit_code == 1
    assert "architecture 'transformer', not 'cnn'" in r.output and len(r.output.strip().splitlines()) == 1


def test_activated_encoder_is_what_embed_uses(small_library):
    lib = small_library
    _, config = _settings(lib, TINY.replace("epochs: 2", "epochs: 1"))
    assert lib.run("--config", str(config), "embed", "--db", str(lib.db), "-q").exit_code == 0
    r = lib.run("--config", str(config), "train-encoder", "--db", str(lib.db), "--activate", "-q")
    assert r.exit_code == 0, r.output
    assert "activated as asked" in r.output and "embedding std" in r.output
    current = json.loads((lib.home / "models" / "current.json").read_text())
    r = lib.run("--config", str(config), "embed", "--db", str(lib.db), "-q")
    assert r.exit_code == 0, r.output
    assert "encoder: auto -> cnn" in r.output and "embedded 12," in r.output  # every dsp row was stale
    assert current["encoder_id"] in r.output

