"""GPU check for a lent CUDA machine that has only Python, torch and numpy (run by benchmarks/gpu_check.sh).

Imports only recsys's encoder and feature modules (lancedb, faiss, PyAV, mlflow, soundfile, soxr are blocked, so an
import of them fails loudly here rather than on the user's GPU box), feeds synthetic audio and prints:

1. encode throughput per encoder (dsp, musicnn, cnn), CUDA against CPU, in 30 s clips per second;
2. CUDA-against-CPU agreement of the unit vectors (max abs difference; musicnn under its float16 autocast and in
   float32), against the stated tolerances;
3. one AMP training step (float16 autocast + GradScaler, NT-Xent between two noisy views, as ``recsys
   train-encoder`` trains) of the cnn and of musicnn from its weights: loss, step time, finite gradients;
4. musicnn on the CPU path users get without a GPU (``embed.runtime: onnx``, ONNX Runtime; when onnxruntime and onnx
   import) beside its CUDA rate, and its vectors against CUDA's;
5. musicnn's out-of-memory halving: with the process limited to a small share of GPU memory, an over-large patch
   batch must halve until it fits and give the same vectors.

Budget: under 5 minutes on one GPU (each timing is a few batches). Exit status 1 if any agreement check fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

for _blocked in ("lancedb", "faiss", "av", "mlflow", "soundfile", "soxr", "pyarrow", "mutagen"):
    sys.modules[_blocked] = None  # type: ignore[assignment]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from recsys.embedder.encoders import CnnEncoder, build_encoder  # noqa: E402
from recsys.embedder.musicnn import AMP_TOLERANCE, MusicnnEncoder  # noqa: E402

CLIP_S = 30.0
# CUDA float32 (TF32 off) against the CPU, max abs difference of unit vectors: dsp and cnn as in
# tests/test_encoders.py; musicnn in float32 (its float16 autocast: AMP_TOLERANCE)
FP32_TOLERANCE = {"dsp": 2e-3, "cnn": 2e-3, "musicnn": 1e-4}
ENCODERS = ("dsp", "musicnn", "cnn")


def synthetic(n: int, sample_rate: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """(n, samples) float32: a different chord, beat and noise level per clip, deterministic."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    waves = []
    for i in range(n):
        f0 = 110.0 * 2 ** (i % 12 / 12)
        chord = sum(torch.sin(2 * torch.pi * f0 * r * t) for r in (1.0, 1.26, 1.5, 2.0)) * 0.15
        beat = torch.exp(-20.0 * ((t * (1.5 + 0.25 * (i % 4))) % 1.0)) * torch.randn(t.shape, generator=g) * 0.3
        waves.append(chord + beat + 0.02 * (1 + i % 3) * torch.randn(t.shape, generator=g))
    return torch.stack(waves).float()


def rate(encoder, waves: torch.Tensor, repeats: int) -> float:
    """Clips per second of ``encoder.encode`` (one warm-up call, then ``repeats`` timed ones)."""
    encoder.encode(waves)
    _sync(encoder.device)
    started = time.perf_counter()
    for _ in range(repeats):
        encoder.encode(waves)
    _sync(encoder.device)
    return repeats * len(waves) / (time.perf_counter() - started)


