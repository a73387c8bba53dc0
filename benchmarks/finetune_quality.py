"""Does fine-tuning MusiCNN on a library help on music it never saw? Same-soundtrack precision@10 of the pretrained
and the fine-tuned encoder on held-out soundtracks of the development corpus, next to chance.

    python benchmarks/finetune_quality.py [--corpus /tmp/devcorpus] [--epochs 2] [--batch 32]

The soundtracks named by --held-out are never trained on (nor validated on); training runs on the others exactly
as `recsys train-encoder --from musicnn` does (the same audio cache, album split, trainer and checkpoint; album =
the folder a file is in), on the CPU unless a GPU is there. Both encoders are then scored on 30 s centre crops of
the held-out tracks (what `recsys embed` stores by default), decoded once.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from encoder_quality import chance, corpus  # noqa: E402  (same folder)

from recsys.app.encoder_scores import Score
from recsys.app.train_encoder import decide
from recsys.config import load_settings
from recsys.embedder.audio import load_crop
from recsys.embedder.encoders import build_encoder, load_checkpoint
from recsys.index.retrieval import retrieval_metrics
from recsys.library.sources import load_library
from recsys.synth.player_db import SynthSong, write_clementine_db
from recsys.training.train_setup import DEFAULT_LR, base_model, build_cache, split_heldout
from recsys.training.trainer import Trainer

HELD_OUT = ("hedgewars-data,fillets-ng-data,flare-game,fretsonfire-songs-muldjord,fretsonfire-songs-sectoid,"
            "openclonk-data")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/tmp/devcorpus"))
    ap.add_argument("--held-out", default=HELD_OUT)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=DEFAULT_LR["musicnn"])
    ap.add_argument("--crop", type=float, default=30.0)
    a = ap.parse_args()
    held = set(a.held_out.split(","))
    paths, labels = corpus(a.corpus)
    home = Path(tempfile.mkdtemp(prefix="recsys-finetune-"))
    songs = [SynthSong(path=str(p), title=p.stem, artist=lab, album=str(p.parent.relative_to(a.corpus)))
             for p, lab in zip(paths, labels, strict=True) if lab not in held]
    db = write_clementine_db(home / "train.db", songs)
    settings = load_settings(overrides={"home": str(home), "library": {"db": str(db)},
                                        "train": {"base": "musicnn", "epochs": a.epochs, "batch_size": a.batch,
                                                  "lr": a.lr}}, environ={})
    started = time.perf_counter()
    tracks = load_library(db, []).tracks
    cache, report = build_cache(settings.home_path, settings.train, settings.audio, tracks)
    split = split_heldout(cache.for_tracks(tracks), settings.train.holdout, settings.train.seed)
    print(f"train soundtracks: {len(songs)} tracks, cache {report.size_bytes / 1e6:.0f} MB in "
          f"{report.seconds:.0f} s; split {split.counts()}")
    model, fine_tune = base_model(settings.train)
    trainer = Trainer(settings.train, model, split.train, split.val, cache.folder, home / "run", fine_tune=fine_tune)
    fit = trainer.fit(lambda m: print(f"epoch {m.epoch}: loss {m.loss:.3f}, held-out (validation albums) "
                                      f"{m.val_loss:.3f}, embedding std {m.embedding_std:.3f}", flush=True))
    train_s = time.perf_counter() - started
    test = [(p, lab) for p, lab in zip(paths, labels, strict=True) if lab in held]
    clips = [load_crop(p, 16000, a.crop, "center").samples for p, _ in test]
    test_labels = [lab for _, lab in test]
    scores = []
    for name, encoder in (("musicnn (pretrained)", build_encoder("musicnn", device="cpu")),
                          (f"musicnn fine-tuned {a.epochs} epochs", load_checkpoint(fit.best, "cpu"))):
        with torch.inference_mode():
            vectors = np.concatenate([encoder.encode(torch.from_numpy(c).unsqueeze(0)).numpy() for c in clips])
        m = retrieval_metrics(vectors, test_labels, test_labels, [str(p) for p, _ in test])
        scores.append(Score(name, name, "", "decoded", m))
        print(f"{name}: held-out same-soundtrack precision@10 {m['album_p10']:.3f} over {m['album_queries']} "
              f"queries", flush=True)
    print(f"chance {chance(test_labels):.3f}; {len(held)} held-out soundtracks, {len(test)} tracks; training "
          f"{train_s:.0f} s on {trainer.device}; {fit.steps} steps")
    activated, why = decide(scores[0], scores[1], None)
    print(f"decision rule on these scores: {why}")
    assert not math.isnan(scores[0].metrics["album_p10"])


if __name__ == "__main__":
    main()
