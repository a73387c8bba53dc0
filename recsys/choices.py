"""The names a user may choose among, one table per extension point, each written once.

The settings' rules (``recsys.config``), the CLI's ``click.Choice`` and help texts, and the code that builds the
chosen thing all read these tables: a new playlist format or built-in encoder is one line here (and its module).
Entries are ``"module:attribute"`` strings, imported only when chosen (:func:`load`), so reading a table costs
nothing: the CLI's help and the settings never import torch or a writer they do not use. Player sources have their
own table, ``recsys.library.sources.SOURCES``, read the same way.

Standard library only: anything may import this module.
"""

from __future__ import annotations

import importlib
from typing import Any

# Built-in encoders: name -> the class, built with no arguments (``recsys.embedder.encoders.build_encoder``).
ENCODERS: dict[str, str] = {
    "dsp": "recsys.embedder.encoders:DspEncoder",
    "cnn": "recsys.embedder.encoders:CnnEncoder",
    "musicnn": "recsys.embedder.musicnn:MusicnnEncoder",
}
# What `auto` means before any training: the built-in encoder whose neighbours are best on real music.
DEFAULT_ENCODER = "musicnn"
# The encoders `recsys train-encoder` can train (``--from``): pretrained MusiCNN fine-tuned, or the cnn from scratch.
TRAINABLE_ENCODERS = ("musicnn", "cnn")
# What runs musicnn's inference on the CPU (``embed.runtime``, ``recsys.embedder.onnx_cpu``): torch, or ONNX Runtime.
RUNTIMES = ("torch", "onnx")

# Playlist writers: format name -> ``encode(tracks, title, creator) -> bytes`` (``recsys.playlists``).
PLAYLIST_WRITERS: dict[str, str] = {
    "xspf": "recsys.playlists.xspf:encode",
    "m3u8": "recsys.playlists.m3u8:encode",
}

# What a playlist ranks by (``recsys.recommender.rank``): the owner's taste, or the tracks it is least sure about.
RANK_MODES = ("taste", "uncertain")
# Where a track's excerpts are cut (``audio.crop_position``; ``recsys.embedder.audio.crop_windows``).
CROP_POSITIONS = ("center", "start", "end")
# The most tracks `recsys path --steps` may ask for (the CLI's bound; ``recsys.recommender.path`` refuses more: a
# million steps once ran out of memory).
MAX_PATH_STEPS = 1000


def load(entry: str) -> Any:
    """The attribute a ``"module:attribute"`` entry names, its module imported now."""
    module, _, attribute = entry.partition(":")
    return getattr(importlib.import_module(module), attribute)
