"""Same-label precision@10 of encoders on a folder of real music, per clip policy, next to chance; encode speed.

    python benchmarks/encoder_quality.py [--corpus /tmp/devcorpus] [--encoders dsp musicnn] [--crops center:30]

Labels are the first folder under ``--corpus`` (on the development corpus, shared/corpus/: the soundtrack). Every
track is decoded with recsys's own ``load_crop`` (seeking, soxr) and scored with ``recsys.index.retrieval``'s
``retrieval_metrics`` (cosine, capped precision@10: 1.0 is perfect whatever the label sizes); chance is what random
neighbours would score on the same labels. Encoders: any name ``build_encoder`` knows (dsp, musicnn, cnn,
module:Class), ``musicnn@WEIGHTS.npz`` for MusiCNN with other converted weights (scripts/convert_musicnn.py
--models MTT_musicnn --weights-dir DIR), or ``musicnn+onnx`` for MusiCNN on ONNX Runtime (``embed.runtime: onnx``;
each encoder's largest vector difference from the first one's is printed). ``--vectors NAME=FILE.npz`` scores
vectors made elsewhere (keys, vectors: what ``convert_musicnn.py --embed-logmels`` writes from the log-mels
``--dump-logmels FILE`` saves).

Crop policies (each crop reached by seeking): ``center:S`` one S-second crop at the middle; ``spread:NxS`` N crops
of S seconds centred at 1/(N+1), ..., N/(N+1) of the track (``audio.crop_count`` N, ``audio.crop_seconds`` S),
joined and encoded as one clip, as `recsys embed` does; ``whole``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recsys.embedder.active import resolve_encoder
from recsys.embedder.audio import load_crop
from recsys.embedder.encoders import build_encoder
from recsys.embedder.musicnn import MusicnnEncoder
from recsys.index.retrieval import K, retrieval_metrics

AUDIO = (".ogg", ".flac", ".mp3", ".wav", ".opus", ".m4a")
WHOLE_S = 900.0


def corpus(root: Path) -> tuple[list[Path], list[str]]:
    """The corpus's audio files and their labels (the first folder); no audio at all stops the benchmark."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO and p.is_file())
    if not paths:
        raise SystemExit(f"no audio under {root}: build it with shared/corpus/build_devcorpus.sh")
    return paths, [p.relative_to(root).parts[0] for p in paths]


def crop(path: Path, policy: str, sample_rate: int) -> np.ndarray:
    """The clip a policy takes from one track, decoded exactly as `recsys embed` decodes it (``load_crop``: each
    excerpt reached by seeking, excerpts joined end to end)."""
    if policy == "whole":
        return load_crop(path, sample_rate, WHOLE_S, "start", max_duration_s=WHOLE_S).samples
    kind, _, arg = policy.partition(":")
    if kind == "center":
        return load_crop(path, sample_rate, float(arg), "center", max_duration_s=WHOLE_S).samples
    if kind == "spread":
        n, _, seconds = arg.partition("x")
        return load_crop(path, sample_rate, float(seconds), max_duration_s=WHOLE_S, count=int(n)).samples
    raise SystemExit(f"unknown crop policy {policy!r}: use center:S, spread:NxS or whole")


def make_encoder(spec: str):
    if spec == "musicnn+onnx":
        home = Path(tempfile.mkdtemp(prefix="encoder-quality-"))
        resolved = resolve_encoder("musicnn", home, "cpu", runtime="onnx")
        if resolved.encoder.runtime_label != "onnxruntime":
            raise SystemExit(f"musicnn+onnx: {resolved.encoder.runtime_label}")
        return resolved.encoder
    if spec.startswith("musicnn@"):
        return MusicnnEncoder(spec.partition("@")[2])
    return build_encoder(spec, device="cpu")


def embed(encoder, clips: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """(vectors, encode seconds): each track's clip encoded on its own, as the clip lengths differ."""
    seconds, rows = 0.0, []
    for clip in clips:
        started = time.perf_counter()
        rows.append(encoder.encode(torch.from_numpy(clip).unsqueeze(0))[0].numpy())
        seconds += time.perf_counter() - started
    return np.stack(rows), seconds


def dump_logmels(paths: list[Path], clips: list[np.ndarray], dst: Path) -> None:
    enc = MusicnnEncoder()
    with torch.inference_mode():
        patches = {f"t{i:04d}": enc.patches(enc.frontend(torch.from_numpy(c).unsqueeze(0)))[0].numpy()
                   for i, c in enumerate(clips)}
    np.savez(dst, **patches)
    print(f"log-mel patches of {len(paths)} tracks -> {dst}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/tmp/devcorpus"))
    ap.add_argument("--encoders", nargs="*", default=["dsp", "musicnn"])
    ap.add_argument("--crops", nargs="+", default=["center:30"])
    ap.add_argument("--vectors", nargs="*", default=[], metavar="NAME=FILE.npz")
    ap.add_argument("--dump-logmels", type=Path, help="write musicnn log-mel patches of the first crop policy")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths, labels = corpus(args.corpus)
    cids = [str(p) for p in paths]
    print(f"{len(paths)} tracks, {len(set(labels))} labels, precision@{K}; torch threads {args.threads}")
    print(f"{'encoder':44s} {'crops':12s} {'p@10':>6s} {'chance':>6s} {'encode tracks/s':>16s}")
    for policy in args.crops:
        decoded: dict[int, list[np.ndarray]] = {}
        first = None
        for spec in args.encoders:
            encoder = make_encoder(spec)
            rate = encoder.sample_rate
            if rate not in decoded:
                decoded[rate] = [crop(p, policy, rate) for p in paths]
            vectors, seconds = embed(encoder, decoded[rate])
            m = retrieval_metrics(vectors, labels, labels, cids)
            same_dim = first is not None and first.shape == vectors.shape
            diff = f"  max abs difference from the first: {np.abs(vectors - first).max():.2e}" if same_dim else ""
            first = vectors if first is None else first
            print(f"{spec:44s} {policy:12s} {m['album_p10']:6.3f} {m['album_chance']:6.3f} "
                  f"{len(paths) / seconds:16.2f}{diff}", flush=True)
        if args.dump_logmels and policy == args.crops[0]:
            dump_logmels(paths, decoded.get(16000) or [crop(p, policy, 16000) for p in paths], args.dump_logmels)
    for item in args.vectors:
        name, _, file = item.partition("=")
        with np.load(file) as data:
            order = {k: i for i, k in enumerate(data["keys"].tolist())}
            vectors = data["vectors"][[order[f"t{i:04d}"] for i in range(len(paths))]]
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        m = retrieval_metrics(vectors, labels, labels, cids)
        print(f"{name:44s} {'(' + args.crops[0] + ')':12s} {m['album_p10']:6.3f} {m['album_chance']:6.3f} "
              f"{'-':>16s}")


if __name__ == "__main__":
    main()
