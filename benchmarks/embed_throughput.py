"""Embed throughput, measured side by side in one run (issue: goals (b) dsp >= 0.7x (a) and >= 5x (c)).

Every clip follows the default clip policy (``audio.crop_count`` excerpts of ``audio.crop_seconds``, printed).

(a) decode-only of the clips, with the same worker processes `recsys embed` uses: the floor;
(b) `recsys embed` end to end (a fresh process, a fresh home) with each of --encoders (dsp, musicnn, cnn;
    ``musicnn+onnx``: musicnn with ``embed.runtime: onnx``, its one-off conversion into the fresh home included);
(c) a naive pipeline: decode each whole file, then cut the excerpts, same workers;
(d) encode only: each encoder on synthetic clips already in memory, batches of --batch, this process's threads.

    python benchmarks/embed_throughput.py [--tracks 100] [--minutes 4] [--workers 0] [--dir /tmp/recsys-bench-lib]
                                          [--encoders dsp musicnn cnn] [--baseline /work/main --rounds 2]

The synthetic library (mixed formats) is written once into --dir and reused by later runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

from recsys.config import AudioSettings
from recsys.embedder.audio import crop_windows, load_crop
from recsys.embedder.decoding import DecodeSpec, Job, decoded, default_workers
from recsys.library.track import Track
from recsys.synth.audio import FORMATS, STYLES, synth_track, write_audio
from recsys.synth.player_db import SynthSong, write_clementine_db

SR = 22050
CLIP = AudioSettings()  # the default clip policy
CLIP_S = CLIP.crop_seconds * CLIP.crop_count


def build(folder: Path, n: int, minutes: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    formats = list(FORMATS)
    paths = []
    for i in range(n):
        fmt = formats[i % len(formats)]
        path = folder / f"{i:03d}.{FORMATS[fmt]}"
        if not path.exists():
            samples = synth_track(STYLES[i % len(STYLES)], minutes * 60, sample_rate=44100, seed=i)
            tmp = path.with_name(f".partial-{path.name}")
            write_audio(tmp, samples, 44100, fmt)
            os.replace(tmp, path)
        paths.append(path)
    return paths


def decode_whole(path: str) -> np.ndarray:
    """The naive way: every sample of the file, then the crop."""
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception:
        with av.open(path) as container:
            stream = container.streams.audio[0]
            rate = stream.rate
            data = np.concatenate([f.to_ndarray().reshape(-1, stream.channels) if f.format.is_packed
                                   else f.to_ndarray().T for f in container.decode(stream)]).astype(np.float32)
    mono = data.mean(axis=1)
    windows = crop_windows(len(mono) / rate, CLIP.crop_seconds, CLIP.crop_count, CLIP.crop_position)
    crop = np.concatenate([mono[int(start * rate): int((start + length) * rate)] for start, length in windows])
    return soxr.resample(crop, rate, SR)


def _naive(job: Job, spec: DecodeSpec):
    return job, decode_whole(job.track.path)


def timed_pool(fn, paths: list[Path], workers: int) -> float:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    jobs = [Job(Track(str(p)), 0, 0, "") for p in paths]
    spec = DecodeSpec(SR, CLIP.crop_seconds, CLIP.crop_position, 3600.0, 600.0, CLIP.crop_count)
    started = time.perf_counter()
    if fn is None:
        for _ in decoded(jobs, spec, workers):
            pass
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            list(pool.map(fn, jobs, [spec] * len(jobs)))
    return time.perf_counter() - started


def timed_embed(db: Path, encoder: str, workers: int, code: Path | None = None) -> tuple[float, float]:
    """(end-to-end seconds of a fresh `recsys embed` process, seconds of its decode-and-encode loop as it reports
    them: the difference is the fixed start-up, mostly importing torch, lancedb and faiss). ``code``: the checkout
    whose recsys runs (PYTHONPATH), this one's by default."""
    home = Path(tempfile.mkdtemp(prefix="recsys-bench-home-"))
    name, _, runtime = encoder.partition("+")
    env = {**os.environ, "RECSYS_EMBED__RUNTIME": runtime or "torch"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    started = time.perf_counter()
    # -P: no current folder first on sys.path, where a checkout's root would shadow ``code``
    done = subprocess.run([sys.executable, "-P", "-m", "recsys.cli", "--home", str(home), "embed", "--db", str(db),
                           "--encoder", name, "--workers", str(workers), "--device", "cpu", "-q"], check=True,
                          capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    shutil.rmtree(home)
    loop = re.search(r"tracks/s over ([0-9.]+) s", done.stdout)
    return elapsed, float(loop.group(1)) if loop else float("nan")


def encode_only(name: str, batch: int, batches: int = 3) -> float:
    """Clips (the default policy's length) per second of the encoder alone (one warm-up batch, then ``batches``
    timed ones)."""
    import torch

    from recsys.embedder.active import resolve_encoder

    spec, _, runtime = name.partition("+")
    encoder = resolve_encoder(spec, Path(tempfile.mkdtemp(prefix="recsys-bench-home-")), "cpu",
                              runtime or "torch").encoder
    clips = [synth_track(STYLES[i % len(STYLES)], CLIP_S, encoder.sample_rate, seed=i).mean(1) for i in range(batch)]
    waves = torch.from_numpy(np.stack(clips).astype(np.float32))
    encoder.encode(waves)
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode(waves)
    return batches * batch / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench-lib")
    ap.add_argument("--encoders", nargs="+", default=["dsp", "musicnn", "cnn"])
    ap.add_argument("--skip-cnn", action="store_true")
    ap.add_argument("--batch", type=int, default=8, help="clips per encode call in (d)")
    ap.add_argument("--baseline", type=Path, help="another checkout (e.g. main's): (b) also runs its recsys, "
                    "alternating with this one's, --rounds times each")
    ap.add_argument("--rounds", type=int, default=1, help="runs of (b) per encoder (and per checkout)")
    args = ap.parse_args()
    workers = default_workers(args.workers)
    t0 = time.perf_counter()
    paths = build(args.dir, args.tracks, args.minutes)
    print(f"library: {len(paths)} tracks x {args.minutes:g} min in {args.dir} "
          f"(formats: {', '.join(FORMATS)}; ready in {time.perf_counter() - t0:.0f} s); workers: {workers}; "
          f"clip: {CLIP.crop_count} x {CLIP.crop_seconds:g} s")
    db = args.dir / "bench.db"
    if db.exists():
        db.unlink()
    write_clementine_db(db, [SynthSong(path=str(p), title=p.stem, artist="bench") for p in paths])
    load_crop(str(paths[0]), SR, CLIP.crop_seconds, count=CLIP.crop_count)  # warm the page cache alike for all
    n = len(paths)
    results = {"(a) decode crops (floor)": timed_pool(None, paths, workers)}
    encoders = [e for e in args.encoders if not (args.skip_cnn and e == "cnn")]
    codes = [None] if args.baseline is None else [args.baseline.resolve(), Path(__file__).resolve().parents[1]]
    for encoder in encoders:
        for round_ in range(args.rounds):
            for code in codes if round_ % 2 == 0 else codes[::-1]:
                whole, loop = timed_embed(db, encoder, workers, code)
                tag = "" if code is None else (" [baseline]" if code == codes[0] else " [this]")
                for key, secs in ((f"(b) recsys embed, {encoder}{tag}", whole),
                                  (f"    its embed loop, {encoder}{tag}", loop)):
                    results[key] = min(results.get(key, secs), secs)  # the best of the rounds
    results["(c) naive full decode + crop"] = timed_pool(_naive, paths, workers)
    print(f"{'pipeline':32s} {'seconds':>8s} {'tracks/s':>9s}")
    for name, secs in results.items():
        print(f"{name:32s} {secs:8.1f} {n / secs:9.2f}")
    for encoder in encoders:
        print(f"{'(d) encode only, ' + encoder:32s} {'':8s} {encode_only(encoder, args.batch):9.2f}")
    floor = n / results["(a) decode crops (floor)"]
    if "dsp" in encoders and args.baseline is None:
        dsp = n / results["(b) recsys embed, dsp"]
        naive = n / results["(c) naive full decode + crop"]
        loop = n / results["    its embed loop, dsp"]
        print(f"dsp embed / decode floor = {dsp / floor:.2f}x end to end, {loop / floor:.2f}x without start-up "
              "(goal >= 0.7x)")
        print(f"dsp embed / naive decode = {dsp / naive:.2f}x end to end, {loop / naive:.2f}x without start-up "
              "(goal >= 5x)")
    for encoder in [e for e in encoders if e != "dsp"]:
        for tag in ([""] if args.baseline is None else [" [baseline]", " [this]"]):
            whole, loop = results[f"(b) recsys embed, {encoder}{tag}"], results[f"    its embed loop, {encoder}{tag}"]
            print(f"{encoder}{tag} embed / decode floor = {n / whole / floor:.2f}x end to end, "
                  f"{n / loop / floor:.2f}x without start-up")


if __name__ == "__main__":
    main()
