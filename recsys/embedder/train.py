"""Stage 1: train the cnn encoder on the user's own music, without labels (contrastive, as CLMR and COLA do).

Two random excerpts of one track, each augmented (gain, EQ tilt, noise, time and frequency masks; excerpts start at
random frames, so even overlapping ones are shifted against each other), should map close together and excerpts of
the other tracks of the batch apart: NT-Xent (InfoNCE) over the 2B excerpts. Excerpts come from the feature cache
(:mod:`recsys.embedder.cache`), never from the decoder.

Collapse guard: the failure this design hit before is every track mapping to one point. After each epoch a fixed set
of un-augmented excerpt pairs is embedded and the embedding std across tracks (times sqrt(dim): ~1 for directions
spread like random ones, 0 for a single point), the effective rank, alignment and uniformity are logged; a std under
``train.collapse_std`` stops training with a message instead of saving a useless encoder.

Checkpoints under ``<home>/models``: ``encoder-best.pt`` (lowest held-out contrastive loss; an ordinary cnn
checkpoint) and ``encoder-last.pt`` (weights, optimizer and progress, written after every epoch and on Ctrl-C, from
the state at the start of the interrupted epoch, so a resumed run is the same as an uninterrupted one). Both load with
``torch.load(weights_only=True)``. Everything random derives from ``train.seed`` and the epoch number.
"""

from __future__ import annotations

import copy
import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recsys.atomic import atomic_path
from recsys.config import Settings, TrainSettings
from recsys.embedder.active import activate as activate_encoder
from recsys.embedder.active import models_dir, resolve_encoder
from recsys.embedder.cache import CacheReport, Entry
from recsys.embedder.encoders import CNN_DEFAULTS, CnnEncoder, EncoderError, resolve_device, save_checkpoint
from recsys.embedder.evaluation import Score, build_cache, cnn_rows, encoder_rows, score_rows
from recsys.errors import RecsysError
from recsys.index.lock import HomeLock
from recsys.index.store import TrackStore
from recsys.library.sources import load_library
from recsys.tracking import mlflow_run

STATE_FORMAT = 1
BEST, LAST = "encoder-best.pt", "encoder-last.pt"
EVAL_TRACKS = 256  # tracks in the fixed held-out pairs the per-epoch metrics are measured on
MIN_BATCH = 4  # below this many tracks per step the contrastive loss says too little
MIN_STEPS = 8  # steps per epoch at least: a library smaller than a few batches is passed over several times
# Augmentation strengths (log-mel domain, dB): each view is changed by all of them, independently.
GAIN_DB = 6.0
TILT_DB = 6.0  # EQ tilt from the lowest to the highest mel band, +-
NOISE_SNR_DB = (20.0, 40.0)  # noise this far under the excerpt's mean band power (a signal-to-noise ratio)
TIME_MASK = 0.15  # at most this share of the frames, one span
FREQ_MASK = 0.15  # at most this share of the mel bands, one span
SILENCE_DB = -100.0


class TrainError(RecsysError):
    """Training cannot start or go on; the message says what to change."""


class TooFewTracks(TrainError):
    """The library has fewer usable tracks than ``train.min_tracks``."""


class EncoderCollapsed(TrainError):
    """The representation collapsed (all tracks near one point); nothing is activated."""


class TrainingInterrupted(TrainError):
    """Ctrl-C: a resumable checkpoint was saved. Exit code 130, like any interrupted command."""

    exit_code = 130


@dataclass
class EpochMetrics:
    epoch: int
    loss: float
    val_loss: float
    embedding_std: float
    effective_rank: float
    alignment: float
    uniformity: float
    batch_size: int

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items() if k != "epoch"}


