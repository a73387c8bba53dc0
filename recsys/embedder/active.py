"""Which encoder is "current": the one setting ``embed.encoder`` names, where ``auto`` means the encoder that
`recsys train-encoder` activated (named by ``<home>/models/current.json``), else the best built-in encoder as
measured on real music, :data:`DEFAULT_BUILTIN` (``musicnn``; see benchmarks/RESULTS.md).

Every command that needs the current encoder (`embed`, `status`, `eval`, the activation check after training) asks
:func:`resolve_encoder`, so they can never disagree. Activation copies the trained checkpoint to its own file named by
its encoder_id: a later training run overwriting ``encoder-best.pt`` never changes the encoder in use behind the
user's back.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.atomic import write_json_atomic

if TYPE_CHECKING:  # importing the encoders imports torch: only when one is built (see embedder/lazy.py)
    from recsys.embedder.encoders import Encoder

MODELS = "models"
CURRENT = "current.json"
# What `auto` means before any training: the built-in encoder whose neighbours are best on real music.
DEFAULT_BUILTIN = "musicnn"


@dataclass
class ResolvedEncoder:
    """The encoder a spec names, with a label for people (``auto -> cnn models/cnn-….pt``) and its id."""

    encoder: Encoder
    label: str
    encoder_id: str
    checkpoint: Path | None = None


def models_dir(home: Path) -> Path:
    return Path(home) / MODELS


def current_checkpoint(home: Path) -> Path | None:
    """The activated checkpoint, or None when nothing was activated (``auto`` then means :data:`DEFAULT_BUILTIN`)."""
    marker = models_dir(home) / CURRENT
    if not marker.exists():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        return models_dir(home) / str(data["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        from recsys.embedder.encoders import EncoderError

        raise EncoderError(f"{marker} is unreadable: delete it (embedding falls back to {DEFAULT_BUILTIN}) or run "
                           "`recsys train-encoder --activate`") from None


def _is_checkpoint(spec: str) -> bool:
    return spec.endswith(".pt") or Path(spec).expanduser().is_file()


def resolve_encoder(spec: str, home: Path, device: str = "auto") -> ResolvedEncoder:
    """Build what ``spec`` names: auto, dsp, musicnn, cnn (untrained), a checkpoint path, or module:Class."""
    checkpoint = None
    label = spec
    from recsys.embedder.encoders import EncoderError, build_encoder, encoder_id

    if spec == "auto":
        checkpoint = current_checkpoint(home)
        if checkpoint is not None and not checkpoint.is_file():
            raise EncoderError(f"the activated encoder {checkpoint} is missing: run `recsys train-encoder` again, "
                               f"or delete {models_dir(home) / CURRENT} to use {DEFAULT_BUILTIN}")
        label = f"auto -> cnn {checkpoint}" if checkpoint else f"auto -> {DEFAULT_BUILTIN}"
    elif _is_checkpoint(spec):
        checkpoint = Path(spec).expanduser()
    if checkpoint is not None:
        encoder = build_encoder("cnn", device=device, checkpoint=checkpoint)
    else:
        encoder = build_encoder(DEFAULT_BUILTIN if spec == "auto" else spec, device=device)
    return ResolvedEncoder(encoder, label, encoder_id(encoder), checkpoint)


def activate(home: Path, checkpoint: Path, eid: str, metrics: dict) -> Path:
    """Make ``checkpoint`` the current encoder: copy it to ``models/cnn-<id>.pt``, point current.json at it, and
    remove the copy it replaces (so activated encoders do not pile up)."""
    folder = models_dir(home)
    previous = current_checkpoint(home) if (folder / CURRENT).exists() else None
    target = folder / f"cnn-{eid}.pt"
    if Path(checkpoint).resolve() != target.resolve():
        tmp = folder / f".{target.name}.tmp"
        shutil.copyfile(checkpoint, tmp)
        tmp.replace(target)
    write_json_atomic(folder / CURRENT, {"checkpoint": target.name, "encoder_id": eid, "metrics": metrics,
                                         "activated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    if previous is not None and previous.resolve() != target.resolve() and previous.name.startswith("cnn-"):
        previous.unlink(missing_ok=True)
    return target
