"""Encoders turn audio into vectors: the built-in ``dsp`` and ``cnn`` encoders, plug-ins, ``encoder_id``, checkpoints.

The interface every encoder has (the ``Encoder`` protocol) is in ``recsys/embedder/interface.py``.

The third built-in, ``musicnn`` (a pretrained tagging network), lives in ``recsys/embedder/musicnn.py``.

An encoder takes a batch of mono float32 waves at its own ``sample_rate`` on its own ``device`` and returns one
L2-normalised float32 row per wave. ``encoder_id`` names exactly what produced a vector (class, hyper-parameters,
weights), so rows embedded by anything else are recognised as stale.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys.atomic import atomic_path
from recsys.choices import ENCODERS, load
from recsys.embedder.features import MelSpectrogram, log_mel, melscale_fbanks
from recsys.embedder.interface import _REQUIRED, Encoder, EncoderError, _check_waves
from recsys.embedder.musicnn import MusicnnEncoder

CHECKPOINT_FORMAT = 2  # 2: the cnn lost its projection head (vectors come from the representation)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> the GPU when there is one, else the CPU; a CUDA device that is not there is an EncoderError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise EncoderError(f"unknown device '{device}': use auto, cpu or cuda") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EncoderError("no CUDA device: use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EncoderError(f"no CUDA device {dev.index} (found {torch.cuda.device_count()}): use --device cuda")
    return dev


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def encoder_id(encoder: Encoder) -> str:
    """Hex sha256[:16] of the class, ``identity()`` and (for an ``nn.Module``) every state_dict tensor.

    Tensors are hashed by name in sorted order with dtype, shape and raw bytes copied to the CPU, so the id is the
    same in every process and on every device.
    """
    h = hashlib.sha256()
    cls = type(encoder)
    h.update(f"{cls.__module__}.{cls.__qualname__}\n".encode())
    h.update(json.dumps(encoder.identity(), sort_keys=True, default=str).encode())
    if isinstance(encoder, nn.Module):
        state = encoder.state_dict()
        for key in sorted(state):
            t = state[key]
            h.update(f"\n{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(_tensor_bytes(t))
    return h.hexdigest()[:16]


def _masked_mean_std(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std over the last axis; ``w`` (B, N) sums to 1 per row."""
    w = w.unsqueeze(-2) if x.dim() == 3 else w
    mean = (x * w).sum(-1)
    var = ((x - mean.unsqueeze(-1)) ** 2 * w).sum(-1)
    return mean, var.clamp(min=0.0).sqrt()


def _dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II basis (n_in, n_out) without the 0th (overall level) coefficient."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(1, n_out + 1, dtype=torch.float64)
    basis = torch.cos(math.pi / n_in * (n.unsqueeze(1) + 0.5) * k.unsqueeze(0)) * math.sqrt(2.0 / n_in)
    return basis.float()


def _chroma_matrix(n_fft: int, sample_rate: int, f_lo: float, f_hi: float) -> torch.Tensor:
    """(n_freqs, 12) weights: each STFT bin in [f_lo, f_hi] shares its power between the two nearest pitch classes."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    pitch = 12.0 * torch.log2(freqs.clamp(min=1.0) / 440.0) + 69.0
    classes = torch.arange(12, dtype=torch.float64)
    dist = torch.remainder(pitch.unsqueeze(1) - classes.unsqueeze(0) + 6.0, 12.0) - 6.0
    weights = (1.0 - dist.abs()).clamp(min=0.0)
    weights[(freqs < f_lo) | (freqs > f_hi)] = 0.0
    return weights.float()


def _bin_range(freqs: torch.Tensor, lo: float, hi: float) -> tuple[int, int]:
    """First and one-past-last STFT bin with lo <= f < hi (a band is a contiguous slice, so no copy is made)."""
    inside = ((freqs >= lo) & (freqs < hi)).nonzero().flatten()
    return int(inside[0]), int(inside[-1]) + 1


def _tempo_bands(fps: float, bpm_lo: float, bpm_hi: float, n_bands: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer autocorrelation lags covering bpm_hi..bpm_lo and a (lags, bands) mask of log-spaced tempo bands."""
    lag_lo, lag_hi = 60.0 / bpm_hi * fps, 60.0 / bpm_lo * fps
    lags = torch.arange(math.floor(lag_lo), math.ceil(lag_hi) + 1)
    edges = torch.logspace(math.log10(lag_lo), math.log10(lag_hi), n_bands + 1, dtype=torch.float64)
    centre = lags.double()
    mask = (centre.unsqueeze(1) >= edges[:-1].floor().unsqueeze(0)) & (centre.unsqueeze(1) < edges[1:].ceil())
    return lags, mask


