"""musicnn on the CPU: candidate speed-ups measured side by side in one process, and the arithmetic ceiling.

Each variant runs the network (log-mel patches -> 200-d penultimate layer) over the same patches, the variants in
turn, ``--rounds`` times; the figure is the median of the per-round ratio to the shipped path (> 1: faster), so
that a shared machine's drift cancels. Every variant's max abs difference from the shipped path is printed too
(the fixture's bound on the penultimate layer is 5e-5).

Besides PyTorch's own variants: ONNX Runtime on the exported float32 graph (``embed.runtime: onnx``,
``recsys/embedder/onnx_cpu.py``), the same graph quantised to int8 by ONNX Runtime (static, QDQ, per-channel
weights, activations calibrated on synthetic tones and noise; ``--int8``), and ``torch.compile`` (``--compile``;
its compile time is printed). These need ``pip install 'recsys[onnx]'``.

The ceiling: the network's multiply-adds per patch against this machine's float32 matrix-multiply rate on one
thread; with the decode floor (``embed_throughput.py`` (a)), it bounds end-to-end tracks/s on N cores.

    python benchmarks/encoder_speed.py [--patches 32] [--rounds 5] [--threads 2] [--int8] [--compile] [--only-new]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recsys.embedder.musicnn import PATCH_FRAMES, MusicnnEncoder, _bn_affine, _pool_affine
from recsys.embedder.onnx_cpu import OnnxPatches, export_patch_network

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "musicnn_reference.npz"


def separate_temporal(enc: MusicnnEncoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """The temporal front-end as three convolutions (the path before the combined one)."""
    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([enc._freq_max(conv, bn, F.pad(x, ((conv.kernel_size[1] - 1) // 2, conv.kernel_size[1] // 2)))
                          for conv, bn in zip(enc.temporal, enc.temporal_bn, strict=True)], dim=1)
    return run


def channels_last_freq_max(enc: MusicnnEncoder):
    """``_freq_max``'s inference path with input and filters in channels-last memory format (oneDNN picks
    another kernel; the sums are the same)."""
    def run(conv, bn, x):
        scale, shift, sign = _bn_affine(bn)
        weight = (conv.weight * sign.view(-1, 1, 1, 1)).contiguous(memory_format=torch.channels_last)
        z = F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, conv.bias * sign)
        return _pool_affine(z, scale, shift, sign)
    return run


def fixture_difference(enc: MusicnnEncoder, net: Callable) -> tuple[float, float]:
    """Max abs difference of ``net``'s penultimate layer and tag logits from TensorFlow's on the test fixture's
    three clips (from its own log-mel, as tests/test_musicnn.py checks the port)."""
    pen, logit = 0.0, 0.0
    with np.load(FIXTURE) as ref, torch.inference_mode():
        for clip in ("a", "b", "c"):
            penultimate, logits = net(enc.patches(torch.from_numpy(ref[f"{clip}_logmel"]).unsqueeze(0))[0])
            pen = max(pen, float(np.abs(penultimate.float().numpy() - ref[f"{clip}_penultimate"]).max()))
            logit = max(logit, float(np.abs(logits.float().numpy() - ref[f"{clip}_logits"]).max()))
    return pen, logit


def int8_graph(enc: MusicnnEncoder, float_graph: Path, out: Path) -> None:
    """``float_graph`` statically quantised to int8 (QDQ, per-channel weights), activation ranges calibrated on
    synthetic tones and noise (not on music the quality check uses)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    g = torch.Generator().manual_seed(1)
    t = torch.arange(9 * 16000) / 16000
    waves = []
    for _ in range(8):
        freqs = 110 * 2 ** (4 * torch.rand(6, generator=g))
        tone = sum(torch.rand(1, generator=g) * torch.sin(2 * torch.pi * f * t) for f in freqs)
        waves.append(0.1 * tone + 0.02 * torch.randn(t.shape, generator=g))
    with torch.inference_mode():
        calib = enc.patches(enc.frontend(torch.stack(waves))).reshape(-1, 96, PATCH_FRAMES).numpy()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"patches": calib[i: i + 4]} for i in range(0, len(calib), 4)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(float_graph), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def macs_per_patch(enc: MusicnnEncoder) -> int:
    """Multiply-adds of the convolutions and dense layers for one 96 x 187 patch."""
    total = 0
    for conv in enc.timbral:
        kf, kt = conv.kernel_size
        total += conv.out_channels * (96 - kf + 1) * PATCH_FRAMES * kf * kt
    for conv in enc.temporal:
        total += conv.out_channels * 96 * PATCH_FRAMES * conv.kernel_size[1]
    for conv in enc.midend:
        total += conv.out_channels * conv.in_channels * conv.kernel_size[0] * PATCH_FRAMES
    return total + enc.dense.in_features * enc.dense.out_features + enc.tags.in_features * enc.tags.out_features


