"""Decoding a crop by seeking: the right part, length, rate and channel mix, in every format, and clean errors."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from recsys.embedder import audio
from recsys.embedder.audio import (
    Clip,
    CropError,
    DecodeError,
    TrackTooLong,
    crop_window,
    crop_windows,
    load_crop,
    probe_duration,
)
from recsys.synth.audio import FORMATS, write_audio

SR = 44100
OUT = 16000
SECONDS = 12
LOSSLESS = {"wav", "aiff", "flac", "alac"}


def _signal(seconds: float = SECONDS, sr: int = SR, channels: int = 2) -> np.ndarray:
    """A tone that changes pitch every second (so each second is distinguishable) plus a slow per-channel wobble."""
    t = np.arange(int(seconds * sr)) / sr
    freq = 200 * 2 ** (np.floor(t) / 3)
    tone = 0.5 * np.sin(np.cumsum(2 * np.pi * freq / sr))
    wobble = 0.1 * np.sin(2 * np.pi * 7 * t)
    return np.stack([tone + (wobble if c % 2 == 0 else -wobble) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return _signal()


@pytest.fixture(scope="module")
def reference(source) -> np.ndarray:
    """What a perfect decoder gives: mono of the source, resampled whole."""
    return soxr.resample(source.mean(axis=1), SR, OUT)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, source) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("formats")
    return {fmt: write_audio(folder / f"signal_{fmt}.{ext}", source, SR, fmt) for fmt, ext in FORMATS.items()}


def _lag_and_corr(clip: np.ndarray, reference: np.ndarray, start: int, max_lag: int) -> tuple[int, float]:
    """The shift (in samples) at which the clip best matches the reference around ``start``, and the correlation."""
    inner = clip[max_lag:-max_lag]
    best = (0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        ref = reference[start + max_lag + lag: start + max_lag + lag + len(inner)]
        if len(ref) == len(inner):
            r = float(np.corrcoef(inner, ref)[0, 1])
            best = max(best, (lag, r), key=lambda b: b[1])
    return best


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("position", ["center", "start", "end"])
def test_every_format_decodes_the_right_part(encoded, reference, fmt, position):
    clip = load_crop(encoded[fmt], OUT, crop_s=4.0, position=position)
    assert isinstance(clip, Clip)
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert clip.sample_rate == OUT
    assert len(clip.samples) == 4 * OUT
    assert clip.duration_s == pytest.approx(SECONDS, abs=0.05)
    expected_start = {"center": 4.0, "start": 0.0, "end": 8.0}[position]
    assert clip.start_s == pytest.approx(expected_start, abs=0.05)
    start = round(clip.start_s * OUT)
    # lossy codecs may shift by their priming/delay (AAC: 1024 samples); 0.05 s covers all of them
    lag, corr = _lag_and_corr(clip.samples, reference, start, max_lag=int(0.05 * OUT))
    assert corr > 0.99, f"{fmt} {position}: crop does not match the source (corr {corr:.3f} at lag {lag})"
    if fmt in LOSSLESS:
        assert lag == 0
        inner = slice(200, -200)  # away from the resampler's edges
        np.testing.assert_allclose(clip.samples[inner], reference[start:start + len(clip.samples)][inner], atol=2e-3)


def test_decoder_choice(encoded):
    assert load_crop(encoded["flac"], OUT, 2.0).decoder == "soundfile"
    assert load_crop(encoded["m4a"], OUT, 2.0).decoder == "pyav"
    assert load_crop(encoded["alac"], OUT, 2.0).decoder == "pyav"


@pytest.mark.parametrize("fmt", ["flac", "mp3", "m4a", "ogg"])
def test_several_excerpts_are_each_the_right_part(encoded, reference, fmt):
    """Three 2 s excerpts of the 12 s signal, centred at 25/50/75 %: each one matches the source where it starts,
    through either decoder (FLAC and Ogg by soundfile, M4A by PyAV)."""
    clip = load_crop(encoded[fmt], OUT, crop_s=2.0, count=3)
    assert len(clip.samples) == 6 * OUT
    starts = [2.0, 5.0, 8.0]
    assert clip.start_s == pytest.approx(starts[0], abs=0.05)
    for i, start_s in enumerate(starts):
        part = clip.samples[i * 2 * OUT:(i + 1) * 2 * OUT]
        lag, corr = _lag_and_corr(part, reference, round(start_s * OUT), max_lag=int(0.05 * OUT))
        assert corr > 0.99, f"{fmt} excerpt {i}: does not match the source at {start_s} s (corr {corr:.3f})"


def test_crop_windows_geometry():
    assert crop_windows(100.0, 30.0) == [crop_window(100.0, 30.0)]
    assert crop_windows(100.0, 30.0, 1, "start") == [(0.0, 30.0)]
    assert crop_windows(200.0, 10.0, 3) == [(45.0, 10.0), (95.0, 10.0), (145.0, 10.0)]
    # inside a CUE segment: 25/50/75 % of the segment, not of the file
    assert crop_windows(600.0, 10.0, 3, seg_start_s=200.0, seg_length_s=100.0) == [
        (220.0, 10.0), (245.0, 10.0), (270.0, 10.0)]
    # no longer than all excerpts together: one window of that total length, nothing decoded twice
    assert crop_windows(30.0, 10.0, 3) == [(0.0, 30.0)]
    assert crop_windows(40.0, 10.0, 3) == [(5.0, 10.0), (15.0, 10.0), (25.0, 10.0)]  # just longer: spread, no overlap
    assert crop_windows(12.0, 10.0, 3) == [(0.0, 12.0)]
    with pytest.raises(CropError, match="crop_count"):
        crop_windows(100.0, 10.0, 0)


def test_probe_duration(encoded):
    for fmt, path in encoded.items():
        assert probe_duration(path) == pytest.approx(SECONDS, abs=0.05), fmt


def test_crop_window_geometry():
    assert crop_window(100.0, 30.0) == (35.0, 30.0)
    assert crop_window(100.0, 30.0, "start") == (0.0, 30.0)
    assert crop_window(100.0, 30.0, "end") == (70.0, 30.0)
    assert crop_window(10.0, 30.0) == (0.0, 10.0)  # short track: all of it
    assert crop_window(600.0, 30.0, "center", seg_start_s=200.0, seg_length_s=100.0) == (235.0, 30.0)
    assert crop_window(600.0, 30.0, "end", seg_start_s=200.0, seg_length_s=100.0) == (270.0, 30.0)
    assert crop_window(600.0, 30.0, "center", seg_start_s=590.0) == (590.0, 10.0)  # last CUE track, no length
    assert crop_window(600.0, 30.0, "start", seg_start_s=580.0, seg_length_s=100.0) == (580.0, 20.0)  # past EOF
    with pytest.raises(CropError, match="crop_position"):
        crop_window(100.0, 30.0, "middle")
    with pytest.raises(CropError, match="crop_seconds"):
        load_crop("/nonexistent.flac", OUT, crop_s=0.0)


@pytest.mark.parametrize("fmt", ["flac", "alac"])
def test_cue_segment(encoded, reference, fmt):
    clip = load_crop(encoded[fmt], OUT, crop_s=2.0, seg_start_s=6.0, seg_length_s=4.0)
    assert clip.start_s == pytest.approx(7.0) and clip.duration_s == pytest.approx(4.0)
    np.testing.assert_allclose(clip.samples[200:-200], reference[7 * OUT:9 * OUT][200:-200], atol=2e-3)


def test_short_track_uses_what_it_has(tmp_path):
    path = write_audio(tmp_path / "short.flac", _signal(2.5), SR, "flac")
    clip = load_crop(path, OUT, crop_s=30.0)
    assert clip.start_s == 0.0 and len(clip.samples) == int(2.5 * OUT)


def _long_wav(path: Path, minutes: float) -> Path:
    """A long but small file: 8 kHz mono 16-bit, a 440 Hz tone written block by block."""
    rate, block = 8000, 8000 * 60
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(block) / rate)).astype(np.float32)
    with sf.SoundFile(path, "w", rate, 1, "PCM_16", format="WAV") as f:
        for _ in range(int(minutes)):
            f.write(tone)
    return path


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> Path:
    return _long_wav(tmp_path_factory.mktemp("long") / "long.wav", 16)


def test_too_long_is_skipped_and_segment_length_counts(long_wav):
    with pytest.raises(TrackTooLong, match="max_track_minutes"):
        load_crop(long_wav, OUT, crop_s=4.0, max_duration_s=900.0)
    assert issubclass(TrackTooLong, DecodeError)
    clip = load_crop(long_wav, 8000, crop_s=4.0, seg_start_s=60.0, seg_length_s=240.0)  # a 4-minute CUE track
    assert clip.start_s == pytest.approx(178.0) and clip.duration_s == 240.0
    with pytest.raises(TrackTooLong):
        load_crop(long_wav, 8000, crop_s=4.0, seg_start_s=0.0, seg_length_s=950.0)


def test_crop_of_long_file_reads_only_the_crop(long_wav):
    tracemalloc.start()
    try:
        clip = load_crop(long_wav, 8000, crop_s=4.0, max_duration_s=10 * 3600)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(clip.samples) == 4 * 8000 and clip.start_s == pytest.approx(478.0)
    assert peak < 2_000_000  # the file holds 15 MB of samples; the crop is 128 kB


def test_pyav_seeks_and_stops_early(tmp_path, monkeypatch):
    """A 10-minute ALAC file: a 4 s crop from its middle decodes a handful of frames, not all ~1200."""
    rate = 8000
    t = np.arange(600 * rate) / rate
    path = write_audio(tmp_path / "long.m4a", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, "alac")
    decoded = []
    real = audio._planar
    monkeypatch.setattr(audio, "_planar", lambda frame: decoded.append(frame.samples) or real(frame))
    clip = load_crop(path, rate, crop_s=4.0, max_duration_s=3600)
    assert clip.decoder == "pyav" and clip.start_s == pytest.approx(298.0) and len(clip.samples) == 4 * rate
    assert sum(decoded) < 10 * rate, f"decoded {sum(decoded)} samples for a {4 * rate}-sample crop"
    expected = (0.3 * np.sin(2 * np.pi * 440 * (298.0 + np.arange(4 * rate) / rate))).astype(np.float32)
    np.testing.assert_allclose(clip.samples, expected, atol=1e-3)  # sample-exact after the seek


@pytest.mark.parametrize("failure", ["short", "error"])
def test_soundfile_short_read_or_error_falls_back_to_pyav(encoded, reference, monkeypatch, failure):
    real_read = sf.SoundFile.read

    def broken_read(self, frames=-1, *args, **kwargs):
        if failure == "error":
            raise RuntimeError("Internal psf_fseek() failed.")
        return real_read(self, frames, *args, **kwargs)[: frames // 3]  # libsndfile stopping mid-crop

    monkeypatch.setattr(sf.SoundFile, "read", broken_read)
    clip = load_crop(encoded["opus"], OUT, crop_s=4.0)
    assert clip.decoder == "pyav" and len(clip.samples) == 4 * OUT
    lag, corr = _lag_and_corr(clip.samples, reference, round(clip.start_s * OUT), max_lag=int(0.05 * OUT))
    assert corr > 0.99


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["empty", "text_as_mp3", "random_as_ogg", "header_only_flac", "truncated_m4a",
                                  "truncated_mp3", "missing", "directory"])
def test_bad_files_raise_decode_error(tmp_path, encoded, kind):
    if kind == "empty":
        path = _write_bytes(tmp_path / "empty.flac", b"")
    elif kind == "text_as_mp3":
        path = _write_bytes(tmp_path / "notes.mp3", b"these are my lyrics, not audio\n" * 200)
    elif kind == "random_as_ogg":
        path = _write_bytes(tmp_path / "noise.ogg", np.random.default_rng(0).bytes(50_000))
    elif kind == "header_only_flac":
        path = _write_bytes(tmp_path / "cut.flac", encoded["flac"].read_bytes()[:100])
    elif kind == "truncated_m4a":  # the MP4 index sits at the end: cut, nothing is playable
        path = _write_bytes(tmp_path / "cut.m4a", encoded["m4a"].read_bytes()[:-20_000])
    elif kind == "truncated_mp3":  # the Xing header still promises 12 s; audio stops at 3 s, before the crop
        data = encoded["mp3"].read_bytes()
        path = _write_bytes(tmp_path / "cut.mp3", data[: len(data) // 4])
    elif kind == "missing":
        path = tmp_path / "gone.flac"
    else:
        path = tmp_path
    with pytest.raises(DecodeError) as err:
        load_crop(path, OUT, crop_s=4.0)
    message = str(err.value)
    assert "\n" not in message and (str(path) in message)
    if kind in ("empty", "text_as_mp3", "random_as_ogg", "missing", "directory"):  # no header to believe either
        with pytest.raises(DecodeError):
            probe_duration(path)


def test_nan_samples_are_an_error_and_silence_is_fine(tmp_path):
    data = np.zeros((SR * 3, 1), np.float32)
    path = tmp_path / "silence.wav"
    sf.write(path, data, SR, subtype="FLOAT")
    assert np.all(load_crop(path, OUT, 2.0).samples == 0)
    data[SR] = np.nan
    sf.write(path, data, SR, subtype="FLOAT")
    with pytest.raises(DecodeError, match="NaN"):
        load_crop(path, OUT, 2.0)


def _force_pyav(monkeypatch) -> None:
    def unavailable(*args, **kwargs):
        raise audio._Fallback("forced")

    monkeypatch.setattr(audio, "_soundfile_crop", unavailable)


@pytest.mark.parametrize("decoder", ["soundfile", "pyav"])
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_sample_formats(tmp_path, monkeypatch, decoder, subtype):
    rate = 8000
    x = _signal(3, rate, channels=2)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, x, rate, subtype=subtype)
    if decoder == "pyav":
        _force_pyav(monkeypatch)
    clip = load_crop(path, rate, crop_s=2.0)
    assert clip.decoder == decoder
    atol = 2 / 128 if subtype == "PCM_U8" else 1e-4
    np.testing.assert_allclose(clip.samples, x[rate // 2: rate // 2 + 2 * rate].mean(axis=1), atol=atol)


@pytest.mark.parametrize("fmt", ["wav", "flac", "alac"])
def test_six_channels_are_averaged(tmp_path, fmt):
    rate = 8000
    t = np.arange(3 * rate) / rate
    x = np.stack([0.1 * (c + 1) * np.sin(2 * np.pi * 300 * t) for c in range(6)], axis=1).astype(np.float32)
    path = write_audio(tmp_path / f"six.{FORMATS[fmt]}", x, rate, fmt)
    clip = load_crop(path, rate, crop_s=2.0)
    np.testing.assert_allclose(clip.samples, x[rate // 2: rate // 2 + 2 * rate].mean(axis=1), atol=1e-3)


@pytest.mark.parametrize("rate", [8000, 192000])
def test_extreme_sample_rates_resample(tmp_path, rate):
    t = np.arange(3 * rate) / rate
    path = tmp_path / f"tone_{rate}.flac"
    sf.write(path, (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), rate, subtype="PCM_24")
    clip = load_crop(path, OUT, crop_s=2.0)
    assert len(clip.samples) == 2 * OUT
    spectrum = np.abs(np.fft.rfft(clip.samples))
    assert np.argmax(spectrum) * OUT / len(clip.samples) == pytest.approx(1000, abs=1)


_THREADS = """
import os, sys
import av
from recsys.embedder import audio
from recsys.embedder.decoding import _init_decoding
_init_decoding()  # what every decode worker runs first
threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
if sys.argv[2] == "auto":  # FFmpeg's own choice: frame threads for FLAC
    container = av.open(sys.argv[1])
    stream = container.streams.audio[0]
    stream.codec_context.thread_type, stream.codec_context.thread_count = "AUTO", 0