@dataclass
class FitResult:
    best: Path
    last: Path
    history: list[EpochMetrics] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    resumed_from: int = 0


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2B excerpts: each one's positive is the other excerpt of its track, the other 2B-2 negatives."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, n_mels, frames) log-mel dB -> an augmented copy; one independent draw per excerpt."""
    b, m, t = x.shape
    dev = x.device

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, *shape, generator=gen, device=dev)

    bands = torch.linspace(-0.5, 0.5, m, device=dev)
    x = x + u(-GAIN_DB, GAIN_DB, 1, 1) + u(-TILT_DB, TILT_DB, 1, 1) * bands[None, :, None]
    level = torch.logsumexp(x * (math.log(10) / 10), dim=(1, 2), keepdim=True) * (10 / math.log(10)) \
        - 10 * math.log10(m * t)  # mean band power, dB
    noise_db = level - u(*NOISE_SNR_DB, 1, 1) + 5.0 * torch.randn(b, m, t, generator=gen, device=dev)
    x = torch.logaddexp(x * (math.log(10) / 10), noise_db * (math.log(10) / 10)) * (10 / math.log(10))
    floor = x.amin(dim=(1, 2), keepdim=True)
    for size, axis in ((t, 2), (m, 1)):
        share = TIME_MASK if axis == 2 else FREQ_MASK
        width = (u(0.0, share, 1, 1) * size).long()
        start = (u(0.0, 1.0, 1, 1) * (size - width + 1)).long()
        pos = torch.arange(size, device=dev).view(1, 1, -1) if axis == 2 else torch.arange(size, device=dev).view(
            1, -1, 1)
        x = torch.where((pos >= start) & (pos < start + width), floor, x)
    return x


def _excerpt(data: np.ndarray, start: int, frames: int) -> np.ndarray:
    """frames x n_mels from ``start``, padded with silence when the track is shorter than an excerpt."""
    out = np.asarray(data[start: start + frames], dtype=np.float32)
    if len(out) < frames:
        out = np.concatenate([out, np.full((frames - len(out), data.shape[1]), SILENCE_DB, np.float32)])
    return out