def gemm_rate(threads: int) -> float:
    """float32 GFLOP/s of a (11033 x 266) @ (266 x 204) product, the big timbral convolution as a matrix product."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(11033, 266), torch.randn(266, 204)
    a @ b
    times = []
    for _ in range(7):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    torch.set_num_threads(before)
    return 2 * 11033 * 266 * 204 / statistics.median(times) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--int8", action="store_true", help="also ONNX Runtime on the int8-quantised graph")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (inductor) of the patch network")
    ap.add_argument("--only-new", action="store_true", help="leave out the PyTorch variants measured before")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    enc = MusicnnEncoder()
    g = torch.Generator().manual_seed(0)
    waves = 0.1 * torch.randn(-(-args.patches // 3), 3 * PATCH_FRAMES * 256, generator=g)
    with torch.inference_mode():
        patches = enc.patches(enc.frontend(waves)).reshape(-1, 96, PATCH_FRAMES)[: args.patches]
    shipped_temporal, shipped_freq_max = enc._temporal_inference, enc._freq_max

    def variant(temporal=None, freq_max=None, batch=16, autocast=None, net=None):
        def run() -> torch.Tensor:
            enc._temporal_inference = temporal or shipped_temporal
            enc._freq_max = freq_max or shipped_freq_max
            try:
                with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                    return torch.cat([(net or enc.patch_outputs)(patches[i: i + batch])[0].float()
                                      for i in range(0, len(patches), batch)])
            finally:
                enc._temporal_inference, enc._freq_max = shipped_temporal, shipped_freq_max
        return run

    variants = {"shipped": variant()}
    if not args.only_new:
        variants.update({
            "separate temporal convs (before)": variant(temporal=separate_temporal(enc)),
            "channels-last timbral convs": variant(freq_max=channels_last_freq_max(enc)),
            "patch batch 8": variant(batch=8),
            "patch batch 32": variant(batch=32),
            "bfloat16 autocast": variant(autocast=torch.bfloat16),
        })
    folder = Path(tempfile.mkdtemp(prefix="encoder-speed-"))
    started = time.perf_counter()
    export_patch_network(enc, folder / "musicnn.onnx")
    print(f"ONNX export: {time.perf_counter() - started:.1f} s")
    onnx_net = OnnxPatches(folder / "musicnn.onnx", args.threads)
    nets = {"shipped": enc.patch_outputs, "onnxruntime float32": onnx_net}  # checked against the fixture
    variants["onnxruntime float32"] = variant(net=onnx_net)
    variants["onnxruntime float32, batch 32"] = variant(net=onnx_net, batch=32)
    if args.int8:
        int8_graph(enc, folder / "musicnn.onnx", folder / "int8.onnx")
        nets["onnxruntime int8 (static QDQ)"] = OnnxPatches(folder / "int8.onnx", args.threads)
        variants["onnxruntime int8 (static QDQ)"] = variant(net=nets["onnxruntime int8 (static QDQ)"])
    if args.compile:
        compiled = torch.compile(enc.patch_outputs)
        started = time.perf_counter()
        with torch.inference_mode():
            compiled(patches[:16])
        print(f"torch.compile: first call (compilation) {time.perf_counter() - started:.1f} s")
        nets["torch.compile (inductor)"] = compiled
        variants["torch.compile (inductor)"] = variant(net=compiled)
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        outputs = {name: run() for name, run in variants.items()}  # warm-up, and the outputs compared
        for _ in range(args.rounds):
            for name, run in variants.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
    base = outputs["shipped"]
    shipped = times["shipped"]
    print(f"{args.patches} patches, {args.rounds} rounds, {args.threads} threads")
    print(f"{'variant':40s} {'ms/patch':>9s} {'speed vs shipped':>17s} {'max abs diff':>13s} {'bit-equal':>9s}")
    for name, ts in times.items():
        ratio = statistics.median(s / t for s, t in zip(shipped, ts, strict=True))
        diff = (outputs[name] - base).abs().max().item()
        print(f"{name:40s} {1e3 * statistics.median(ts) / args.patches:9.1f} {ratio:16.2f}x {diff:13.2e} "
              f"{str(torch.equal(outputs[name], base)):>9s}")
    print("against TensorFlow's outputs (tests/data/musicnn_reference.npz; bounds 5e-5 and 5e-5):")
    for name, net in nets.items():
        penultimate, logits = fixture_difference(enc, net)
        print(f"{name:40s} penultimate max abs {penultimate:.2e}, logits max abs {logits:.2e}")
    macs = macs_per_patch(enc)
    one = gemm_rate(1)
    print(f"network: {macs / 1e9:.2f} G multiply-adds per patch ({3 * macs / 1e9:.1f} per default 9 s clip); "
          f"float32 matrix product on 1 thread: {one:.0f} GFLOP/s, so >= {2 * macs / one / 1e9 * 1e3:.0f} ms per "
          f"patch of one core's time at that rate")


if __name__ == "__main__":
    main()