else:
    container, stream = audio._open(sys.argv[1])
next(container.decode(stream))
print(threads() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts the process's threads in /proc")
def test_a_decode_worker_decodes_on_one_thread(encoded):
    """Threads of a decode worker counted while FLAC decodes (a fresh process each: FFmpeg's threads outlive the
    close): FFmpeg left to choose starts frame threads, one per core and more, which multiplied by the workers
    oversubscribed the CPU; the worker's decoder starts none."""
    def extra(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _THREADS, str(encoded["flac"]), mode], capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        return int(out.stdout.strip())

    assert extra("capped") == 0
    if (os.cpu_count() or 1) > 1:
        assert extra("auto") > 0  # the count sees decoder threads when there are some


def test_module_does_not_import_torch():
    code = "import sys, recsys.embedder.audio, recsys.synth.audio; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _sparse_wav(path, frames: int, rate: int, channels: int) -> None:
    """A 16-bit PCM WAV whose data is a hole in the file (reads as silence): big to read, free to make."""
    import struct

    size = frames * channels * 2
    header = (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
              + b"data" + struct.pack("<I", size))
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + size)


def _peak_bytes(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_header_claiming_a_huge_sample_rate_reads_nothing(tmp_path):
    """A WAV header claiming 100 MHz made a worker read the whole file (2.4 GB RSS for 512 MB): refused from the
    header, before a sample is read."""
    path = tmp_path / "100 MHz.wav"
    _sparse_wav(path, 32 * 1024 * 1024, 100_000_000, 1)  # 64 MB: 0.3 s at the claimed rate, well under any limit

    def load():
        with pytest.raises(DecodeError, match="claims 100000000 Hz"):
            load_crop(path, 22050)

    assert _peak_bytes(load) < 8 * 2**20


def test_many_channels_are_mixed_down_block_by_block(tmp_path):
    """A crop of a 64-channel file never holds all channels of the crop at once."""
    path = tmp_path / "64 channels.wav"
    _sparse_wav(path, 8000 * 40, 8000, 64)
    clip = None

    def load():
        nonlocal clip
        clip = load_crop(path, 8000, crop_s=30.0)

    assert _peak_bytes(load) < 48 * 2**20  # 61 MB (and more) as one float32 (frames, 64) array
    assert clip is not None and clip.samples.shape == (240000,) and not clip.samples.any()
