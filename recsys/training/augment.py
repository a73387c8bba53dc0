"""Audio-domain augmentations for contrastive training: what changes between two copies of one song in real
libraries (level, EQ, noise, a codec's low-pass, a slightly different pitch or tempo) and should not change its vector.

Everything works on a batch at once on the training device, one independent draw per excerpt from a seeded
generator, so a run is reproducible:

- pitch and tempo together: the wave is resampled by 2^(+-PITCH_SEMITONES/12) (a record played a little fast or slow);
- tempo alone: the log-mel is stretched in time by 1 +- TEMPO (what a phase vocoder does to the magnitudes, without
  its artefacts in the phase the log-mel drops anyway) -- see :func:`stretch_frames`;
- EQ: a tilt of +-EQ_TILT_DB from the lowest to the highest octave and one peaking band of +-EQ_PEAK_DB (centre
  100 Hz-5 kHz, about an octave wide), one FFT multiplication;
- codec-like low-pass: with probability LOWPASS_P a steep roll-off (8th order) at 3-7 kHz, as low-bitrate MP3/AAC
  encoders cut the top band, in the same multiplication;
- noise: white to pink (random spectral slope) at a signal-to-noise ratio of NOISE_SNR_DB;
- gain: +-GAIN_DB (the log-mel frontends are not scale invariant).
"""

from __future__ import annotations

import math

import torch

GAIN_DB = 6.0
EQ_TILT_DB = 6.0
EQ_PEAK_DB = 6.0
EQ_PEAK_HZ = (100.0, 5000.0)
EQ_PEAK_OCTAVES = 0.5  # standard deviation of the peak's bell over log2 frequency
LOWPASS_P = 0.5
LOWPASS_HZ = (3000.0, 7000.0)
LOWPASS_ORDER = 8
NOISE_SNR_DB = (15.0, 40.0)
PITCH_SEMITONES = 1.0
TEMPO = 0.08
MAX_SPEED = 2.0 ** (PITCH_SEMITONES / 12.0)


def _uniform(gen: torch.Generator, b: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(b, 1, generator=gen, device=device)


def source_samples(out_samples: int) -> int:
    """Samples an excerpt must be cut from so that :func:`augment_waves` can play it up to MAX_SPEED fast."""
    return int(math.ceil(out_samples * MAX_SPEED)) + 2


def resample_speed(waves: torch.Tensor, speed: torch.Tensor, out_samples: int) -> torch.Tensor:
    """(B, S) -> (B, out_samples): each row played ``speed`` times as fast (linear interpolation), from its start."""
    b, s = waves.shape
    pos = speed * torch.arange(out_samples, device=waves.device, dtype=torch.float32).unsqueeze(0)
    pos = pos.clamp(max=s - 1.001)
    i0 = pos.floor().long()
    frac = pos - i0
    return torch.lerp(waves.gather(1, i0), waves.gather(1, i0 + 1), frac)


def filter_gain_db(freqs: torch.Tensor, gen: torch.Generator, b: int, nyquist: float) -> torch.Tensor:
    """(B, F) random EQ (tilt + one peaking band) and, for some rows, a codec-like low-pass, in dB."""
    dev = freqs.device
    octave = torch.log2(freqs.clamp(min=20.0) / 1000.0).unsqueeze(0)  # ~-5.6 .. +3 octaves around 1 kHz
    span = math.log2(nyquist / 20.0)
    tilt = _uniform(gen, b, -EQ_TILT_DB, EQ_TILT_DB, dev) * (octave - octave.mean()) / span
    centre = torch.exp(_uniform(gen, b, math.log(EQ_PEAK_HZ[0]), math.log(EQ_PEAK_HZ[1]), dev))
    bell = torch.exp(-0.5 * (torch.log2(freqs.clamp(min=20.0)).unsqueeze(0) - torch.log2(centre)) ** 2
                     / EQ_PEAK_OCTAVES ** 2)
    gain = tilt + _uniform(gen, b, -EQ_PEAK_DB, EQ_PEAK_DB, dev) * bell
    cutoff = _uniform(gen, b, *LOWPASS_HZ, dev)
    on = (torch.rand(b, 1, generator=gen, device=dev) < LOWPASS_P).float()
    lowpass_db = -10.0 * torch.log10(1.0 + (freqs.unsqueeze(0) / cutoff) ** (2 * LOWPASS_ORDER))
    return gain + on * lowpass_db


def augment_waves(waves: torch.Tensor, out_samples: int, sample_rate: int, gen: torch.Generator) -> torch.Tensor:
    """(B, S) float waves (S >= source_samples(out_samples)) -> (B, out_samples) augmented copies."""
    b = waves.shape[0]
    dev = waves.device
    speed = 2.0 ** (_uniform(gen, b, -PITCH_SEMITONES, PITCH_SEMITONES, dev) / 12.0)
    x = resample_speed(waves.float(), speed, out_samples)
    n_fft = 1 << (out_samples - 1).bit_length()  # a power of two: an excerpt's length may have large prime factors
    spec = torch.fft.rfft(x, n=n_fft, dim=1)
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate).to(dev)
    spec = spec * 10.0 ** (filter_gain_db(freqs, gen, b, sample_rate / 2) / 20.0)
    x = torch.fft.irfft(spec, n=n_fft, dim=1)[:, :out_samples]
    slope = _uniform(gen, b, 0.0, 1.0, dev)  # 0 white, 1 pink
    noise = torch.fft.rfft(torch.randn(b, n_fft, generator=gen, device=dev), dim=1)
    noise = torch.fft.irfft(noise * freqs.clamp(min=20.0).unsqueeze(0) ** (-slope / 2), n=n_fft, dim=1)
    noise = noise[:, :out_samples]
    power = x.pow(2).mean(1, keepdim=True).clamp(min=1e-10)
    snr = 10.0 ** (_uniform(gen, b, *NOISE_SNR_DB, dev) / 10.0)
    noise = noise * torch.sqrt(power / snr / noise.pow(2).mean(1, keepdim=True).clamp(min=1e-20))
    return (x + noise) * 10.0 ** (_uniform(gen, b, -GAIN_DB, GAIN_DB, dev) / 20.0)


def stretch_frames(logmel: torch.Tensor, frames: int, gen: torch.Generator) -> torch.Tensor:
    """(B, M, N) -> (B, M, frames): the first ``frames * rate`` frames resampled to ``frames`` (rate 1 +- TEMPO per
    row, linear interpolation): a tempo change without a pitch change. N must be >= frames * (1 + TEMPO) + 1."""
    b, m, n = logmel.shape
    rate = 1.0 + _uniform(gen, b, -TEMPO, TEMPO, logmel.device)
    pos = (rate * torch.arange(frames, device=logmel.device, dtype=torch.float32)).clamp(max=n - 1.001)
    i0 = pos.floor().long()
    frac = pos - i0
    idx = i0.unsqueeze(1).expand(b, m, frames)
    left, right = logmel.gather(2, idx), logmel.gather(2, idx + 1)
    return torch.lerp(left, right, frac.unsqueeze(1).to(logmel.dtype))


def stretch_margin(frames: int) -> int:
    """Frames a log-mel must have before :func:`stretch_frames` cuts ``frames`` out of it."""
    return int(math.ceil(frames * (1.0 + TEMPO))) + 2

