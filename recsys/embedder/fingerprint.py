"""A small acoustic fingerprint, to tell whether two files hold one recording (``recsys duplicates``).

The encoder's vectors say what music sounds like, not whether two files are one recording: a copy made 8 dB quieter
or re-encoded at 48 kb/s mono moves MusiCNN's vector as far as another piece of the same soundtrack does, and a copy
cut shorter is heard at other places (the excerpts sit at fixed shares of the duration). This fingerprint follows
Haitsma and Kalker (ISMIR 2002): 8 kHz mono, 16 log-spaced bands of a 256 ms window every 32 ms, one bit per
band pair and frame (does the energy difference of neighbouring bands grow or shrink from one frame to the
next). Differences of log energies ignore gain; coarse bands ignore the codec. Two fingerprints are compared at
every offset (an FFT cross-correlation), so a copy cut at either end still lines up.
"""

from __future__ import annotations

import numpy as np

from recsys.embedder.audio import load_crop

SAMPLE_RATE = 8000
FRAME = 2048  # 256 ms windows, overlapping 7/8: bits barely change when a copy starts between two hops
HOP = 256  # every 32 ms
BANDS = 17  # 16 bits per frame
LOW_HZ, HIGH_HZ = 300.0, 3000.0
MAX_SECONDS = 600.0  # longer files are fingerprinted over their first 10 minutes
MIN_OVERLAP_S = 10.0  # two files must line up over at least this long to be compared


def fingerprint_samples(mono: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Frames x 16 bits (bool) of ``mono`` audio at ``sample_rate`` (8 kHz)."""
    x = np.asarray(mono, dtype=np.float32)
    if len(x) < FRAME + 2 * HOP:
        return np.zeros((0, BANDS - 1), dtype=bool)
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP] * np.hanning(FRAME).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(FRAME, 1.0 / sample_rate)
    edges = np.geomspace(LOW_HZ, HIGH_HZ, BANDS + 1)
    band = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges, edges[1:],
                                                                                         strict=False)], axis=1)
    energy = np.log(band + 1e-9)
    diff = energy[:, :-1] - energy[:, 1:]
    return (diff[1:] - diff[:-1]) > 0


def fingerprint_file(path: str, duration_s: float) -> np.ndarray:
    """The fingerprint of a file (decoded whole, up to :data:`MAX_SECONDS`); raises DecodeError like the embedder."""
    crop = max(1.0, min(float(duration_s or MAX_SECONDS), MAX_SECONDS))
    clip = load_crop(path, SAMPLE_RATE, crop_s=crop, position="start", max_duration_s=float("inf"))
    return fingerprint_samples(clip.samples)


def match(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(bit agreement at the best offset, that offset in seconds, overlap in seconds): at ``offset`` the sound at
    second t of b is the sound at second t + offset of a (a copy cut 5 s into a: +5).

    Agreement is the share of equal bits where the two line up best (judged by how unlikely that agreement is by
    chance over that overlap): about 0.5 for unrelated music, near 1 for one recording. An overlap under
    :data:`MIN_OVERLAP_S` gives agreement 0.
    """
    if len(a) == 0 or len(b) == 0:
        return 0.0, 0.0, 0.0
    sa, sb = np.where(a, 1.0, -1.0), np.where(b, 1.0, -1.0)
    n = len(a) + len(b) - 1
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft((np.fft.rfft(sa, size, axis=0) * np.conj(np.fft.rfft(sb, size, axis=0))).sum(axis=1),
                        size)
    # corr[s] pairs a[t + s] with b[t]; negative shifts wrap to the end
    shifts = np.concatenate([np.arange(0, len(a)), np.arange(-(len(b) - 1), 0)])
    values = np.concatenate([corr[:len(a)], corr[size - (len(b) - 1):]]) if len(b) > 1 else corr[:len(a)]
    overlap = np.minimum(len(a) - np.maximum(shifts, 0), len(b) + np.minimum(shifts, 0)).astype(np.float64)
    frame_s = HOP / SAMPLE_RATE
    valid = overlap * frame_s >= MIN_OVERLAP_S
    if not valid.any():
        return 0.0, 0.0, 0.0
    agreement = 0.5 + values / (2 * a.shape[1] * np.maximum(overlap, 1))
    # the offset where agreement is least likely by chance (music that repeats itself lines up at several offsets;
    # a long overlap that agrees is stronger evidence than a short one that agrees a little more)
    best = int(np.argmax(np.where(valid, (agreement - 0.5) * np.sqrt(overlap), -np.inf)))
    return float(agreement[best]), float(shifts[best] * frame_s), float(overlap[best] * frame_s)
