"""The current encoder's id, output size and sample rate without importing torch, for runs that encode nothing.

Planning an embed run, and `recsys status`, need only the encoder's id (which rows are current) and its output size;
building the encoder to learn them imports torch (seconds), which a no-op `recsys embed` or a `recsys status` would pay
for nothing. So the facts of a built-in encoder or a checkpoint are remembered in ``<home>/models/encoder-facts.json``
under a fingerprint of everything they depend on: the spec, the activated marker, the checkpoint file (path, size,
mtime), every file of recsys's encoder package (code and weights, by size and mtime) and the torch version. Any change
there misses and the encoder is built, as before; a user's ``module:Class`` is always built (its code is not ours to
fingerprint). The encoder is built on first use, and its id is checked against the remembered one then.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from recsys.atomic import write_json_atomic
from recsys.embedder.active import CURRENT, ResolvedEncoder, current_checkpoint, resolve_encoder
from recsys.errors import RecsysError
from recsys.home import models_dir

FACTS = "encoder-facts.json"
_KEEP = 16  # fingerprints remembered (encoders switched between, code updates)
_PACKAGE = Path(__file__).resolve().parent


class LazyEncoder:
    """Stands for an encoder whose id, dim and sample rate are known; the real one is built on first use."""

    def __init__(self, facts: dict[str, Any], spec: str, home: Path, device: str, runtime: str = "torch") -> None:
        self.dim = int(facts["dim"])
        self.sample_rate = int(facts["sample_rate"])
        self._facts, self._spec, self._home, self._device = facts, spec, home, device
        self._runtime = runtime
        self._real: Any = None

    @property
    def loaded(self) -> bool:
        return self._real is not None

    def load(self) -> Any:
        if self._real is None:
            resolved = resolve_encoder(self._spec, self._home, self._device, self._runtime)
            if resolved.encoder_id != self._facts["encoder_id"]:
                raise RecsysError(f"encoder {resolved.label} changed while recsys was running (id "
                                  f"{self._facts['encoder_id']} became {resolved.encoder_id}): run the command again")
            self._real = resolved.encoder
        return self._real

    def __getattr__(self, name: str) -> Any:  # anything but dim/sample_rate needs the real encoder
        return getattr(self.load(), name)


def device_label(encoder: Any) -> str:
    """The device an encoder runs on, for reports, without building a lazy one that was never needed ('' then)."""
    if isinstance(encoder, LazyEncoder) and not encoder.loaded:
        return ""
    label = getattr(encoder, "runtime_label", "")  # what runs its CPU inference, when not plain torch
    return f"{encoder.device}, {label}" if label else str(encoder.device)


def _stat(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def fingerprint(spec: str, home: Path) -> str | None:
    """What the encoder ``spec`` names depends on, hashed; None when it cannot be known without building it."""
    module, _, cls = spec.partition(":")
    if module and cls and not spec.endswith(".pt"):
        return None
    parts: list[Any] = [spec]
    try:
        if spec == "auto":
            marker = models_dir(home) / CURRENT
            parts.append(marker.read_text(encoding="utf-8") if marker.exists() else None)
            checkpoint = current_checkpoint(home)
            parts.append(_stat(checkpoint) if checkpoint is not None else None)
        elif spec.endswith(".pt") or Path(spec).expanduser().is_file():
            parts.append(_stat(Path(spec).expanduser().resolve()))
        parts.append(sorted(_stat(p)[1:] + [str(p.relative_to(_PACKAGE))] for p in _PACKAGE.rglob("*")
                            if p.is_file() and "__pycache__" not in p.parts))
        parts.append(metadata.version("torch"))
    except (OSError, RecsysError, metadata.PackageNotFoundError):
        return None  # a missing checkpoint and the like: building it gives the proper message
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def _read_facts(home: Path) -> dict[str, dict]:
    try:
        data = json.loads((models_dir(home) / FACTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve_for_planning(spec: str, home: Path, device: str = "auto", runtime: str = "torch") -> ResolvedEncoder:
    """Like :func:`recsys.embedder.active.resolve_encoder`, but the encoder is a :class:`LazyEncoder` when its facts
    are remembered. Writes nothing (`recsys status` uses it too)."""
    key = fingerprint(spec, home)
    facts = _read_facts(home).get(key) if key else None
    if isinstance(facts, dict) and {"encoder_id", "dim", "sample_rate", "label"} <= facts.keys():
        return ResolvedEncoder(LazyEncoder(facts, spec, home, device, runtime), facts["label"], facts["encoder_id"])
    return resolve_encoder(spec, home, device, runtime)


def remember_facts(spec: str, home: Path, resolved: ResolvedEncoder) -> None:
    """Store the facts of an encoder that had to be built (writers only: `recsys embed` under the home lock)."""
    key = fingerprint(spec, home)
    if key is None or isinstance(resolved.encoder, LazyEncoder):
        return
    known = _read_facts(home)
    known.pop(key, None)
    known[key] = {"encoder_id": resolved.encoder_id, "dim": int(resolved.encoder.dim),
                  "sample_rate": int(resolved.encoder.sample_rate), "label": resolved.label}
    folder = models_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / FACTS, dict(list(known.items())[-_KEEP:]))
