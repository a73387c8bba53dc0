"""Music-like synthetic audio, written in every format recsys decodes: the data of tests, `recsys demo` and benchmarks.

Each style has a clearly distinct sound (spectrum, rhythm, envelope) so that an encoder that listens can tell them
apart; the seed varies key, tempo and timbre inside a style. Synthesis is vectorised (no per-sample Python loops, no
scipy: the demo ships with the package) so a benchmark can write a hundred four-minute tracks quickly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

from recsys.errors import RecsysError

STYLES: tuple[str, ...] = ("ambient_pad", "drum_loop", "bright_arpeggio", "bass_groove", "noise_texture")

FORMATS: dict[str, str] = {
    "wav": "wav",
    "aiff": "aiff",
    "flac": "flac",
    "ogg": "ogg",
    "opus": "opus",
    "mp3": "mp3",
    "m4a": "m4a",
    "alac": "m4a",
}

# format name -> (libsndfile major format, subtype); the rest are written with PyAV.
_SOUNDFILE_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "aiff": ("AIFF", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_MP3_MAX_RATE = 48000
_BLOCK = 65536  # frames per soundfile write: one huge write of Ogg Vorbis crashed libsndfile 1.2.2


class SynthError(RecsysError):
    """Bad arguments to the synthesiser or writer."""


def _lowpass(x: np.ndarray, width: int) -> np.ndarray:
    """Two cascaded moving averages (a triangle filter) along axis 0: a cheap, vectorised low-pass.

    The running sums are float32: audio is zero-mean, so they stay small and the rounding error stays inaudible.
    """
    width = max(1, int(width))
    for _ in range(2):
        c = np.cumsum(np.concatenate([np.zeros((width,) + x.shape[1:], np.float32), x]), axis=0, dtype=np.float32)
        x = (c[width:] - c[:-width]) * np.float32(1 / width)
    return x


def _cycles(freqs: np.ndarray, idx: np.ndarray, in_step: np.ndarray, step_s: float) -> np.ndarray:
    """Oscillator position in cycles, wrapped to [0, 1) as float32, for a note sequence (step ``idx`` plays
    ``freqs[idx]``); phase-continuous across note changes.

    The phase at each step's start comes from the short per-step array, so no per-sample cumulative sum is needed;
    the float32 sin/saw that follow stay exact because the phase is wrapped first.
    """
    start = np.concatenate([[0.0], np.cumsum(freqs * step_s)])[:-1]
    c = start[idx] + freqs[idx] * in_step
    return (c - np.floor(c)).astype(np.float32)


def _sines(cycles: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """A sum of harmonics (weights[k] for harmonic k + 1) of an oscillator."""
    return sum(w * np.sin(np.float32(2 * np.pi * (k + 1)) * cycles) for k, w in enumerate(weights))


def _steps(t: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Index of each sample's step (note, chord) of length ``step_s`` and the time since that step began (float32)."""
    idx = (t * (1.0 / step_s)).astype(np.int64)
    return idx, (t - idx * step_s).astype(np.float32)


def _midi(m: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69) / 12)