def onnx_cpu(waves: torch.Tensor) -> tuple[float, torch.Tensor] | str:
    """musicnn on ONNX Runtime on this machine's CPU, as `recsys embed` runs it without a GPU: (clips per second,
    vectors of the first 8 clips), or why it could not run (a line)."""
    from recsys.embedder.onnx_cpu import select_runtime

    encoder = MusicnnEncoder()
    with tempfile.TemporaryDirectory(prefix="gpu-check-onnx-") as home:
        how = select_runtime(encoder, "onnx", Path(home), "gpu-check")
        if how != "onnxruntime":
            return how or "not selected"
        return rate(encoder, waves, 1), encoder.encode(waves[:8])


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    return F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def amp_steps(model, logmel: torch.Tensor, steps: int = 4) -> tuple[list[float], float, float, bool]:
    """(losses, seconds per step after the first, final loss scale, weights finite) of float16-autocast steps with
    one GradScaler on two noisy views. The scaler starts at 65536 and skips steps whose gradients overflow while it
    backs off, so a healthy run ends with a finite scale and finite weights, not necessarily every step applied."""
    dev = logmel.device
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(dev.type)
    losses, started = [], 0.0
    for i in range(steps):
        if i == 1:  # the first step pays for cuDNN autotuning
            _sync(dev)
            started = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.float16):
            z1 = model.embed_logmel(logmel + 0.1 * torch.randn_like(logmel))
            z2 = model.embed_logmel(logmel + 0.1 * torch.randn_like(logmel))
        loss = nt_xent(z1, z2)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    _sync(dev)
    per_step = (time.perf_counter() - started) / max(1, steps - 1)
    model.eval()
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return losses, per_step, float(scaler.get_scale()), finite


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="clips per encode call on CUDA")
    ap.add_argument("--cpu-clips", type=int, default=4, help="clips per encode call on the CPU")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, CPU threads {torch.get_num_threads()}")
    ok = True
    print(f"\n{'encoder':10s} {'CPU clips/s':>12s} {'CUDA clips/s':>13s} {'max |cuda-cpu|':>15s} {'bound':>7s}")
    for name in ENCODERS:
        cpu, gpu = build_encoder(name, device="cpu"), build_encoder(name, device="cuda")
        waves = synthetic(args.batch, cpu.sample_rate, CLIP_S)
        cpu_rate = rate(cpu, waves[: args.cpu_clips], 1)
        gpu_rate = rate(gpu, waves.cuda(), 3)
        ref = cpu.encode(waves[:8])
        diff = float((gpu.encode(waves[:8].cuda()).cpu() - ref).abs().max())
        bound = AMP_TOLERANCE if isinstance(gpu, MusicnnEncoder) else FP32_TOLERANCE[name]
        ok &= diff <= bound
        print(f"{name:10s} {cpu_rate:12.2f} {gpu_rate:13.1f} {diff:15.2e} {bound:7.0e}", flush=True)
        if isinstance(gpu, MusicnnEncoder):
            gpu.amp = False
            fp32_rate = rate(gpu, waves.cuda(), 2)
            diff32 = float((gpu.encode(waves[:8].cuda()).cpu() - ref).abs().max())
            ok &= diff32 <= FP32_TOLERANCE[name]
            print(f"{'  fp32':10s} {'':12s} {fp32_rate:13.1f} {diff32:15.2e} {FP32_TOLERANCE[name]:7.0e}", flush=True)

    print("\nmusicnn without a GPU (the default CPU path: ONNX Runtime) against CUDA:")
    gpu = MusicnnEncoder().cuda()
    waves = synthetic(args.batch, gpu.sample_rate, CLIP_S, seed=3)
    cuda_rate, cuda_vectors = rate(gpu, waves.cuda(), 3), gpu.encode(waves[:8].cuda()).cpu()
    got = onnx_cpu(waves[: args.cpu_clips * 4])
    if isinstance(got, str):
        print(f"  skipped: {got} (see gpu_check.sh: benchmarks/gpu-wheels)")
    else:
        onnx_rate, onnx_vectors = got
        diff = float((onnx_vectors - cuda_vectors).abs().max())
        ok &= diff <= AMP_TOLERANCE
        print(f"  ONNX Runtime CPU {onnx_rate:.2f} clips/s ({torch.get_num_threads()} threads), CUDA {cuda_rate:.1f} "
              f"clips/s ({cuda_rate / onnx_rate:.1f}x); max |cuda-onnx| {diff:.2e} (bound {AMP_TOLERANCE:.0e})")

    print("\nAMP training step (float16 autocast + GradScaler, 2 x 16 excerpts):")
    for model in (CnnEncoder().cuda(), MusicnnEncoder().cuda()):
        logmel = model.frontend(synthetic(16, model.sample_rate, 3.0, seed=1).cuda())
        losses, seconds, scale, finite = amp_steps(model, logmel)
        ok &= finite and all(map(math.isfinite, losses))
        print(f"  {model.name:8s} losses {' '.join(f'{v:.3f}' for v in losses)}  {seconds * 1000:.0f} ms/step  "
              f"loss scale {scale:g}  weights finite: {finite}")

    print("\nmusicnn out-of-memory halving:")
    enc = MusicnnEncoder().cuda()
    waves = synthetic(16, enc.sample_rate, CLIP_S, seed=2).cuda()
    expected = enc.encode(waves)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 2 * 2**30 / total))  # 2 GiB for this process
    enc.patch_batch = 4096  # 16 clips x 10 patches at once: several GiB of activations
    try:
        got = enc.encode(waves)
        same = float((got - expected).abs().max())
        halved = enc.patch_batch < 4096
        ok &= halved and same <= 1e-5
        print(f"  limit 2 GiB: patch batch 4096 -> {enc.patch_batch}, vectors equal to {same:.1e}")
    except torch.cuda.OutOfMemoryError:
        ok = False
        print("  out of memory even at one patch per batch")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    print("\nall checks passed" if ok else "\nA CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
