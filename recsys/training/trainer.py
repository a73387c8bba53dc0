"""Stage 1's training loop: contrastive learning (as CLMR and COLA) on excerpts from the audio cache.

The encoder is any module with the pair every patch encoder here has: ``frontend(waves) -> (B, n_mels, frames)``
log-mel and ``embed_logmel(logmel) -> (B, dim)`` the representation (the vector `recsys embed` stores, a mean over
``patch_frames`` patches); the pretrained MusiCNN is fine-tuned, the cnn trained from scratch. A projection head
(:class:`ProjectionHead`) sits on top of the representation during training only: the loss is computed on its
output, the vectors come from before it (SimCLR's finding: the representation before the head transfers better).

A positive pair is two excerpts of one patch each (3 s) from two different cached windows of a track (different
parts of it, as the songs of one album differ), each augmented in the audio domain (:mod:`recsys.training.augment`);
the other tracks of the batch are the negatives (NT-Xent, :mod:`recsys.training.contrastive`). One patch per excerpt
and a mean over patches at inference: the pooling of training and inference agree.

Validation: after each epoch, fixed un-augmented pairs of the held-out validation tracks (albums never trained on)
give the held-out contrastive loss that picks the best epoch; fixed pairs of training tracks give the collapse
signals (embedding std across tracks, effective rank, alignment, uniformity); a std under ``train.collapse_std``
stops training with a message.

Files, in the run's own folder: ``best.pt`` (the encoder of the lowest held-out loss: an ordinary checkpoint, no
head) and ``last.pt`` (encoder, head, optimizer and progress, written after every epoch and on Ctrl-C from the
state at the start of the interrupted epoch, so a resumed run equals an uninterrupted one). Both load with
``torch.load(weights_only=True)``. Everything random derives from ``train.seed`` and the epoch number.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from recsys.atomic import atomic_path
from recsys.embedder.active import BEST, LAST
from recsys.embedder.encoders import EncoderError, resolve_device, save_checkpoint
from recsys.errors import RecsysError
from recsys.training.augment import augment_waves, source_samples, stretch_frames, stretch_margin
from recsys.training.cache import Entry
from recsys.training.contrastive import nt_xent, representation_metrics

STATE_FORMAT = 2
EVAL_TRACKS = 256  # tracks in the fixed pairs the per-epoch metrics (and BatchNorm recalibration) use
MIN_BATCH = 4  # below this many tracks per step the contrastive loss says too little
MIN_STEPS = 8  # steps per epoch at least: a library smaller than a few batches is passed over several times
PROJECTION_DIM = 128


class TrainSection(Protocol):
    """What training reads of the settings: their ``train`` section (``recsys.config.TrainSettings``, with
    ``recsys/default.yaml`` the one home of its defaults; ``lr`` resolved by the use case), handed in by
    `recsys train-encoder`; training never reads the settings object."""

    base: str
    epochs: int
    batch_size: int
    lr: float | None
    weight_decay: float
    temperature: float
    seed: int
    device: str
    windows: int
    window_seconds: float
    channels: list[int]
    cache_max_gb: float
    workers: int
    collapse_std: float


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


class ProjectionHead(nn.Module):
    """SimCLR's head, Linear - BatchNorm - ReLU - Linear, for training only. Its BatchNorm matters: pooled
    activations of a fresh network share one large common component, so without it every track starts at nearly
    one point, where the contrastive loss has almost no gradient (the cnn sat at chance for epochs)."""

    def __init__(self, dim: int, out: int = PROJECTION_DIM, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(), nn.Linear(dim, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def samples_for_frames(model: nn.Module, frames: int) -> int:
    """The fewest samples whose log-mel (``model.frontend``) has at least ``frames`` frames."""
    def count(n: int) -> int:
        with torch.no_grad():
            return int(model.frontend(torch.zeros(1, n, device=model.device)).shape[-1])

    hop = max(1, round(model.sample_rate / max(1, count(model.sample_rate) - 1)))
    n = max(1, (frames - 1) * hop)
    while count(n) < frames:
        n += hop
    while n > hop and count(n - hop) >= frames:
        n -= hop
    return n


class Excerpts:
    """Cuts excerpt sources (raw int16 audio as float32) out of cached windows."""

    def __init__(self, entries: Sequence[Entry], folder: Path, samples: int) -> None:
        self.entries, self.folder, self.samples = list(entries), folder, samples

    def _cut(self, entry: Entry, window: int, offset: int) -> np.ndarray:
        data = entry.load(self.folder)
        out = np.zeros(self.samples, np.float32)
        piece = np.asarray(data[window, offset: min(offset + self.samples, entry.samples)], np.float32)
        out[: len(piece)] = piece / 32768.0
        return out

    def random_pairs(self, idx: Sequence[int], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Two excerpts per track from two different windows (when it has several) at random offsets."""
        first, second = [], []
        for i in idx:
            entry = self.entries[i]
            windows = entry.load(self.folder).shape[0]
            a, b = rng.choice(windows, 2, replace=False) if windows > 1 else (0, 0)
            room = max(0, entry.samples - self.samples) + 1
            first.append(self._cut(entry, int(a), int(rng.integers(room))))
            second.append(self._cut(entry, int(b), int(rng.integers(room))))
        return torch.from_numpy(np.stack(first)), torch.from_numpy(np.stack(second))

    def fixed_pairs(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Two excerpts per track, always the same: the middle of its first window and of the one half-way along."""
        first, second = [], []
        for i in idx:
            entry = self.entries[i]
            windows = entry.load(self.folder).shape[0]
            middle = max(0, entry.samples - self.samples) // 2
            first.append(self._cut(entry, 0, middle))
            second.append(self._cut(entry, windows // 2, middle if windows > 1 else 0))
        return torch.from_numpy(np.stack(first)), torch.from_numpy(np.stack(second))


class Trainer:
    """One training run of ``model`` over cached entries; :meth:`fit` runs the epochs, saving best/last in
    ``run_dir``. ``fine_tune`` keeps the model's BatchNorm statistics as they are (pretrained ones stay; a cnn
    trained from scratch learns them, recalibrated before every measurement)."""

    def __init__(self, cfg: TrainSection, model: nn.Module, train: Sequence[Entry], val: Sequence[Entry],
                 folder: Path, run_dir: Path, *, fine_tune: bool,
                 log_step: Callable[[dict, int], None] | None = None,
                 progress: Callable[[int], object] | None = None) -> None:
        self.cfg, self.run_dir, self.fine_tune = cfg, Path(run_dir), fine_tune
        self.device = resolve_device(cfg.device)
        self.amp = self.device.type == "cuda"
        self.model = model.to(self.device)
        self.head = ProjectionHead(model.dim, seed=cfg.seed).to(self.device)
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # a fine-tuned model may freeze some
        self.opt = torch.optim.AdamW([*trainable, *self.head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.patch = int(model.patch_frames)
        self.plain_samples = samples_for_frames(self.model, self.patch)
        self.aug_samples = samples_for_frames(self.model, stretch_margin(self.patch))
        source = max(source_samples(self.aug_samples), self.plain_samples)
        self.train_set = Excerpts(train, folder, source)
        self.val_set = Excerpts(val, folder, source)
        self.batch_size = max(MIN_BATCH, min(cfg.batch_size, len(self.train_set.entries)))
        self.log_step, self.progress = log_step, progress
        self.epoch, self.step = 0, 0
        self.history: list[EpochMetrics] = []
        self.best_val = math.inf

    # ---- views ------------------------------------------------------------------------------------------------------

    def _plain(self, raw: torch.Tensor) -> torch.Tensor:
        """Un-augmented excerpt sources -> (B, n_mels, patch) log-mels, as inference sees a patch."""
        with torch.no_grad():
            return self.model.frontend(raw[:, : self.plain_samples].to(self.device))[..., : self.patch]

    def _augmented(self, raw: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            waves = augment_waves(raw.to(self.device), self.aug_samples, self.model.sample_rate, gen)
            return stretch_frames(self.model.frontend(waves), self.patch, gen)

    def _project(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            rep = self.model.embed_logmel(logmel)
            return rep, self.head(rep)

    def _train_mode(self) -> None:
        """A fine-tuned model stays in eval mode (its pretrained BatchNorm statistics, its inference code path);
        gradients flow all the same. A model from scratch learns its statistics in train mode."""
        self.model.train(not self.fine_tune)
        self.head.train()

    def _eval_mode(self) -> None:
        self.model.eval()
        self.head.eval()

    # ---- state ------------------------------------------------------------------------------------------------------

    def _state(self) -> dict:
        return {"format": STATE_FORMAT, "arch": self.model.name, "config": self.model.config,
                "fine_tune": self.fine_tune,
                "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "head": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()},
                "optimizer": copy.deepcopy(self.opt.state_dict()), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "step": self.step, "batch_size": self.batch_size, "best_val": self.best_val,
                "history": [m.__dict__ for m in self.history]}

    def save_state(self, state: dict) -> Path:
        path = self.run_dir / LAST
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    def resume(self) -> None:
        """Continue from the run's ``last.pt``; a checkpoint of another architecture or settings is refused."""
        path = self.run_dir / LAST
        if not path.is_file():
            raise TrainError(f"nothing to resume: {path} does not exist; run `recsys train-encoder` without --resume")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise TrainError(f"{path} holds objects other than weights and was refused: delete it and train afresh") \
                from None
        except Exception as exc:  # torch reports a damaged file with many exception types
            raise TrainError(f"{path} is damaged ({type(exc).__name__}): delete it and train afresh") from None
        name = self.model.name
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("arch") != name:
            arch = state.get("arch") if isinstance(state, dict) else None
            raise TrainError(f"{path} is not a {name} training checkpoint of this recsys (architecture {arch!r}): "
                             "train afresh without --resume")
        if state.get("config") != self.model.config or state.get("fine_tune") != self.fine_tune:
            raise TrainError(f"{path} was trained with another {name} architecture ({state.get('config')}) than the "
                             f"configured one ({self.model.config}): set the train settings back, or train afresh "
                             "without --resume")
        self.model.load_state_dict(state["model"])
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch_size, self.best_val = int(state["batch_size"]), float(state["best_val"])
        self.history = [EpochMetrics(**m) for m in state["history"]]

    # ---- training ---------------------------------------------------------------------------------------------------

    def _train_step(self, raw1: torch.Tensor, raw2: torch.Tensor, gen: torch.Generator) -> float:
        v1, v2 = self._augmented(raw1, gen), self._augmented(raw2, gen)
        self._train_mode()
        _, z1 = self._project(v1)
        _, z2 = self._project(v2)
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
        """Passes over the training tracks in seeded orders (enough for MIN_STEPS steps, so a small library still
        trains); a CUDA out-of-memory halves the batch and goes on."""
        rng = np.random.default_rng([self.cfg.seed, self.epoch])
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1_000_003 + self.epoch)
        n = len(self.train_set.entries)
        passes = max(1, math.ceil(MIN_STEPS * self.batch_size / n))
        losses: list[float] = []
        bar = self.progress(passes * n) if self.progress else None
        try:
            for _ in range(passes):
                order, pos = rng.permutation(n), 0
                while n - pos >= MIN_BATCH:  # a batch never holds one track twice (it would be its own negative)
                    idx = order[pos: pos + self.batch_size]
                    try:
                        loss = self._train_step(*self.train_set.random_pairs(idx, rng), gen)
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
            raise TrainError(f"out of GPU memory even at {self.batch_size} tracks per step: lower train.batch_size "
                             "or use --device cpu")
        self.batch_size //= 2

    def _fixed(self, excerpts: Excerpts) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.cfg.seed, 7])
        n = len(excerpts.entries)
        pick = sorted(rng.choice(n, min(EVAL_TRACKS, n), replace=False).tolist())
        a, b = excerpts.fixed_pairs(pick)
        return self._plain(a), self._plain(b)

    def _recalibrate(self) -> None:
        """Set the model's BatchNorm running statistics to exact averages over fixed training excerpts: with few
        steps per epoch (a small library) the momentum averages are still far from the data, and inference (eval
        mode) uses them. Only for a model trained from scratch; fine-tuning keeps the pretrained statistics."""
        norms = _norms(self.model)
        if self.fine_tune or not norms:
            return
        v1, v2 = self._fixed(self.train_set)
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.model.train()
        with torch.no_grad():
            for chunk in torch.cat([v1, v2]).split(self.batch_size):
                self.model.embed_logmel(chunk)
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum

    def measure(self) -> dict[str, float]:
        """The held-out contrastive loss on the validation tracks (NaN when fewer than MIN_BATCH are held out: then
        the best checkpoint is the last), and the collapse signals on fixed pairs of training tracks (many albums:
        one held-out album's tracks sit close together by right)."""
        self._recalibrate()
        self._eval_mode()

        def embed(excerpts: Excerpts) -> tuple[torch.Tensor, torch.Tensor]:
            v1, v2 = self._fixed(excerpts)
            with torch.no_grad():
                return (torch.cat([self._project(a)[1].float() for a in v1.split(self.batch_size)]),
                        torch.cat([self._project(b)[1].float() for b in v2.split(self.batch_size)]))

        loss = math.nan
        if len(self.val_set.entries) >= MIN_BATCH:
            loss = float(nt_xent(*embed(self.val_set), self.cfg.temperature))
        return {"val_loss": loss, **representation_metrics(*embed(self.train_set))}

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
            raise TrainError(f"{self.run_dir / LAST} already holds {self.epoch} epochs: raise --epochs to train on")
        result = FitResult(self.run_dir / BEST, self.run_dir / LAST, resumed_from=self.epoch)
        torch.set_flush_denormal(True)  # denormal activations made CPU steps 4-8x slower
        try:
            self._epochs(on_epoch)
        finally:
            torch.set_flush_denormal(False)
        if not (self.run_dir / BEST).is_file():
            raise EncoderError(f"training ended without a best checkpoint in {self.run_dir}: train afresh")
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
            val = metrics.val_loss
            if math.isnan(val) or val < self.best_val:  # nothing held out: the best is the last
                self.best_val = self.best_val if math.isnan(val) else val
                save_checkpoint(self.model, self.run_dir / BEST, {"epoch": self.epoch, **metrics.as_dict()})
            self.save_state(self._state())
