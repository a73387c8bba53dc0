"""Which encoder is "current": the one setting ``embed.encoder`` names, where ``auto`` means the encoder that
`recsys train-encoder` activated (named by ``<home>/models/current.json``), else the best built-in encoder as
measured on real music, :data:`DEFAULT_BUILTIN` (``musicnn``; see benchmarks/RESULTS.md).

Every command that needs the current encoder (`embed`, `status`, `eval`, the activation check after training) asks
:func:`resolve_encoder`, so they can never disagree.

Every `recsys train-encoder` run writes into a folder of its own, ``<home>/models/runs/<arch>-<date>-<time>/``
(``best.pt``, ``last.pt``, ``model_card.md``), so no run overwrites another's checkpoints. Activation copies the
chosen checkpoint once to ``<home>/models/active/<arch>-<encoder_id>.pt`` (the name is its content: a file there is
never rewritten) and points ``current.json`` at it; earlier activated files stay, so going back is a matter of
pointing at one (or of ``embed.encoder: <path>.pt``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.atomic import atomic_path, write_json_atomic
from recsys.choices import DEFAULT_ENCODER as DEFAULT_BUILTIN
from recsys.home import models_dir

if TYPE_CHECKING:  # importing the encoders imports torch: only when one is built (see embedder/lazy.py)
    from recsys.embedder.encoders import Encoder

CURRENT = "current.json"
RUNS = "runs"
ACTIVE = "active"
BEST, LAST = "best.pt", "last.pt"  # in a run folder: the chosen encoder, the resumable state (recsys.training.trainer)


@dataclass
class ResolvedEncoder:
    """The encoder a spec names, with a label for people (``auto -> cnn models/cnn-….pt``) and its id."""

    encoder: Encoder
    label: str
    encoder_id: str
    checkpoint: Path | None = None


def new_run_dir(home: Path, arch: str) -> Path:
    """A fresh, empty folder for one training run: ``models/runs/<arch>-<UTC date>-<time>[-n]``."""
    runs = models_dir(home) / RUNS
    runs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for n in range(1000):
        path = runs / (f"{arch}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    from recsys.embedder.encoders import EncoderError

    raise EncoderError(f"cannot make a new run folder in {runs}: remove old runs")


def latest_run_dir(home: Path) -> Path | None:
    """The newest run folder that holds a resumable state (what `--resume` continues), or None."""
    runs = models_dir(home) / RUNS
    found = [p for p in runs.iterdir() if (p / LAST).is_file()] if runs.is_dir() else []
    return max(found, key=lambda p: ((p / LAST).stat().st_mtime_ns, p.name)) if found else None


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


def resolve_encoder(spec: str, home: Path, device: str = "auto", runtime: str = "torch") -> ResolvedEncoder:
    """Build what ``spec`` names: auto, dsp, musicnn, cnn (untrained), a checkpoint path, or module:Class; its CPU
    inference on ``runtime`` (``embed.runtime``: torch, or onnx for musicnn, see recsys.embedder.onnx_cpu), what
    runs it kept as ``encoder.runtime_label`` for the reports."""
    checkpoint = None
    label = spec
    from recsys.embedder.encoders import EncoderError, build_encoder, encoder_id, load_checkpoint

    if spec == "auto":
        checkpoint = current_checkpoint(home)
        if checkpoint is not None and not checkpoint.is_file():
            raise EncoderError(f"the activated encoder {checkpoint} is missing: run `recsys train-encoder` again, "
                               f"or delete {models_dir(home) / CURRENT} to use {DEFAULT_BUILTIN}")
    elif _is_checkpoint(spec):
        checkpoint = Path(spec).expanduser()
    if checkpoint is not None:
        encoder = load_checkpoint(checkpoint, device)
        if spec == "auto":
            label = f"auto -> {encoder.name} {checkpoint}"
    else:
        label = f"auto -> {DEFAULT_BUILTIN}" if spec == "auto" else spec
        encoder = build_encoder(DEFAULT_BUILTIN if spec == "auto" else spec, device=device)
    eid = encoder_id(encoder)
    if runtime != "torch":
        from recsys.embedder.onnx_cpu import select_runtime

        encoder.runtime_label = select_runtime(encoder, runtime, home, eid)
    return ResolvedEncoder(encoder, label, eid, checkpoint)


def activate(home: Path, checkpoint: Path, eid: str, arch: str, metrics: dict) -> Path:
    """Make ``checkpoint`` the current encoder: copy it once to ``models/active/<arch>-<id>.pt`` and point
    current.json at it. A run folder's files may change later (a resumed run); the activated copy never does."""
    folder = models_dir(home)
    target = folder / ACTIVE / f"{arch}-{eid}.pt"
    if not target.is_file():  # synced before current.json names it: a crash never leaves it pointing at a torn copy
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(checkpoint, tmp)
    write_json_atomic(folder / CURRENT, {"checkpoint": str(target.relative_to(folder)), "encoder_id": eid,
                                         "source": str(checkpoint), "metrics": metrics,
                                         "activated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return target
