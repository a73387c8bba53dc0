"""`recsys train-encoder`: fine-tune MusiCNN (or train the cnn from scratch) on the user's own music, without labels,
and make the result the current encoder only if it groups held-out albums better than the current one.

The run, in order: cache a few windows of every track (:mod:`recsys.training.cache`); split the library by album
(by artist when a track has no album; a track with neither is its own group) into training tracks, validation
albums (their held-out contrastive loss picks the best epoch) and test albums (they decide activation), so neither
choice ever sees a training track and the decision never sees the data the epoch was chosen on; train
(:mod:`recsys.training.trainer`) in a fresh run folder ``<home>/models/runs/<arch>-<date>-<time>/``; score the new
encoder and the current one on the test albums with the vectors `recsys embed` would store (same-album precision@10,
same-artist when no album is shared); activate the new one only if it is better (:mod:`recsys.embedder.active`: a
separate copy that no later run overwrites).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from recsys.app.encoder_scores import Score, encoder_rows, score_rows, shown_id
from recsys.app.settings import library_inputs
from recsys.config import Settings
from recsys.embedder.active import activate as activate_encoder
from recsys.embedder.active import latest_run_dir, new_run_dir, resolve_encoder
from recsys.home.lock import HomeLock
from recsys.index.retrieval import K
from recsys.index.store import TrackStore
from recsys.library.sources import load_library
from recsys.library.track import Track
from recsys.tracking import mlflow_run
from recsys.training.cache import CacheReport
from recsys.training.train_setup import DEFAULT_LR, base_model, build_cache, split_heldout
from recsys.training.trainer import EpochMetrics, FitResult, TooFewTracks, Trainer, TrainError

Progress = Callable[[int, str], object]  # (total, description) -> a tqdm-like bar


@dataclass
class EncoderReport:
    """What `recsys train-encoder` did, for the CLI to render and the demo to show."""

    cache: CacheReport
    split: dict[str, int]
    fit: FitResult
    device: str
    base: str
    run_dir: Path
    scores: list[Score]
    activated: bool
    decision: str
    run_id: str | None = None
    active_path: Path | None = None
    seconds: float = 0.0

    @property
    def tracks(self) -> int:
        return self.split["train_tracks"]


def _primary_metric(before: Score, after: Score) -> str | None:
    """Same-album precision decides; same-artist when no album is usable; None when the tags cannot judge."""
    for name in ("album_p10", "artist_p10"):
        if not (math.isnan(float(before.metrics[name])) or math.isnan(float(after.metrics[name]))):
            return name
    return None


MIN_TEST_ALBUMS = 5  # fewer held-out test albums (groups) and chance alone is already high: no decision


def _too_small(before: Score, after: Score, metric: str, test_albums: int | None) -> str | None:
    """Why the held-out test cannot decide between the two encoders, or None when it can.

    The rule: at least :data:`MIN_TEST_ALBUMS` test albums, and a difference larger than the test's standard error,
    sqrt((p_new (1 - p_new) + p_old (1 - p_old)) / n) over its n queries (each query counted as one trial: the
    conservative side, as a query's K neighbours are not independent)."""
    new, old = float(after.metrics[metric]), float(before.metrics[metric])
    chance = float(after.metrics.get(metric.replace("_p10", "_chance"), math.nan))
    at_chance = "" if math.isnan(chance) else f", where chance alone is {chance:.3f}"
    if test_albums is not None and test_albums < MIN_TEST_ALBUMS:
        return f"only {test_albums} held-out test album(s) (at least {MIN_TEST_ALBUMS} are needed{at_chance})"
    queries = int(after.metrics.get(metric.replace("_p10", "_queries"), 0) or after.metrics.get("tracks", 0))
    error = math.sqrt((new * (1 - new) + old * (1 - old)) / max(queries, 1))
    if abs(new - old) <= error:
        return (f"the difference {new - old:+.3f} is within the test's standard error {error:.3f} "
                f"({queries} queries{at_chance})")
    return None


def decide(before: Score | None, after: Score | None, activate: bool | None,
           test_albums: int | None = None) -> tuple[bool, str]:
    """Activate the new encoder only when it groups the held-out test albums better (or when told to). With no
    more than K + 1 test tracks every track's K neighbours are all the others, so precision@K cannot tell the
    encoders apart: that is no comparison either. A test too small to decide (:func:`_too_small`) says so and keeps
    the current encoder."""
    tracks = int(after.metrics.get("tracks", 0)) if after is not None else 0
    metric = _primary_metric(before, after) if tracks > K + 1 else None
    if activate is False:
        return False, "not activated (--no-activate)"
    if metric is None:
        if activate:
            return True, "activated as asked (--activate); the held-out tracks could not compare the encoders"
        why = (f"only {tracks} held-out test tracks (more than {K + 1} are needed)" if tracks <= K + 1
               else "the held-out test tracks share no album or artist")
        return False, (f"comparison impossible: {why}, so the new encoder was not activated; "
                       "`recsys train-encoder --activate` activates it anyway")
    new, old = float(after.metrics[metric]), float(before.metrics[metric])
    if activate:
        return True, f"activated as asked (--activate); held-out {metric} {new:.3f} vs {old:.3f}"
    small = _too_small(before, after, metric, test_albums)
    if small:
        return False, (f"held-out test too small to decide: {small}; held-out {metric} {new:.3f} vs the current "
                       f"encoder's {old:.3f}, so the current encoder is kept (more albums in the library or a larger "
                       "train.holdout make the test decide; `recsys train-encoder --activate` activates it anyway)")
    if new > old:
        return True, f"activated: held-out {metric} {new:.3f} beats the current encoder's {old:.3f}"
    return False, (f"not activated: held-out {metric} {new:.3f} does not beat the current encoder's {old:.3f} "
                   "(`recsys train-encoder --activate` would force it)")


def _encoder_card(report: EncoderReport, params: dict) -> str:
    last = report.fit.history[-1] if report.fit.history else None
    lines = [f"# recsys {report.base} encoder (self-supervised, NT-Xent)", "",
             f"- split: {report.split}",
             f"- cache: {report.cache.size_bytes / 1e6:.1f} MB, {report.cache.bytes_per_track} bytes per track",
             f"- epochs: {len(report.fit.history)} (resumed from {report.fit.resumed_from}), "
             f"steps: {report.fit.steps}, device: {report.device}",
             f"- settings: {params}",
             f"- last epoch: {last.as_dict() if last else {}}", "",
             "## Retrieval on the held-out test albums (tags as labels)", ""]
    lines += [f"- {s.label} ({s.encoder_id}, {s.source}): {s.as_json()}" for s in report.scores]
    lines += ["", f"## Decision: {report.decision}", ""]
    return "\n".join(lines)


def _compare(settings: Settings, new_path: Path, test: Sequence[Track]) -> list[Score]:
    """The current encoder and the new one, scored on the test tracks with what `recsys embed` would store."""
    if not test:
        return []
    home, device = settings.home_path, settings.train.device
    store = TrackStore.of(settings, writable=False)  # rows read, never written
    named = []
    for tag, spec in (("current", settings.embed.encoder), ("new", str(new_path))):
        resolved = resolve_encoder(spec, home, device)
        rows, source = encoder_rows(settings, resolved, test, store)
        named.append((tag, resolved.label if tag == "current" else f"new {resolved.encoder.name} {new_path}",
                      shown_id(settings, resolved), source, rows))
    return score_rows(named)


def train_encoder(settings: Settings, *, resume: bool = False, activate: bool | None = None,
                  progress: Progress | None = None, echo: Callable[[str], None] | None = None) -> EncoderReport:
    """`recsys train-encoder`: cache, split by album, train, compare with the current encoder on the held-out test
    albums, and activate the new encoder if it is better (``activate`` True forces, False forbids)."""
    started = time.monotonic()
    cfg = settings.train
    cfg = dataclasses.replace(cfg, lr=cfg.lr if cfg.lr is not None else DEFAULT_LR.get(cfg.base, 1e-3))
    home = settings.home_path
    say = echo or (lambda _text: None)
    library = load_library(settings.library.db, settings.library.folders, settings=settings)
    inputs = library_inputs(settings)
    with HomeLock(home, "recsys train-encoder", inputs):
        model, fine_tune = base_model(cfg)
        cache, cache_report = build_cache(home, cfg, settings.audio, library.tracks,
                                          (lambda n: progress(n, "caching")) if progress else None)
        entries = cache.for_tracks(library.tracks)
        split = split_heldout(entries, cfg.holdout, cfg.seed)
        if len(split.train) < cfg.min_tracks:
            raise TooFewTracks(
                f"only {len(split.train)} of the library's {len(library.tracks)} tracks can be used for training "
                f"({len(split.val) + len(split.test)} held out, {cache_report.failed} undecodable, "
                f"{cache_report.too_long} too long, {cache_report.missing} missing); at least {cfg.min_tracks} are "
                "needed (train.min_tracks): add music to the library")
        counts = split.counts()
        say(f"audio cache: {len(entries)} tracks, {cache_report.size_bytes / 1e6:.1f} MB "
            f"({cache_report.bytes_per_track} bytes per track; {cache_report.built} decoded, {cache_report.reused} "
            f"reused, {cache_report.rebuilt_corrupt} damaged and rebuilt) in {cache.folder}")
        say(f"{model.name} ({'fine-tuned' if fine_tune else 'from scratch'}): training on {counts['train_tracks']} "
            f"tracks ({counts['train_albums']} album(s)); held out: {counts['val_tracks']} validation tracks "
            f"({counts['val_albums']} album(s): pick the best epoch), {counts['test_tracks']} test tracks "
            f"({counts['test_albums']} album(s): decide activation)")
        run_dir = latest_run_dir(home) if resume else new_run_dir(home, model.name)
        if run_dir is None:
            raise TrainError(f"nothing to resume in {home / 'models' / 'runs'}: run `recsys train-encoder` "
                             "without --resume")
        params = {**{k: getattr(cfg, k) for k in ("base", "epochs", "batch_size", "lr", "weight_decay", "temperature",
                                                   "seed", "windows", "window_seconds", "holdout", "channels")},
                  **counts, "resume": resume, "crop_seconds": settings.audio.crop_seconds, "run_dir": str(run_dir)}
        with mlflow_run(home, "recsys-encoder", run_dir.name, params, configured_uri=settings.tracking.uri,
                        tags={"stage": "encoder"}, inputs=inputs) as run:
            trainer = Trainer(cfg, model, split.train, split.val, cache.folder, run_dir, fine_tune=fine_tune,
                              log_step=run.log_metrics,
                              progress=(lambda n: progress(n, f"epoch {trainer.epoch + 1}/{cfg.epochs}"))
                              if progress else None)
            if resume:
                trainer.resume()
                say(f"resuming {run_dir} after epoch {trainer.epoch} of {cfg.epochs}")

            def on_epoch(m: EpochMetrics) -> None:
                run.log_metrics(m.as_dict(), step=m.epoch)
                say(f"epoch {m.epoch}/{cfg.epochs}: loss {m.loss:.3f}, held-out {m.val_loss:.3f}, embedding std "
                    f"{m.embedding_std:.3f}, effective rank {m.effective_rank:.1f}, alignment {m.alignment:.3f}, "
                    f"uniformity {m.uniformity:.3f}")

            fit = trainer.fit(on_epoch)
            fit.seconds = time.monotonic() - started
            test_keys = {e.key for e in split.test}
            scores = _compare(settings, fit.best, [t for t in library.tracks if t.key in test_keys])
            activated, decision = decide(*(scores or [None, None]), activate, counts["test_albums"])
            report = EncoderReport(cache_report, counts, fit, str(trainer.device), model.name, run_dir, scores,
                                 activated, decision, run.run_id)
            if activated:
                new = scores[1] if scores else None
                eid = resolve_encoder(str(fit.best), home, "cpu").encoder_id  # the weights' id, not the vectors'
                report.active_path = activate_encoder(home, fit.best, eid, model.name, new.as_json() if new else {})
            for score in scores:
                run.log_metrics({f"{score.spec}.{k}": float(v) for k, v in score.metrics.items()
                                 if not math.isnan(float(v))})
            run.log_metrics({"activated": float(activated)})
            run.log_artifact(fit.best, "checkpoint")
            card = _encoder_card(report, params)
            (run_dir / "model_card.md").write_text(card, encoding="utf-8")
            run.log_text(card, "model_card.md")
    report.seconds = time.monotonic() - started
    return report
