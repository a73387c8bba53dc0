"""The encoder interface: what the pipeline needs from an encoder, built-in or a user's ``module:Class`` plug-in.

Its own module so that every encoder (``encoders.py``: ``dsp``, ``cnn``, the plug-ins; ``musicnn.py``) imports the
interface without importing the others.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from recsys.errors import RecsysError


class EncoderError(RecsysError):
    """An encoder that cannot be built, loaded or run; the message names it and what to do next."""


@runtime_checkable
class Encoder(Protocol):
    """What the pipeline needs from an encoder, built-in or a user's ``module:Class`` plug-in.

    ``device`` is where ``encode`` expects its input; ``identity()`` is JSON-able and names the class and every
    hyper-parameter that changes the output (weights, if the encoder is an ``nn.Module``, are hashed separately).
    """

    name: str
    sample_rate: int
    dim: int
    device: torch.device

    def encode(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, T) float32 mono waves on ``device`` -> (B, dim) float32 rows of unit L2 norm."""
        ...

    def identity(self) -> dict:
        ...

    def to(self, device: torch.device | str) -> Encoder:
        ...


def tag_names(encoder: object) -> tuple[str, ...] | None:
    """The names of an encoder's tags when it has a tag head, else None.

    The head is optional: an encoder declares ``tag_names`` (a sequence of names) and
    ``encode_with_tags(waves) -> (vectors, probabilities)``, the (B, dim) rows of ``encode`` and (B, len(tag_names))
    probabilities in [0, 1]. An encoder without both has no tags, and commands that need them say so."""
    names = getattr(encoder, "tag_names", None)
    if not names or not callable(getattr(encoder, "encode_with_tags", None)):
        return None
    return tuple(str(n) for n in names)


_REQUIRED = ("name", "sample_rate", "dim", "device", "encode", "identity", "to")


def _check_waves(waves: torch.Tensor, name: str) -> torch.Tensor:
    if waves.dim() != 2:
        raise EncoderError(f"encoder '{name}' takes a (batch, samples) tensor, got shape {tuple(waves.shape)}")
    return torch.nan_to_num(waves.float(), nan=0.0, posinf=0.0, neginf=0.0)