# Feature groups of the dsp vector, in order, with their sizes.
DSP_GROUPS = (("timbre", 40), ("spectral", 22), ("loudness", 3), ("rhythm", 12), ("tonal", 13))
DSP_DIM = sum(n for _, n in DSP_GROUPS)

# Per-feature offset and scale of the raw dsp descriptors, in DspEncoder.raw_features order: the median and
# 1.4826 x median absolute deviation (floored at a tenth of the std) over 507 crops of 30 s (at 25, 50 and 75 % of
# each track) of the 169 real recordings of the development corpus (shared/corpus/build_devcorpus.sh: 14 game
# soundtracks, many genres). Fixed numbers, never refit, so a vector does not change when the library grows.
_DSP_OFFSET = [
    77.77, 2.949, 14.63, 0.9166, 2.908, -1.581, 0.6881, -2.442, 0.4363, -2.891, -0.4696, -1.789, -0.04501, -2.064,
    -0.183, -1.997, -0.3399, -2.016, -0.6, -2.69, 22.24, 15.08, 10.45, 8.581, 7.681, 7.109, 6.757, 6.545, 6.397,
    5.988, 5.784, 5.934, 5.765, 5.853, 5.701, 5.666, 5.71, 5.506, 5.428, 5.463, 8.561, 8.875, 9.074, -14.85,
    0.7311, 0.7176, 0.9116, 4.083, 6.104, 5.653, 7.977, 9.857, 11.21, 12.24, 11.29, 1.181, 1.278, 1.501, 1.763,
    2.065, 2.402, 2.321, -19.65, 3.672, 11.88, 2.201, 2.917, 2.337, 0.08861, 0.1912, 0.1751, 0.2789, 0.3182,
    0.3442, 0.3272, 0.4371, 0.5589, 0.1531, 0.133, 0.1147, 0.09184, 0.2074, 0.04441, 0.3996, 0.3274, 0.2613,
    0.2082, 0.2467, 0.1447, 2.037,
]
_DSP_SCALE = [
    46.5, 19.57, 11.51, 9.391, 6.535, 6, 4.938, 4.932, 4.134, 4.101, 3.262, 3.163, 2.815, 3.234, 2.919, 2.809,
    2.508, 2.418, 2.646, 2.701, 10.14, 7.537, 4.532, 3.005, 2.809, 2.445, 2.219, 1.976, 2.059, 1.893, 1.77, 1.844,
    1.606, 1.696, 1.602, 1.808, 1.724, 1.627, 1.706, 1.611, 0.7389, 0.9662, 0.8503, 6.376, 0.3457, 0.2977, 0.4714,
    1.715, 0.6062, 0.4727, 0.7776, 1.139, 1.59, 2.019, 1.803, 0.159, 0.1527, 0.2123, 0.2602, 0.4663, 0.5827,
    0.7117, 4.795, 1.896, 5.968, 0.7494, 1.874, 0.6929, 0.2887, 0.2355, 0.2354, 0.3116, 0.2943, 0.2793, 0.2128,
    0.2392, 0.2015, 0.09802, 0.09534, 0.06436, 0.06056, 0.08678, 0.04317, 0.1178, 0.09517, 0.08656, 0.06047,
    0.06938, 0.0452, 0.157,
]