def _ambient_pad(t: np.ndarray, sr: int, rng: np.random.Generator) -> list[np.ndarray]:
    root = rng.integers(45, 57)
    minor = rng.random() < 0.5
    third = 3 if minor else 4
    chord_s = rng.uniform(4.0, 8.0)
    chords = root + rng.choice(np.array([0, 5, 7, third, 8 if minor else 9]), size=4)
    idx, in_chord = _steps(t, chord_s)
    n_steps = int(idx[-1]) + 1
    layers = []
    for interval, detune in ((0, 1.0), (third, 1.003), (7, 0.997), (12, 1.002)):
        freqs = np.resize(_midi(chords + interval) * detune, n_steps)
        layers.append(_sines(_cycles(freqs, idx, in_chord, chord_s), (1.0, 0.3)))
    swell = 0.6 + 0.4 * np.sin(np.float32(np.pi / chord_s) * in_chord) ** 2
    return [_lowpass(sum(layers) * swell, sr // 800), _lowpass((layers[1] + layers[3]) * swell, sr // 600)]


def _kicks_and_snares(t: np.ndarray, sr: int, beat_s: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    beat, in_beat = _steps(t, beat_s)
    sweep = 50 * in_beat + 100 * (1 - np.exp(-30 * in_beat)) / 30  # a falling pitch: the thump of a kick
    kick = np.sin(np.float32(2 * np.pi) * sweep) * np.exp(-12 * in_beat)
    noise = rng.standard_normal(len(t), dtype=np.float32)
    snare = _lowpass(noise, 3) * np.exp(-25 * in_beat) * (beat % 2 == 1)
    _, in_eighth = _steps(t, beat_s / 2)
    hats = (noise - _lowpass(noise, 4)) * np.exp(-80 * in_eighth)
    return kick, snare, hats


def _drum_loop(t: np.ndarray, sr: int, rng: np.random.Generator) -> list[np.ndarray]:
    kick, snare, hats = _kicks_and_snares(t, sr, 60.0 / rng.uniform(120, 160), rng)
    return [1.2 * kick + 0.8 * snare + 0.3 * hats, 0.6 * kick + snare + 0.5 * hats]


def _bright_arpeggio(t: np.ndarray, sr: int, rng: np.random.Generator) -> list[np.ndarray]:
    root = rng.integers(72, 84)
    shape = np.array([0, 4, 7, 12, 16, 12, 7, 4]) if rng.random() < 0.5 else np.array([0, 3, 7, 10, 12, 15, 10, 7])
    step_s = 60.0 / rng.uniform(130, 170) / 4
    idx, in_note = _steps(t, step_s)
    cycles = _cycles(np.resize(_midi(root + shape), int(idx[-1]) + 1), idx, in_note, step_s)
    pluck = _sines(cycles, (1.0, 0.5, 0.25)) * np.exp(-rng.uniform(15, 30) * in_note)
    echo = np.roll(pluck, int(step_s * 3 * sr)) * 0.4
    return [pluck + echo, pluck - 0.5 * echo]


def _bass_groove(t: np.ndarray, sr: int, rng: np.random.Generator) -> list[np.ndarray]:
    riff = rng.integers(31, 41) + rng.choice(np.array([0, 0, 7, 5, 12, 3, 10]), size=8)
    beat_s = 60.0 / rng.uniform(90, 120)
    idx, in_note = _steps(t, beat_s / 2)
    saw = 2 * _cycles(np.resize(_midi(riff), int(idx[-1]) + 1), idx, in_note, beat_s / 2) - 1
    bass = _lowpass(saw, sr // 500) * (0.4 + 0.6 * np.exp(-6 * in_note))
    _, _, hats = _kicks_and_snares(t, sr, beat_s, rng)
    return [1.5 * bass + 0.2 * hats, 1.5 * bass + 0.3 * np.roll(hats, sr // 50)]


def _noise_texture(t: np.ndarray, sr: int, rng: np.random.Generator) -> list[np.ndarray]:
    noise = rng.standard_normal((len(t), 2), dtype=np.float32)
    tilt = (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t)).astype(np.float32)[:, None]
    dark = _lowpass(noise, sr // 2000)
    texture = tilt * dark + (1 - tilt) * (noise - dark) * 0.5
    crackle = (rng.random((len(t), 2), dtype=np.float32) < rng.uniform(2e-4, 1e-3)) * noise * 3
    return [texture[:, 0] + crackle[:, 0], texture[:, 1] + crackle[:, 1]]


_MAKERS: dict[str, Callable[[np.ndarray, int, np.random.Generator], list[np.ndarray]]] = {
    "ambient_pad": _ambient_pad,
    "drum_loop": _drum_loop,
    "bright_arpeggio": _bright_arpeggio,
    "bass_groove": _bass_groove,
    "noise_texture": _noise_texture,
}


def synth_track(style: str, seconds: float, sample_rate: int = 22050, seed: int = 0, channels: int = 2) -> np.ndarray:
    """A deterministic music-like track of one style: float32 (frames, channels), peak 0.9.

    Each style yields two layers; every output channel is its own mix of them, so channels differ (stereo image)
    and any channel count works.
    """
    if style not in _MAKERS:
        raise SynthError(f"unknown synth style {style!r}: choose one of {', '.join(STYLES)}")
    if seconds <= 0 or sample_rate <= 0 or channels <= 0:
        raise SynthError(f"synth_track needs positive seconds, sample_rate and channels (got {seconds}, "
                         f"{sample_rate}, {channels})")
    rng = np.random.default_rng([seed, STYLES.index(style)])
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    a, b = _MAKERS[style](t, sample_rate, rng)
    gains = np.ones((2, channels)) if channels == 1 else np.stack([np.linspace(1.0, 0.6, channels),
                                                                   np.linspace(0.6, 1.0, channels)])
    out = np.stack([a, b], axis=1) @ gains.astype(np.float32)
    out *= np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02).astype(np.float32)[:, None]  # no click at either end
    peak = float(np.max(np.abs(out))) or 1.0
    return (out * (0.9 / peak)).astype(np.float32)


def _as_frames(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise SynthError(f"write_audio needs (frames, channels) samples, got shape {np.shape(samples)}")
    return np.clip(x, -1.0, 1.0)


def _write_soundfile(path: Path, x: np.ndarray, sample_rate: int, fmt: str) -> None:
    major, subtype = _SOUNDFILE_FORMATS[fmt]
    if fmt == "opus" and sample_rate not in _OPUS_RATES:
        x, sample_rate = soxr.resample(x, sample_rate, 48000), 48000
    if fmt == "mp3" and sample_rate > _MP3_MAX_RATE:
        x, sample_rate = soxr.resample(x, sample_rate, _MP3_MAX_RATE), _MP3_MAX_RATE
    with sf.SoundFile(path, "w", sample_rate, x.shape[1], subtype, format=major) as f:
        for i in range(0, len(x), _BLOCK):
            f.write(np.ascontiguousarray(x[i:i + _BLOCK]))


def _write_pyav(path: Path, x: np.ndarray, sample_rate: int, fmt: str) -> None:
    """AAC or ALAC in an .m4a (MP4) container. PyAV re-chunks frames to the encoder's frame size itself."""
    codec, sample_format = ("aac", "fltp") if fmt == "m4a" else ("alac", "s16p")
    with av.open(str(path), "w", format="ipod") as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.codec_context.layout = {1: "mono", 2: "stereo"}.get(x.shape[1], f"{x.shape[1]}c")
        stream.codec_context.format = sample_format
        if codec == "aac":
            stream.codec_context.bit_rate = 64000 * x.shape[1]
        planar = x.T if sample_format == "fltp" else (x.T * 32767).round().astype(np.int16)
        for i in range(0, len(x), _BLOCK):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, i:i + _BLOCK]), format=sample_format,
                                               layout=stream.codec_context.layout)
            frame.sample_rate = sample_rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_audio(path: Path, samples: np.ndarray, sample_rate: int, fmt: str) -> Path:
    """Write float samples ((frames,) or (frames, channels), in [-1, 1]) as ``fmt`` (a key of FORMATS) at ``path``.

    Opus is resampled to 48 kHz when the rate is not one Opus supports; the file's extension is the caller's choice.
    """
    if fmt not in FORMATS:
        raise SynthError(f"unknown audio format {fmt!r}: choose one of {', '.join(FORMATS)}")
    path = Path(path)
    x = _as_frames(samples)
    if fmt in _SOUNDFILE_FORMATS:
        _write_soundfile(path, x, sample_rate, fmt)
    else:
        _write_pyav(path, x, sample_rate, fmt)
    return path
