"""What a training run of the encoder starts from: the base model (pretrained MusiCNN to fine-tune, or a fresh cnn),
the held-out split of whole albums, and the home's training audio cache brought up to date.

`recsys train-encoder` (:mod:`recsys.app.train_encoder`) runs these, then :mod:`recsys.training.trainer`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from recsys.choices import TRAINABLE_ENCODERS
from recsys.embedder.decoding import AudioSection, default_workers
from recsys.embedder.encoders import CNN_DEFAULTS, CnnEncoder, EncoderError, build_encoder
from recsys.library.groups import album_of
from recsys.library.text import tag_key
from recsys.library.track import Track
from recsys.training.cache import AudioCache, CacheReport, Entry, Layout
from recsys.training.trainer import TrainError, TrainSection

BASES = TRAINABLE_ENCODERS
# Fine-tuning MusiCNN leaves its front-end (input batch norm, timbral and temporal filters) as pretrained: they are
# generic spectro-temporal detectors, and their backward pass is ~3/4 of a training step's cost on the CPU.
MUSICNN_FROZEN = ("input_bn.", "timbral", "temporal")
DEFAULT_LR = {"musicnn": 1e-4, "cnn": 1e-3}  # fine-tuning moves pretrained weights gently; from scratch, faster
SAMPLE_RATE = 16000  # both bases take 16 kHz audio


@dataclass
class Split:
    """Entries of the training tracks and of the two held-out halves (whole groups each)."""

    train: list[Entry]
    val: list[Entry]
    test: list[Entry]

    def counts(self) -> dict[str, int]:
        return {"train_tracks": len(self.train), "val_tracks": len(self.val), "test_tracks": len(self.test),
                **{f"{name}_albums": len({group_of(e) for e in part})
                   for name, part in (("train", self.train), ("val", self.val), ("test", self.test))}}


def group_of(entry: Entry) -> str:
    """The unit that is held out whole: the album (``recsys.library.groups.album_of``), else the artist tag, else
    the track alone (an untagged file's folder says nothing of its sound here)."""
    if tag_key(entry.album):
        return album_of(entry.album, None, entry.artist, entry.key)
    artist = tag_key(entry.artist)
    return f"artist:{artist}" if artist else f"track:{entry.key}"


def split_heldout(entries: Sequence[Entry], holdout: float, seed: int) -> Split:
    """Hold out whole groups (seeded order) until ``holdout`` of the tracks are out; they go alternately to
    validation and test, so both halves hold different albums."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(group_of(e), []).append(e)
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).digest())
    wanted = holdout * len(entries)
    held: list[str] = []
    for g in order:
        if sum(len(groups[h]) for h in held) >= wanted or len(held) >= len(groups) - 1:
            break
        held.append(g)
    val = {g for i, g in enumerate(held) if i % 2 == 0}
    test = set(held) - val
    return Split([e for e in entries if group_of(e) not in val | test],
                 [e for e in entries if group_of(e) in val], [e for e in entries if group_of(e) in test])


def base_model(cfg: TrainSection) -> tuple[nn.Module, bool]:
    """(the model training starts from, whether it is fine-tuned): pretrained MusiCNN, or a fresh cnn."""
    if cfg.base == "cnn":
        return CnnEncoder({**CNN_DEFAULTS, "channels": [int(c) for c in cfg.channels], "seed": int(cfg.seed)}), False
    if cfg.base == "musicnn":
        try:
            model = build_encoder("musicnn", device="cpu")
        except EncoderError as exc:
            raise TrainError(f"cannot fine-tune musicnn ({exc}); train the cnn from scratch with --from cnn") from None
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith(MUSICNN_FROZEN))
        return model, True
    raise TrainError(f"unknown train.base {cfg.base!r}: use one of {', '.join(BASES)} (--from)")


def build_cache(home: Path, t: TrainSection, a: AudioSection, tracks: Sequence[Track],
                progress: Callable[[int], object] | None = None) -> tuple[AudioCache, CacheReport]:
    """The training audio cache of the ``home`` folder, brought up to date with ``tracks``: windows as the ``train``
    section says, the longest track and the per-file time limit as the ``audio`` section says."""
    cache = AudioCache(home, Layout(SAMPLE_RATE, int(t.windows), float(t.window_seconds)))
    report = cache.build(tracks, max_bytes=t.cache_max_gb * 1e9, seed=t.seed, max_duration_s=a.max_track_minutes * 60,
                         timeout_s=a.decode_timeout_s, workers=default_workers(t.workers), progress=progress)
    return cache, report