def excerpt_pairs(entries: Sequence[Entry], folder: Path, frames: int,
                  starts: Callable[[int], tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two excerpts per entry as (B, n_mels, frames) float32; ``starts(available)`` picks their first frames."""
    first, second = [], []
    for entry in entries:
        data = entry.load(folder)
        a, b = starts(max(0, len(data) - frames))
        first.append(_excerpt(data, a, frames))
        second.append(_excerpt(data, b, frames))
    return (torch.from_numpy(np.stack(first)).transpose(1, 2).contiguous(),
            torch.from_numpy(np.stack(second)).transpose(1, 2).contiguous())


def representation_metrics(z1: torch.Tensor, z2: torch.Tensor) -> dict[str, float]:
    """Collapse and quality signals of L2-normalised embeddings of two excerpts per track (rows match)."""
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    std = float(z1.std(dim=0).mean() * math.sqrt(z1.shape[1]))
    s = torch.linalg.svdvals(z1 - z1.mean(0))
    p = s / s.sum().clamp(min=1e-12)
    erank = float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()))
    align = float((z1 - z2).pow(2).sum(1).mean())
    d2 = torch.cdist(z1, z1).pow(2)
    off = ~torch.eye(len(z1), dtype=torch.bool, device=z1.device)
    uniform = float(torch.log(torch.exp(-2 * d2[off]).mean())) if len(z1) > 1 else 0.0
    return {"embedding_std": std, "effective_rank": erank, "alignment": align, "uniformity": uniform}


def _recalibrate_batchnorm(model: CnnEncoder, batches: Sequence[torch.Tensor]) -> None:
    """Set BatchNorm running statistics to the exact averages over ``batches``: with few steps per epoch (a small
    library) the momentum averages are still far from the data, and inference (eval mode) uses them."""
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for x in batches:
            model.embed_logmel(x)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


class Trainer:
    """One training run over cached entries; :meth:`fit` runs the epochs, saving best/last as it goes."""

    def __init__(self, cfg: TrainSettings, entries: Sequence[Entry], folder: Path, models: Path, excerpt_frames: int,
                 cnn_config: dict, log_step: Callable[[dict, int], None] | None = None,
                 progress: Callable[[int], object] | None = None) -> None:
        self.cfg, self.entries, self.folder, self.models = cfg, list(entries), folder, Path(models)
        self.frames = excerpt_frames
        self.device = resolve_device(cfg.device)
        self.amp = self.device.type == "cuda"
        self.model = CnnEncoder(cnn_config).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.batch_size = max(MIN_BATCH, min(cfg.batch_size, len(self.entries)))
        self.log_step, self.progress = log_step, progress
        self.epoch, self.step = 0, 0
        self.history: list[EpochMetrics] = []
        self.best_val = math.inf
        self._held_out = self._held_out_pairs()

    # ---- data -------------------------------------------------------------------------------------------------------

    def _held_out_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed, un-augmented excerpt pairs (at a quarter and three quarters of each window) of up to EVAL_TRACKS
        tracks chosen by the seed: the per-epoch metrics compare like with like."""
        rng = np.random.default_rng([self.cfg.seed, 7])
        pick = sorted(rng.choice(len(self.entries), min(EVAL_TRACKS, len(self.entries)), replace=False).tolist())
        return excerpt_pairs([self.entries[i] for i in pick], self.folder, self.frames,
                             lambda avail: (avail // 4, 3 * avail // 4))

    def _batch(self, idx: Sequence[int], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = excerpt_pairs([self.entries[i] for i in idx], self.folder, self.frames,
                              lambda avail: tuple(rng.integers(0, avail + 1, size=2).tolist()))
        return pairs[0].to(self.device, non_blocking=True), pairs[1].to(self.device, non_blocking=True)

    # ---- state ------------------------------------------------------------------------------------------------------

    def _state(self) -> dict:
        return {"format": STATE_FORMAT, "arch": "cnn", "config": self.model.config,
                "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.opt.state_dict()), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "step": self.step, "batch_size": self.batch_size, "best_val": self.best_val,
                "history": [m.__dict__ for m in self.history]}

    def save_state(self, state: dict) -> Path:
        path = self.models / LAST
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    def resume(self) -> None:
        """Continue from ``encoder-last.pt``; a checkpoint of another architecture or settings is refused."""
        path = self.models / LAST
        if not path.is_file():
            raise TrainError(f"nothing to resume: {path} does not exist; run `recsys train-encoder` without --resume")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise TrainError(f"{path} holds objects other than weights and was refused: delete it and train afresh") \
                from None
        except Exception as exc:  # torch reports a damaged file with many exception types
            raise TrainError(f"{path} is damaged ({type(exc).__name__}): delete it and train afresh") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("arch") != "cnn":
            arch = state.get("arch") if isinstance(state, dict) else None
            raise TrainError(f"{path} is not a cnn training checkpoint (architecture {arch!r}): delete it, or train "
                             "afresh without --resume")
        if state.get("config") != self.model.config:
            raise TrainError(f"{path} was trained with another cnn architecture ({state.get('config')}) than the "
                             f"configured one ({self.model.config}): set train.channels back, or train afresh "
                             "without --resume")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch_size, self.best_val = int(state["batch_size"]), float(state["best_val"])
        self.history = [EpochMetrics(**m) for m in state["history"]]

    # ---- training ---------------------------------------------------------------------------------------------------

    def _train_step(self, v1: torch.Tensor, v2: torch.Tensor, gen: torch.Generator) -> float:
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            z1 = self.model.embed_logmel(augment(v1, gen))
            z2 = self.model.embed_logmel(augment(v2, gen))
        loss = nt_xent(z1, z2, self.cfg.temperature)
        if not torch.isfinite(loss):
            raise TrainError(f"the loss became {float(loss)} at step {self.step}: lower the learning rate "
                             f"(--lr, now {self.cfg.lr:g})")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(loss.detach())

    def _run_epoch(self) -> float:
        """Passes over the tracks in seeded orders (enough for MIN_STEPS steps, so a small library still trains);
        a CUDA out-of-memory halves the batch and goes on."""
        rng = np.random.default_rng([self.cfg.seed, self.epoch])
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1_000_003 + self.epoch)
        n = len(self.entries)
        passes = max(1, math.ceil(MIN_STEPS * self.batch_size / n))
        losses: list[float] = []
        bar = self.progress(passes * n) if self.progress else None
        try:
            for _ in range(passes):
                order, pos = rng.permutation(n), 0
                while n - pos >= MIN_BATCH:  # a batch never holds one track twice (it would be its own negative)
                    idx = order[pos: pos + self.batch_size]
                    try:
                        loss = self._train_step(*self._batch(idx, rng), gen)
                    except torch.cuda.OutOfMemoryError:
                        self._halve_batch()
                        continue
                    pos += len(idx)
                    self.step += 1
                    losses.append(loss)
                    if self.log_step:
                        self.log_step({"loss": loss}, self.step)
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return float(np.mean(losses)) if losses else math.nan

    def _halve_batch(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        if self.batch_size // 2 < MIN_BATCH:
            raise TrainError(f"out of GPU memory even at {self.batch_size} tracks per step: lower "
                             "train.excerpt_seconds or train.channels, or use --device cpu")
        self.batch_size //= 2

    def measure(self) -> dict[str, float]:
        """Held-out contrastive loss and collapse signals (BatchNorm statistics recalibrated first)."""
        v1, v2 = (x.to(self.device) for x in self._held_out)
        chunks = [torch.cat([a, b]) for a, b in zip(v1.split(self.batch_size), v2.split(self.batch_size),
                                                    strict=True)]
        _recalibrate_batchnorm(self.model, chunks)
        with torch.no_grad():
            z1 = torch.cat([self.model.embed_logmel(a) for a in v1.split(self.batch_size)])
            z2 = torch.cat([self.model.embed_logmel(b) for b in v2.split(self.batch_size)])
        return {"val_loss": float(nt_xent(z1, z2, self.cfg.temperature)), **representation_metrics(z1, z2)}

    def _check_collapse(self, m: EpochMetrics) -> None:
        if m.embedding_std < self.cfg.collapse_std:
            raise EncoderCollapsed(
                f"the representation collapsed at epoch {m.epoch}: embedding std {m.embedding_std:.4f} is under "
                f"train.collapse_std {self.cfg.collapse_std:g} (effective rank {m.effective_rank:.2f}), i.e. all "
                f"tracks map to nearly one point; nothing was activated. Lower --lr (now {self.cfg.lr:g}) or raise "
                f"train.temperature (now {self.cfg.temperature:g}) and train afresh")

    def fit(self, on_epoch: Callable[[EpochMetrics], None] | None = None) -> FitResult:
        """Train from ``self.epoch`` to ``cfg.epochs``; Ctrl-C saves the state of the epoch's start and raises
        TrainingInterrupted."""
        if self.epoch >= self.cfg.epochs:
            raise TrainError(f"{self.models / LAST} already holds {self.epoch} epochs: raise --epochs to train on")
        result = FitResult(self.models / BEST, self.models / LAST, resumed_from=self.epoch)
        torch.set_flush_denormal(True)  # denormal activations made CPU steps 4-8x slower
        try:
            self._epochs(on_epoch)
        finally:
            torch.set_flush_denormal(False)
        if not (self.models / BEST).is_file():
            raise EncoderError(f"training ended without a best checkpoint in {self.models}: train afresh")
        result.history, result.steps = self.history, self.step
        return result

    def _epochs(self, on_epoch: Callable[[EpochMetrics], None] | None) -> None:
        while self.epoch < self.cfg.epochs:
            start_state = self._state()
            try:
                loss = self._run_epoch()
                measured = self.measure()
            except KeyboardInterrupt:
                path = self.save_state(start_state)
                raise TrainingInterrupted(
                    f"interrupted in epoch {self.epoch + 1}: {path} holds the state after epoch {self.epoch}; "
                    "`recsys train-encoder --resume` continues from there") from None
            self.epoch += 1
            metrics = EpochMetrics(self.epoch, loss, batch_size=self.batch_size, **measured)
            self.history.append(metrics)
            if on_epoch:
                on_epoch(metrics)
            self._check_collapse(metrics)
            if metrics.val_loss < self.best_val:
                self.best_val = metrics.val_loss
                save_checkpoint(self.model, self.models / BEST, {"epoch": self.epoch, **metrics.as_dict()})
            self.save_state(self._state())


# ---- the `recsys train-encoder` run ----------------------------------------------------------------------------------

Progress = Callable[[int, str], object]  # (total, description) -> a tqdm-like bar


@dataclass
class TrainReport:
    """What `recsys train-encoder` did, for the CLI to render and the demo to show."""

    cache: CacheReport
    tracks: int
    fit: FitResult
    device: str
    scores: list[Score]
    activated: bool
    decision: str
    run_id: str | None = None
    active_path: Path | None = None
    seconds: float = 0.0


def _primary_metric(before: Score, after: Score) -> str | None:
    """Same-album precision decides; same-artist when no album is usable; None when the tags cannot judge."""
    for name in ("album_p10", "artist_p10"):
        if not (math.isnan(float(before.metrics[name])) or math.isnan(float(after.metrics[name]))):
            return name
    return None


def decide(before: Score, after: Score, activate: bool | None) -> tuple[bool, str]:
    """Activate the new encoder only when it groups the library's tracks better (or when told to)."""
    metric = _primary_metric(before, after)
    if activate is False:
        return False, "not activated (--no-activate)"
    if metric is None:
        if activate:
            return True, "activated as asked (--activate); the tags could not compare the encoders"
        return False, ("comparison impossible: no two tracks share an album or artist tag, so the new encoder was not "
                       "activated; `recsys train-encoder --activate` activates it anyway")
    new, old = float(after.metrics[metric]), float(before.metrics[metric])
    if activate:
        return True, f"activated as asked (--activate); {metric} {new:.3f} vs {old:.3f}"
    if new > old:
        return True, f"activated: {metric} {new:.3f} beats the current encoder's {old:.3f}"
    return False, (f"not activated: {metric} {new:.3f} does not beat the current encoder's {old:.3f} "
                   "(`recsys train-encoder --activate` would force it)")


def _model_card(report: TrainReport, params: dict) -> str:
    last = report.fit.history[-1] if report.fit.history else None
    lines = ["# recsys cnn encoder (self-supervised, NT-Xent)", "",
             f"- tracks trained on: {report.tracks} (cache: {report.cache.size_bytes / 1e6:.1f} MB, "
             f"{report.cache.bytes_per_track} bytes per track)",
             f"- epochs: {len(report.fit.history)} (resumed from {report.fit.resumed_from}), "
             f"steps: {report.fit.steps}, device: {report.device}",
             f"- settings: {params}",
             f"- last epoch: {last.as_dict() if last else {}}", "", "## Retrieval on the library (tags as labels)", ""]
    lines += [f"- {s.label} ({s.encoder_id}, {s.source}): {s.as_json()}" for s in report.scores]
    lines += ["", f"## Decision: {report.decision}", ""]
    return "\n".join(lines)


def train_encoder(settings: Settings, *, resume: bool = False, activate: bool | None = None,
                  progress: Progress | None = None, echo: Callable[[str], None] | None = None) -> TrainReport:
    """`recsys train-encoder`: cache the library's windows, train, compare with the current encoder on the library's
    tags, and activate the new encoder if it is better (``activate`` True forces, False forbids)."""
    started = time.monotonic()
    cfg, home = settings.train, settings.home_path
    say = echo or (lambda _text: None)
    library = load_library(settings.library.db, settings.library.folders)
    cnn_config = {**CNN_DEFAULTS, "channels": [int(c) for c in cfg.channels], "seed": int(cfg.seed)}
    with HomeLock(home, "recsys train-encoder"):
        cache, cache_report = build_cache(settings, library.tracks, cnn_config,
                                          (lambda n: progress(n, "caching")) if progress else None)
        entries = cache.for_tracks(library.tracks)
        if len(entries) < cfg.min_tracks:
            raise TooFewTracks(
                f"only {len(entries)} of the library's {len(library.tracks)} tracks can be used for training "
                f"({cache_report.failed} undecodable, {cache_report.too_long} too long, {cache_report.missing} "
                f"missing); at least {cfg.min_tracks} are needed (train.min_tracks): add music to the library")
        say(f"feature cache: {len(entries)} tracks, {cache_report.size_bytes / 1e6:.1f} MB "
            f"({cache_report.bytes_per_track} bytes per track; {cache_report.built} decoded, {cache_report.reused} "
            f"reused, {cache_report.rebuilt_corrupt} damaged and rebuilt) in {cache.folder}")
        params = {**{k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "temperature", "seed",
                                                   "window_seconds", "excerpt_seconds", "channels")},
                  "tracks": len(entries), "resume": resume, "crop_seconds": settings.audio.crop_seconds}
        run_name = f"cnn-{time.strftime('%Y%m%d-%H%M%S')}"
        with mlflow_run(home, "recsys-encoder", run_name, params, configured_uri=settings.tracking.uri,
                        tags={"stage": "encoder"}) as run:
            trainer = Trainer(cfg, entries, cache.folder, models_dir(home), cache.frontend.frames(cfg.excerpt_seconds),
                              cnn_config, log_step=run.log_metrics,
                              progress=(lambda n: progress(n, f"epoch {trainer.epoch + 1}/{cfg.epochs}"))
                              if progress else None)
            if resume:
                trainer.resume()
                say(f"resuming after epoch {trainer.epoch} of {cfg.epochs}")

            def on_epoch(m: EpochMetrics) -> None:
                run.log_metrics(m.as_dict(), step=m.epoch)
                say(f"epoch {m.epoch}/{cfg.epochs}: loss {m.loss:.3f}, held-out {m.val_loss:.3f}, embedding std "
                    f"{m.embedding_std:.3f}, effective rank {m.effective_rank:.1f}, alignment {m.alignment:.3f}, "
                    f"uniformity {m.uniformity:.3f}")

            fit = trainer.fit(on_epoch)
            fit.seconds = time.monotonic() - started
            new = resolve_encoder(str(fit.best), home, cfg.device)
            current = resolve_encoder(settings.embed.encoder, home, cfg.device)
            current_rows, source = encoder_rows(settings, current, library.tracks, TrackStore.open(home))
            before, after = score_rows([
                ("current", current.label, current.encoder_id, source, current_rows),
                ("new", f"new cnn {fit.best}", new.encoder_id, "cache",
                 cnn_rows(new.encoder, cache, library.tracks, settings.audio.crop_seconds))])
            activated, decision = decide(before, after, activate)
            report = TrainReport(cache_report, len(entries), fit, str(trainer.device), [before, after], activated,
                                 decision, run.run_id)
            if activated:
                report.active_path = activate_encoder(home, fit.best, new.encoder_id, after.as_json())
            for tag, score in (("current", before), ("new", after)):
                run.log_metrics({f"{tag}.{k}": float(v) for k, v in score.metrics.items()
                                 if not math.isnan(float(v))})
            run.log_metrics({"activated": float(activated)})
            run.log_artifact(fit.best, "checkpoint")
            run.log_text(_model_card(report, params), "model_card.md")
    report.seconds = time.monotonic() - started
    return report


DEMO_CHANNELS = [16, 32, 64, 64]  # a small cnn: caching and 5 epochs over the demo's 40 tracks take ~25 s on 2 cores
DEMO_EXCERPT_S = 2.0


def demo_training(settings: Settings, epochs: int = 5, echo: Callable[[str], None] = print,
                  progress: Progress | None = None) -> dict:
    """A short training run for `recsys demo`: a few epochs of a small cnn, compared with the current encoder on the
    library's tags. Returns the before/after metrics and whether the new encoder was activated."""
    settings.train.epochs = epochs
    settings.train.channels = list(DEMO_CHANNELS)
    settings.train.excerpt_seconds = DEMO_EXCERPT_S
    settings.train.min_tracks = min(settings.train.min_tracks, 8)
    report = train_encoder(settings, progress=progress, echo=echo)
    before, after = report.scores
    echo(f"current encoder ({before.label}): same-album precision@10 {before.metrics['album_p10']:.3f}, "
         f"same-artist {before.metrics['artist_p10']:.3f}")
    echo(f"trained cnn ({len(report.fit.history)} epochs, {report.fit.seconds:.0f} s): same-album precision@10 "
         f"{after.metrics['album_p10']:.3f}, same-artist {after.metrics['artist_p10']:.3f}")
    echo(report.decision)
    return {"before": before.as_json(), "after": after.as_json(), "activated": report.activated,
            "decision": report.decision, "seconds": report.seconds}