class DspEncoder(nn.Module):
    """Hand-made audio descriptors, needing no training: a useful similarity on day one.

    The vector (``DSP_DIM`` = 90 numbers) has five groups, all computed in torch, batched, on the device, from one
    power STFT (1024-point Hann, hop 1024, 22.05 kHz; hop = window keeps the encoder far cheaper than decoding):

    - timbre (40): MFCC 1..20 (DCT of a 64-band log-mel; the level term c0 is left out), mean and std over frames;
    - spectral (22): centroid, bandwidth, 85 % roll-off (log2 Hz) and flatness (dB, over the mel bands), mean and
      std each; per octave band (0-200 Hz ... 6.4-11 kHz, 7 bands) the contrast = peak bin over band mean in dB,
      mean and std;
    - loudness (3): frame RMS in dBFS, mean, std and dynamic range (95th minus 5th percentile);
    - rhythm (12): onset strength (positive log-mel flux) mean and std, onset rate per second, the autocorrelation of
      the onset strength pooled into 8 log-spaced tempo bands (40-240 BPM) and its peak over them (pulse clarity);
    - tonal (13): a 12-class chroma from the STFT (110 Hz-5 kHz), made key-invariant by taking magnitudes of its DFT
      over the pitch classes (a transposition is a circular shift, which only changes the DFT's phase): of the clip's
      mean chroma (6) and per frame, averaged (6), plus the mean chroma entropy.

    Every linear reduction of the spectrum (mel bands, chroma, energy, frequency moments) is one matrix product.
    Timbre, spectral and tonal statistics use only frames within 60 dB of the clip's loudest frame, so silent
    lead-ins and gaps do not shift them; chroma is also weighted by frame energy.

    Standardisation, so that no feature dominates the cosine: each raw feature is z-scored with a fixed offset and
    scale (its median and 1.4826 x median absolute deviation -- a robust mean and std -- measured once over centre
    crops of real music and written here as constants), softly limited to +-3 with 3*tanh(z/3) so that an outlier
    (silence, a test tone) cannot take over, and each group is divided by sqrt(its size), so each of the five groups
    carries the same expected weight whatever its size. Finally the vector is L2-normalised.
    """

    name = "dsp"
    VERSION = 1  # bump when the feature computation changes: it is part of identity() and so of encoder_id

    def __init__(self) -> None:
        super().__init__()
        self.sample_rate = 22050
        self.n_fft, self.hop, self.n_mels, self.n_mfcc = 1024, 1024, 64, 20
        self.dim = DSP_DIM
        self.gate_db = 60.0
        self.contrast_edges = (0.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0, 11026.0)
        self.bpm_range, self.n_tempo_bands = (40.0, 240.0), 8
        self.chroma_range = (110.0, 5000.0)
        self.mel = MelSpectrogram(self.sample_rate, self.n_fft, hop_length=self.hop, n_mels=self.n_mels)
        freqs = torch.linspace(0, self.sample_rate / 2, self.n_fft // 2 + 1)
        mel_centres = melscale_fbanks(self.n_fft // 2 + 1, 0.0, self.sample_rate / 2, self.n_mels, self.sample_rate)
        mel_centres = (mel_centres * freqs.unsqueeze(1)).sum(0) / mel_centres.sum(0)
        edges = self.contrast_edges
        self.band_slices = [_bin_range(freqs, lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        band_mean = torch.zeros(len(freqs), len(self.band_slices))
        for b, (lo, hi) in enumerate(self.band_slices):
            band_mean[lo:hi, b] = 1.0 / (hi - lo)
        # One (n_freqs, K) matrix: mel bands | chroma | ones | f | f^2 (f in kHz, so f^2 stays small) | band means
        reduce = torch.cat([self.mel.fb, _chroma_matrix(self.n_fft, self.sample_rate, *self.chroma_range),
                            torch.ones(len(freqs), 1), (freqs / 1000).unsqueeze(1), (freqs / 1000).pow(2).unsqueeze(1),
                            band_mean], dim=1)
        self.register_buffer("reduce", reduce)
        self.register_buffer("log2_mel_centres", torch.log2(mel_centres + 1.0))
        self.register_buffer("dct", _dct_matrix(self.n_mels, self.n_mfcc))
        lags, tempo_mask = _tempo_bands(self.sample_rate / self.hop, *self.bpm_range, self.n_tempo_bands)
        self.register_buffer("lags", lags)
        self.register_buffer("tempo_mask", tempo_mask)
        self.register_buffer("offset", torch.tensor(_DSP_OFFSET))
        self.register_buffer("scale", torch.tensor(_DSP_SCALE))
        weights = torch.cat([torch.full((n,), 1.0 / math.sqrt(n)) for _, n in DSP_GROUPS])
        self.register_buffer("group_weight", weights)

    @property
    def device(self) -> torch.device:
        return self.reduce.device

    def identity(self) -> dict:
        return {"class": "DspEncoder", "version": self.VERSION, "sample_rate": self.sample_rate,
                "n_fft": self.n_fft, "hop": self.hop, "n_mels": self.n_mels, "n_mfcc": self.n_mfcc,
                "gate_db": self.gate_db, "contrast_edges": list(self.contrast_edges),
                "bpm_range": list(self.bpm_range), "n_tempo_bands": self.n_tempo_bands,
                "chroma_range": list(self.chroma_range)}

    def raw_features(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, DSP_DIM) unstandardised descriptors (exposed for calibration and tests)."""
        if waves.shape[-1] < 3 * self.n_fft:  # the frame statistics need a few frames; silence adds nothing
            waves = F.pad(waves, (0, 3 * self.n_fft - waves.shape[-1]))
        # hop == n_fft, so framing is a reshape; no centre padding (half a frame at each end changes no statistic)
        n_frames = waves.shape[-1] // self.n_fft
        frames = waves[:, : n_frames * self.n_fft].reshape(waves.shape[0], n_frames, self.n_fft)
        spec = torch.fft.rfft(frames * self.mel.window, dim=-1)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, N, F)
        reduced = torch.matmul(power, self.reduce).transpose(1, 2)  # (B, K, N)
        m = self.n_mels
        mel, chroma = reduced[:, :m], reduced[:, m: m + 12]
        energy, f1, f2 = reduced[:, m + 12], reduced[:, m + 13], reduced[:, m + 14]
        band_mean = reduced[:, m + 15:]
        frame_db = 10.0 * torch.log10(energy.clamp(min=1e-10))
        active = (frame_db >= frame_db.amax(-1, keepdim=True) - self.gate_db).float()
        gate = active / active.sum(-1, keepdim=True)
        logmel = log_mel(mel)  # (B, M, N)
        return torch.cat([
            self._timbre(logmel, gate),
            self._spectral(power, mel, logmel, energy, f1, f2, band_mean, gate),
            self._loudness(frame_db),
            self._rhythm(logmel),
            self._tonal(chroma, active),
        ], dim=1)

    def _timbre(self, logmel: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        mfcc = torch.einsum("bmn,mk->bkn", logmel, self.dct)
        return torch.cat(_masked_mean_std(mfcc, gate), dim=1)

    def _spectral(self, power: torch.Tensor, mel: torch.Tensor, logmel: torch.Tensor, energy: torch.Tensor,
                  f1: torch.Tensor, f2: torch.Tensor, band_mean: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        total = energy.clamp(min=1e-10)
        centroid = f1 / total  # kHz, power-weighted
        bandwidth = (f2 / total - centroid.pow(2)).clamp(min=0.0).sqrt()
        cumulative = mel.cumsum(1)
        below = (cumulative < 0.85 * cumulative[:, -1:]).sum(1).clamp(max=self.n_mels - 1)
        rolloff = self.log2_mel_centres[below]
        flatness = logmel.mean(1) - 10.0 * torch.log10(mel.mean(1).clamp(min=1e-10))
        shape = torch.stack([torch.log2(1000.0 * centroid + 1.0), torch.log2(1000.0 * bandwidth + 1.0),
                             rolloff, flatness], dim=1)  # (B, 4, N)
        band_peak = torch.stack([power[..., lo:hi].amax(-1) for lo, hi in self.band_slices], dim=1)  # (B, 7, N)
        contrast = 10.0 * torch.log10(band_peak.clamp(min=1e-10) / band_mean.clamp(min=1e-10))
        s_mean, s_std = _masked_mean_std(shape, gate)
        c_mean, c_std = _masked_mean_std(contrast, gate)
        return torch.cat([s_mean, s_std, c_mean, c_std], dim=1)

    def _loudness(self, frame_db: torch.Tensor) -> torch.Tensor:
        # Parseval for a one-sided Hann STFT: sum |X|^2 ~ n_fft * sum(w^2) * mean square / 2.
        offset = 10.0 * math.log10(2.0 / (self.n_fft * float(self.mel.window.pow(2).sum())))
        rms_db = (frame_db + offset).clamp(min=-100.0)
        q = torch.quantile(rms_db, torch.tensor([0.05, 0.95], device=rms_db.device), dim=1)
        return torch.stack([rms_db.mean(1), rms_db.std(1, correction=0), q[1] - q[0]], dim=1)

    def _rhythm(self, logmel: torch.Tensor) -> torch.Tensor:
        onset = torch.relu(logmel.diff(dim=-1)).mean(1)  # (B, N-1)
        o_mean = onset.mean(1)
        o_std = onset.std(1, correction=0)
        mid = onset[:, 1:-1]
        peaks = (mid > onset[:, :-2]) & (mid >= onset[:, 2:]) & (mid > (o_mean + o_std).unsqueeze(1))
        rate = peaks.sum(1).float() / ((onset.shape[1] + 1) * self.hop / self.sample_rate)
        centred = onset - o_mean.unsqueeze(1)
        n = 1 << (2 * max(onset.shape[1], int(self.lags[-1]) + 1) - 1).bit_length()
        spec = torch.fft.rfft(centred, n=n)
        ac = torch.fft.irfft(spec.real.pow(2) + spec.imag.pow(2), n=n)
        ac = ac / ac[:, :1].clamp(min=1e-10)
        at_lags = ac[:, self.lags]  # (B, L)
        bands = torch.where(self.tempo_mask.unsqueeze(0), at_lags.unsqueeze(-1), -1.0).amax(1)  # (B, bands)
        clarity = bands.amax(1, keepdim=True)
        return torch.cat([o_mean.unsqueeze(1), o_std.unsqueeze(1), rate.unsqueeze(1), bands, clarity], dim=1)

    def _tonal(self, chroma: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        chroma = chroma * active.unsqueeze(1)  # (B, 12, N)
        frame_energy = chroma.sum(1)  # (B, N)
        weight = frame_energy / frame_energy.sum(1, keepdim=True).clamp(min=1e-10)
        dist = chroma / frame_energy.unsqueeze(1).clamp(min=1e-10)
        profile = (dist * weight.unsqueeze(1)).sum(-1)  # (B, 12), energy-weighted mean chroma
        clip_dft = torch.fft.rfft(profile, dim=1).abs()[:, 1:7]
        frame_dft = (torch.fft.rfft(dist, dim=1).abs()[:, 1:7] * weight.unsqueeze(1)).sum(-1)
        entropy = (-torch.xlogy(dist, dist).sum(1) * weight).sum(1, keepdim=True)
        return torch.cat([clip_dft, frame_dft, entropy], dim=1)

    def standardise(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw descriptors -> the unit vector (fixed z-score, soft limit, equal group weight, L2 norm)."""
        z = (raw - self.offset) / self.scale
        z = 3.0 * torch.tanh(z / 3.0) * self.group_weight
        return F.normalize(z, dim=1)

    def encode(self, waves: torch.Tensor) -> torch.Tensor:
        waves = _check_waves(waves, self.name)
        with torch.inference_mode():
            return self.standardise(self.raw_features(waves))


CNN_DEFAULTS: dict[str, Any] = {
    "sample_rate": 16000,
    "n_fft": 512,
    "hop_length": 256,
    "n_mels": 96,
    "f_min": 0.0,
    "f_max": 8000.0,
    "channels": [32, 64, 128, 256, 256],
    "dim": 256,
    "patch_frames": 187,
    "seed": 0,
}


def patch_mean(logmel: torch.Tensor, patch_frames: int, embed_patch) -> torch.Tensor:
    """Mean of ``embed_patch`` over the non-overlapping ``patch_frames`` patches of (B, n_mels, frames) log-mels.

    The pooling every patch encoder shares (MusiCNN's own): training embeds one patch per excerpt, inference the
    mean over the patches of its crop, so the vector a track gets is an average of what training shaped. The tail
    shorter than a patch is dropped; a clip shorter than one patch is one (shorter) patch.
    """
    b, m, t = logmel.shape
    n = max(1, t // patch_frames)
    if t >= patch_frames:
        logmel = logmel[..., : n * patch_frames].reshape(b, m, n, patch_frames).permute(0, 2, 1, 3)
        logmel = logmel.reshape(b * n, m, patch_frames)
    return embed_patch(logmel).reshape(b, n, -1).mean(1)


class CnnEncoder(nn.Module):
    """Log-mel frontend + a compact 2-D CNN + global pooling + a linear map to the ``dim``-d representation.

    Each block is conv3x3 - BatchNorm - ReLU - 2x2 max-pool; after the last block the map is averaged over
    frequency, then mean- and max-pooled over time and mapped to ``dim``: one patch's vector. A clip is cut into
    patches of ``patch_frames`` (3 s, as MusiCNN's) and its vector is the mean over them (:func:`patch_mean`), the
    same pooling as in training, where each excerpt is one patch. The projection head of contrastive training lives
    in the trainer only (:mod:`recsys.training.trainer`): vectors come from the representation before it. The
    weights are initialised from ``seed`` without touching the global RNG, so an untrained encoder is the same
    everywhere (and so is its id). Training (stage 1) computes the frontend on its device and calls
    ``embed_logmel``: the two are separate.
    """

    name = "cnn"

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        unknown = set(config or {}) - set(CNN_DEFAULTS)
        if unknown:
            raise EncoderError(f"cnn encoder: unknown settings {sorted(unknown)} (known: {sorted(CNN_DEFAULTS)})")
        self.config = {**CNN_DEFAULTS, **(config or {})}
        cfg = self.config
        self.sample_rate, self.dim = int(cfg["sample_rate"]), int(cfg["dim"])
        self.patch_frames = int(cfg["patch_frames"])
        channels = [int(c) for c in cfg["channels"]]
        self.min_frames = 2 ** len(channels)
        if int(cfg["n_mels"]) < self.min_frames:
            raise EncoderError(f"cnn encoder: n_mels must be at least {self.min_frames} for {len(channels)} blocks")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg["seed"]))
            self.mel = MelSpectrogram(self.sample_rate, int(cfg["n_fft"]), hop_length=int(cfg["hop_length"]),
                                      n_mels=int(cfg["n_mels"]), f_min=float(cfg["f_min"]),
                                      f_max=float(cfg["f_max"]))
            self.input_norm = nn.BatchNorm2d(1)
            blocks, in_ch = [], 1
            for out_ch in channels:
                blocks += [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                           nn.ReLU(inplace=True), nn.MaxPool2d(2)]
                in_ch = out_ch
            self.blocks = nn.Sequential(*blocks)
            self.embedding = nn.Linear(2 * in_ch, self.dim)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def identity(self) -> dict:
        return {"class": "CnnEncoder", "config": self.config}

    def frontend(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, T) waves -> (B, n_mels, frames) log-mel in dB."""
        if waves.shape[-1] <= self.mel.n_fft // 2:
            waves = F.pad(waves, (0, self.mel.n_fft // 2 + 1 - waves.shape[-1]))
        return log_mel(self.mel(waves))

    def _embed_patch(self, logmel: torch.Tensor) -> torch.Tensor:
        if logmel.shape[-1] < self.min_frames:  # pad with silence so every pooling stage has a frame
            logmel = F.pad(logmel, (0, self.min_frames - logmel.shape[-1]), value=-100.0)
        x = self.blocks(self.input_norm(logmel.unsqueeze(1)))  # (B, C, M', N')
        x = x.mean(2)
        return self.embedding(torch.cat([x.mean(-1), x.amax(-1)], dim=1))

    def embed_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log-mel -> (B, dim) representation (mean over patches), not normalised."""
        return patch_mean(logmel, self.patch_frames, self._embed_patch)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.embed_logmel(self.frontend(waves))

    def encode(self, waves: torch.Tensor) -> torch.Tensor:
        return encode_eval(self, waves)


def encode_eval(model: nn.Module, waves: torch.Tensor) -> torch.Tensor:
    """``model(waves)`` L2-normalised, in eval mode (BatchNorm running statistics), the module's mode restored."""
    waves = _check_waves(waves, model.name)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return F.normalize(model(waves).float(), dim=1)
    finally:
        model.train(was_training)


def _import_plugin(spec: str) -> type:
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise EncoderError(f"encoder '{spec}' is not dsp, musicnn, cnn or module:Class: "
                           "fix embed.encoder in the config")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a plug-in may fail to import in any way; report it as one line
        raise EncoderError(f"encoder '{spec}': cannot import {module_name}: {type(exc).__name__}: {exc}; "
                           "check the module is on PYTHONPATH") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise EncoderError(f"encoder '{spec}': module {module_name} has no {class_name}")
    return cls


def _build_plugin(spec: str, device: torch.device) -> Encoder:
    cls = _import_plugin(spec)
    try:
        encoder = cls()
    except Exception as exc:  # the user's constructor; keep its message, drop the traceback
        raise EncoderError(f"encoder '{spec}': {cls.__name__}() failed: {type(exc).__name__}: {exc}") from None
    missing = [attr for attr in _REQUIRED if not hasattr(encoder, attr)]
    if missing:
        raise EncoderError(f"encoder '{spec}' lacks {', '.join(missing)}: see the Encoder protocol in "
                           "recsys/embedder/interface.py")
    bad = [attr for attr in ("sample_rate", "dim") if not isinstance(getattr(encoder, attr), int)
           or getattr(encoder, attr) <= 0]
    if bad:
        raise EncoderError(f"encoder '{spec}': {', '.join(bad)} must be positive integers")
    try:
        json.dumps(encoder.identity(), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise EncoderError(f"encoder '{spec}': identity() must return JSON-able values ({exc})") from None
    return encoder.to(device)


def build_encoder(spec: str, device: str = "auto", checkpoint: str | Path | None = None) -> Encoder:
    """A built-in of ``recsys.choices.ENCODERS`` ('dsp', 'musicnn' pretrained, 'cnn' untrained), a checkpoint
    (``checkpoint``: any architecture of :data:`ARCHITECTURES`) or a user's 'module:Class', on ``device``."""
    dev = resolve_device(device)
    if checkpoint is not None:
        if spec not in ARCHITECTURES:
            raise EncoderError(f"encoder '{spec}' takes no checkpoint: checkpoints are for {', '.join(ARCHITECTURES)}")
        return load_checkpoint(Path(checkpoint), dev)
    if spec in ENCODERS:
        return load(ENCODERS[spec])().to(dev)
    return _build_plugin(spec, dev)


def _musicnn(config: dict) -> nn.Module:
    """A MusiCNN to load fine-tuned weights into (built from the packaged ones; nothing is configurable)."""
    if config:
        raise EncoderError(f"musicnn encoder: unknown settings {sorted(config)}")
    return MusicnnEncoder()


# Architectures a checkpoint may hold: arch name -> a builder from its JSON config (the weights then load into it).
ARCHITECTURES = {"cnn": CnnEncoder, "musicnn": _musicnn}


def save_checkpoint(encoder: nn.Module, path: Path, extra: dict | None = None) -> None:
    """Write ``encoder`` (an architecture of :data:`ARCHITECTURES`: its ``name``, JSON ``config`` and weights) to
    ``path`` atomically (temp file + rename), so a crash never leaves half a checkpoint.

    ``extra`` (training metadata) must be JSON-like so the checkpoint stays loadable with ``weights_only``.
    """
    extra = extra or {}
    try:
        json.dumps(extra)
        json.dumps(encoder.config)
    except (TypeError, ValueError) as exc:
        raise EncoderError(f"checkpoint {path}: extra and config must hold only JSON-like values ({exc})") from None
    if encoder.name not in ARCHITECTURES:
        raise EncoderError(f"checkpoint {path}: architecture '{encoder.name}' cannot be saved "
                           f"(known: {', '.join(ARCHITECTURES)})")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": encoder.name,
        "config": encoder.config,
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "extra": extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, device: str | torch.device = "auto") -> nn.Module:
    """Load a checkpoint (a trained cnn, a fine-tuned musicnn) with ``torch.load(weights_only=True)``: a checkpoint
    never runs code.

    The checkpoint's ``extra`` dict is kept as ``encoder.extra``.
    """
    path = Path(path)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if not path.is_file():
        raise EncoderError(f"checkpoint {path} does not exist: train one with `recsys train-encoder` or fix the path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise EncoderError(f"checkpoint {path} holds objects other than weights and was refused: "
                           "re-save it with save_checkpoint") from None
    except Exception as exc:  # torch reports a damaged file with many exception types
        raise EncoderError(f"checkpoint {path} is damaged ({type(exc).__name__}): train or copy it again") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise EncoderError(f"checkpoint {path} is not a recsys checkpoint (format {CHECKPOINT_FORMAT})")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise EncoderError(f"checkpoint {path} has format {ckpt.get('format')}, this recsys reads format "
                           f"{CHECKPOINT_FORMAT}: train it again with `recsys train-encoder`")
    arch = ckpt.get("arch")
    if arch not in ARCHITECTURES:
        raise EncoderError(f"checkpoint {path} is for architecture '{arch}', not one of {', '.join(ARCHITECTURES)}: "
                           "use the encoder it was trained for")
    try:
        encoder = ARCHITECTURES[arch](ckpt.get("config") or {})
    except (EncoderError, TypeError, ValueError) as exc:
        raise EncoderError(f"checkpoint {path}: its {arch} config cannot be used ({exc})") from None
    try:
        encoder.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError:
        raise EncoderError(f"checkpoint {path}: weights do not match its {arch} config: train or copy it "
                           "again") from None
    encoder.extra = ckpt.get("extra") or {}
    return encoder.to(dev).eval()
