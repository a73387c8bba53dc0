"""musicnn's patch network on ONNX Runtime, for ``embed.runtime: onnx`` on the CPU.

The same float32 network (log-mel patches -> penultimate layer and tag logits) exported from the torch port and run
by ONNX Runtime: its convolutions and reductions are markedly faster than PyTorch's on the CPU for this network's
shapes, and its outputs equal the torch port's to float32 rounding, so vectors stay equal to the TensorFlow
reference within ``tests/test_musicnn.py``'s bounds and ``encoder_id`` does not change (benchmarks/RESULTS.md,
"Embed throughput"). Only inference uses it: training, gradients and CUDA stay on torch.

The graph is exported once per set of weights into ``<home>/models/onnx/`` (nothing is downloaded), named by the
encoder's id, the torch version that exported it and :data:`EXPORT_VERSION`, so a changed computation or exporter
never reuses a stale file. Exporting needs the ``onnx`` package and running it ``onnxruntime`` (both dependencies of
recsys); without them, or when the export fails, the encoder stays on torch and says why. Other encoders and CUDA
are torch's by design and stay there without a word.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recsys.atomic import atomic_path
from recsys.embedder.musicnn import N_MELS, PATCH_FRAMES
from recsys.home import models_dir

EXPORT_VERSION = 1  # bump when the exported graph changes (inputs, outputs, opset)
OPSET = 17
_EXAMPLE_PATCHES = 16


class _PatchNetwork(nn.Module):
    """``encoder.patch_outputs`` as a module with one input, as the exporter wants it (eval-mode path)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.patch_outputs(patches)


class OnnxPatches:
    """Runs an exported patch network: (N, mels, frames) float32 patches -> (penultimate, tag logits), like
    ``MusicnnEncoder.patch_outputs`` in inference, ``batch`` patches at a time.

    Idle threads sleep instead of spinning (the decode workers and torch's front-end share the cores), and the
    runtime's memory-pattern planning is off: it kept every intermediate of a batch alive at once (hundreds of MB)
    for no measurable speed; 8 patches a run were as fast as 16 in half the memory (benchmarks/RESULTS.md)."""

    def __init__(self, path: Path, threads: int, batch: int = 8) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_mem_pattern = False
        self.path, self.batch = path, batch
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = np.ascontiguousarray(patches.detach().cpu().numpy(), dtype=np.float32)
        outs = [self.session.run(None, {"patches": array[i: i + self.batch]}) for i in range(0, len(array), self.batch)]
        return tuple(torch.from_numpy(np.concatenate(part)) for part in zip(*outs, strict=True))


def onnx_file(home: Path, encoder_id: str) -> Path:
    """Where the graph of the encoder ``encoder_id`` is kept in ``home``."""
    return models_dir(home) / "onnx" / f"musicnn-{encoder_id}-torch{torch.__version__}-v{EXPORT_VERSION}.onnx"


def export_patch_network(encoder: nn.Module, path: Path) -> None:
    """Write ``encoder``'s inference patch network to ``path`` (atomically), the patch count a dynamic axis."""
    was_training = encoder.training
    encoder.eval()
    example = torch.zeros(_EXAMPLE_PATCHES, N_MELS, PATCH_FRAMES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on constant folding are not the user's business
            torch.onnx.export(_PatchNetwork(encoder), (example,), str(tmp), input_names=["patches"],
                              output_names=["penultimate", "logits"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"patches": {0: "n"}, "penultimate": {0: "n"}, "logits": {0: "n"}})
    finally:
        encoder.train(was_training)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def load_patch_runner(encoder: nn.Module, home: Path, encoder_id: str) -> OnnxPatches | str:
    """The ONNX Runtime runner of ``encoder``'s patch network (exported into ``home`` on first use), or the one-line
    reason it cannot be had, for the caller to say while it stays on torch."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed: pip install onnxruntime, or set embed.runtime: torch"
    path = onnx_file(home, encoder_id)
    threads = torch.get_num_threads()
    if path.is_file():
        try:
            return OnnxPatches(path, threads)
        except Exception:  # a damaged file (a full disk, an old runtime): export it again below
            pass
    try:
        import onnx  # noqa: F401  (torch's exporter writes the graph with it)
    except ImportError:
        return f"exporting the network to {path} needs the onnx package: pip install onnx, or set embed.runtime: torch"
    try:
        export_patch_network(encoder, path)
    except Exception as exc:  # the exporter fails in many ways; one line, and torch goes on
        return f"exporting the network to {path} failed ({_first_line(exc)})"
    try:
        return OnnxPatches(path, threads)
    except Exception as exc:
        return f"ONNX Runtime cannot load {path} ({_first_line(exc)})"


def select_runtime(encoder: nn.Module, runtime: str, home: Path, encoder_id: str) -> str:
    """Put ``encoder``'s CPU inference on ``runtime`` ('torch' or 'onnx') where it can be, and return what runs it
    for the reports: 'onnxruntime'; '' for torch where that is the rule (asked for, another encoder than musicnn, a
    CUDA device); or 'torch (...)' with why ONNX Runtime could not be used."""
    cpu = getattr(encoder, "device", torch.device("cpu")).type == "cpu"
    if runtime == "torch" or not hasattr(encoder, "patch_runner") or not cpu:
        return ""
    runner = load_patch_runner(encoder, home, encoder_id)
    if isinstance(runner, str):
        encoder.patch_runner = None
        return f"torch (embed.runtime {runtime}: {runner})"
    encoder.patch_runner = runner
    return "onnxruntime"
