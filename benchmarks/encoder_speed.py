"""musicnn on the CPU: candidate speed-ups measured side by side in one process, and the arithmetic ceiling.

Each variant runs the network (log-mel patches -> 200-d penultimate layer) over the same patches, the variants in
turn, ``--rounds`` times; the figure is the median of the per-round ratio to the shipped path (> 1: faster), so
that a shared machine's drift cancels. Every variant's max abs difference from the shipped path is printed too
(the fixture's bound on the penultimate layer is 5e-5).

The ceiling: the network's multiply-adds per patch against this machine's float32 matrix-multiply rate on one
thread; with the decode floor (``embed_throughput.py`` (a)), it bounds end-to-end tracks/s on N cores.

    python benchmarks/encoder_speed.py [--patches 32] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from recsys.embedder.musicnn import PATCH_FRAMES, MusicnnEncoder, _bn_affine, _pool_affine


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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    enc = MusicnnEncoder()
    g = torch.Generator().manual_seed(0)
    waves = 0.1 * torch.randn(-(-args.patches // 3), 3 * PATCH_FRAMES * 256, generator=g)
    with torch.inference_mode():
        patches = enc.patches(enc.frontend(waves)).reshape(-1, 96, PATCH_FRAMES)[: args.patches]
    shipped_temporal, shipped_freq_max = enc._temporal_inference, enc._freq_max

    def variant(temporal=None, freq_max=None, batch=16, autocast=None):
        def run() -> torch.Tensor:
            enc._temporal_inference = temporal or shipped_temporal
            enc._freq_max = freq_max or shipped_freq_max
            try:
                with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                    return torch.cat([enc.patch_outputs(patches[i: i + batch])[0].float()
                                      for i in range(0, len(patches), batch)])
            finally:
                enc._temporal_inference, enc._freq_max = shipped_temporal, shipped_freq_max
        return run

    variants = {
        "shipped": variant(),
        "separate temporal convs (before)": variant(temporal=separate_temporal(enc)),
        "channels-last timbral convs": variant(freq_max=channels_last_freq_max(enc)),
        "patch batch 8": variant(batch=8),
        "patch batch 32": variant(batch=32),
        "bfloat16 autocast": variant(autocast=torch.bfloat16),
    }
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
    macs = macs_per_patch(enc)
    one = gemm_rate(1)
    print(f"network: {macs / 1e9:.2f} G multiply-adds per patch ({3 * macs / 1e9:.1f} per default 9 s clip); "
          f"float32 matrix product on 1 thread: {one:.0f} GFLOP/s, so >= {2 * macs / one / 1e9 * 1e3:.0f} ms per "
          f"patch of one core's time at that rate")


if __name__ == "__main__":
    main()
