"""Log-mel frontend in plain torch, numerically equal to ``torchaudio.transforms.MelSpectrogram``.

torchaudio is not a dependency (its wheels pin one torch build), so the spectrogram and the filterbank are
re-implemented here with the same semantics; ``tests/test_features.py`` checks them against torchaudio 2.11 outputs.
Everything stays on the input's device: the filterbank and window are buffers that follow ``.to(device)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MEL_SCALES = ("htk", "slaney")


def hz_to_mel(freq: float, mel_scale: str = "htk") -> float:
    """Hertz to mels (torchaudio's ``_hz_to_mel``): HTK formula, or Slaney's linear-then-log scale."""
    if mel_scale == "htk":
        return 2595.0 * math.log10(1.0 + freq / 700.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    if freq >= min_log_hz:
        return min_log_mel + math.log(freq / min_log_hz) / (math.log(6.4) / 27.0)
    return freq / f_sp


def mel_to_hz(mels: torch.Tensor, mel_scale: str = "htk") -> torch.Tensor:
    """Mels to hertz, the inverse of :func:`hz_to_mel`, element-wise."""
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = f_sp * mels
    log_part = min_log_hz * torch.exp(logstep * (mels - min_log_mel))
    return torch.where(mels >= min_log_mel, log_part, linear)


def melscale_fbanks(
    n_freqs: int,
    f_min: float,
    f_max: float,
    n_mels: int,
    sample_rate: int,
    norm: str | None = None,
    mel_scale: str = "htk",
) -> torch.Tensor:
    """Triangular mel filterbank of shape (n_freqs, n_mels), as ``torchaudio.functional.melscale_fbanks``.

    ``norm="slaney"`` divides each triangle by its width in Hz so every filter has the same area.
    """
    if mel_scale not in MEL_SCALES:
        raise ValueError(f"mel_scale must be one of {MEL_SCALES}, got {mel_scale!r}")
    if norm not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(hz_to_mel(f_min, mel_scale), hz_to_mel(f_max, mel_scale), n_mels + 2)
    f_pts = mel_to_hz(m_pts, mel_scale)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2: n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    return fb


class MelSpectrogram(torch.nn.Module):
    """(…, T) waveform -> (…, n_mels, frames) mel spectrogram; same arguments and output as torchaudio's.

    ``normalized=True`` divides the STFT by the window's L2 norm (torchaudio's "window" normalisation).
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        win_length: int | None = None,
        hop_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        pad: int = 0,
        n_mels: int = 128,
        power: float = 2.0,
        normalized: bool = False,
        center: bool = True,
        pad_mode: str = "reflect",
        norm: str | None = None,
        mel_scale: str = "htk",
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length if win_length is not None else n_fft
        self.hop_length = hop_length if hop_length is not None else self.win_length // 2
        self.f_min = f_min
        self.f_max = f_max if f_max is not None else float(sample_rate // 2)
        self.pad = pad
        self.n_mels = n_mels
        self.power = power
        self.normalized = normalized
        self.center = center
        self.pad_mode = pad_mode
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        fb = melscale_fbanks(n_fft // 2 + 1, f_min, self.f_max, n_mels, sample_rate, norm, mel_scale)
        self.register_buffer("fb", fb, persistent=False)

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """(…, T) -> (…, n_fft // 2 + 1, frames) magnitude spectrogram raised to ``power``."""
        if self.pad > 0:
            waveform = F.pad(waveform, (self.pad, self.pad))
        shape = waveform.shape
        spec = torch.stft(
            waveform.reshape(-1, shape[-1]),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=self.center,
            pad_mode=self.pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        if self.normalized:
            spec = spec / self.window.pow(2).sum().sqrt()
        return spec.abs().pow(self.power)

    def mel(self, spec: torch.Tensor) -> torch.Tensor:
        """(…, n_freqs, frames) spectrogram -> (…, n_mels, frames) through the filterbank."""
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.mel(self.spectrogram(waveform))


def amplitude_to_db(x: torch.Tensor, multiplier: float = 10.0, amin: float = 1e-10,
                    top_db: float | None = None) -> torch.Tensor:
    """``multiplier * log10(max(x, amin))`` (10 for power, 20 for magnitude), like torchaudio's AmplitudeToDB.

    ``top_db`` floors each item (over its last two axes) at its own peak minus ``top_db``.
    """
    db = multiplier * torch.log10(torch.clamp(x, min=amin))
    if top_db is not None:
        peak = db.amax(dim=(-2, -1), keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


def log_mel(mel: torch.Tensor, top_db: float | None = None) -> torch.Tensor:
    """Power mel spectrogram -> dB, the frontend's log compression (silence floors at -100 dB, never -inf)."""
    return amplitude_to_db(mel, 10.0, 1e-10, top_db)
