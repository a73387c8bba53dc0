"""Encoder training throughput, measured side by side in one run (issue: train-encoder).

(1) audio-cache build, tracks/s, against two decode floors with the same worker processes and nothing else:
    one window of the cached total length per track, and the 30 s inference crops of embed_throughput's (a);
(2) training excerpts/s fed from the cache, against the same training steps fed by decoding each excerpt from the
    audio file on the fly (seeking, as `recsys embed` does), with the default base (fine-tuned musicnn).

    python benchmarks/train_throughput.py [--tracks 40] [--steps 6] [--dir /tmp/recsys-bench-lib]

Reuses (or writes) the synthetic four-minute tracks of benchmarks/embed_throughput.py in --dir.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from embed_throughput import build, timed_pool  # noqa: E402  (same folder: the shared synthetic library)

from recsys.config import load_settings
from recsys.embedder.audio import load_crop
from recsys.embedder.decoding import DecodeSpec, Job, decoded, default_workers
from recsys.library.sources import load_library
from recsys.library.track import Track
from recsys.synth.player_db import SynthSong, write_clementine_db
from recsys.training.train_setup import SAMPLE_RATE, base_model, build_cache
from recsys.training.trainer import Trainer


def decode_floor(tracks: list[Track], sample_rate: int, window_s: float, workers: int) -> float:
    jobs = [Job(t, 0, 0, "") for t in tracks]
    started = time.perf_counter()
    for _ in decoded(jobs, DecodeSpec(sample_rate, window_s, "center", 3600.0, 600.0), workers):
        pass
    return time.perf_counter() - started


def train_steps(trainer: Trainer, steps: int, batch: int, from_audio: bool) -> float:
    """Seconds for ``steps`` training steps of ``batch`` tracks (two excerpts each)."""
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    samples = trainer.train_set.samples
    excerpt_s = samples / SAMPLE_RATE
    started = time.perf_counter()
    for _ in range(steps):
        idx = rng.choice(len(trainer.train_set.entries), batch, replace=False)
        if from_audio:
            views = []
            for _view in range(2):
                waves = []
                for i in idx:
                    entry = trainer.train_set.entries[i]
                    start = float(rng.uniform(0, max(0.0, entry.duration_s - excerpt_s)))
                    clip = load_crop(entry.key, SAMPLE_RATE, crop_s=excerpt_s, position="start",
                                     seg_start_s=start, seg_length_s=excerpt_s)
                    waves.append(np.resize(clip.samples, samples))
                views.append(torch.from_numpy(np.stack(waves)))
            trainer._train_step(views[0], views[1], gen)
        else:
            trainer._train_step(*trainer.train_set.random_pairs(idx, rng), gen)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench-lib")
    a = ap.parse_args()
    paths = build(a.dir, a.tracks, a.minutes)
    home = Path(tempfile.mkdtemp(prefix="recsys-bench-train-"))
    db = home / "library.db"
    write_clementine_db(db, [SynthSong(path=str(p), title=p.stem, artist="bench", album=p.stem) for p in paths])
    settings = load_settings(overrides={"home": str(home), "library": {"db": str(db)},
                                        "train": {"workers": a.workers}}, environ={})
    tracks = load_library(db, []).tracks
    workers = default_workers(a.workers)
    cfg = settings.train
    floor = decode_floor(tracks, SAMPLE_RATE, cfg.windows * cfg.window_seconds, workers)
    crop_floor = timed_pool(None, paths, workers)
    cache, report = build_cache(settings.home_path, settings.train, settings.audio, tracks)
    build_s = report.seconds
    print(f"{len(tracks)} tracks x {a.minutes:g} min, {workers} workers, {cfg.windows} windows of "
          f"{cfg.window_seconds:g} s")
    print(f"(1) decode floor, one {cfg.windows * cfg.window_seconds:g} s window {len(tracks) / floor:.2f} tracks/s, "
          f"30 s crops (embed (a)) {len(tracks) / crop_floor:.2f} tracks/s; cache build {len(tracks) / build_s:.2f} "
          f"tracks/s = {floor / build_s:.2f}x the window floor, {crop_floor / build_s:.2f}x the crop floor "
          f"({report.built} built, {report.bytes_per_track} bytes per track)")

    model, fine_tune = base_model(cfg)
    if cfg.lr is None:
        cfg.lr = 1e-4
    trainer = Trainer(cfg, model, cache.for_tracks(tracks), [], cache.folder, home / "run", fine_tune=fine_tune)
    batch = min(a.batch, len(tracks))
    trainer._train_step(*trainer.train_set.random_pairs(np.arange(batch), np.random.default_rng(1)),
                        torch.Generator())  # warm-up
    cached = train_steps(trainer, a.steps, batch, from_audio=False)
    live = train_steps(trainer, a.steps, batch, from_audio=True)
    excerpts = 2 * batch * a.steps
    print(f"(2) training, {model.name} ({'fine-tuned' if fine_tune else 'from scratch'}), batch {batch}, 3 s "
          f"excerpts on {trainer.device}: from the cache {excerpts / cached:.1f} excerpts/s, decoding on the fly "
          f"{excerpts / live:.1f} excerpts/s = cache {live / cached:.2f}x faster")


if __name__ == "__main__":
    main()
