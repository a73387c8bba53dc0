"""Encoders: the dsp and cnn built-ins, encoder_id, plug-ins, devices and checkpoints."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from recsys.embedder.encoders import (
    DSP_DIM,
    DSP_GROUPS,
    CnnEncoder,
    DspEncoder,
    Encoder,
    EncoderError,
    build_encoder,
    encoder_id,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
)
from recsys.errors import RecsysError

SR = 22050


def _tones(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A held harmonic note with vibrato: tonal, steady, dark."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(150, 400)
    phase = 2 * np.pi * f0 * t + 0.3 * np.sin(2 * np.pi * 5 * t)
    return sum(0.3 / k * np.sin(k * phase) for k in range(1, 5))


def _noise_bursts(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Gated white noise at a steady tempo: percussive, noisy, bright."""
    n = int(seconds * SR)
    period = int(SR * 60 / rng.uniform(100, 140))
    env = np.exp(-np.arange(n) % period / (0.03 * SR))
    return 0.5 * env * rng.standard_normal(n)


def _chords(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Major triads changing every second: tonal with harmonic movement."""
    t = np.arange(int(seconds * SR)) / SR
    root = 220 * 2 ** (rng.integers(0, 12) / 12)
    out = np.zeros_like(t)
    for i, step in enumerate((0, 5, 7, 0, 5)[: int(np.ceil(seconds))]):
        seg = (t >= i) & (t < i + 1)
        for semis in (0, 4, 7):
            f = root * 2 ** ((step + semis) / 12)
            out[seg] += 0.15 * (np.sin(2 * np.pi * f * t[seg]) + 0.4 * np.sin(4 * np.pi * f * t[seg]))
    return out


STYLES = (_tones, _noise_bursts, _chords)


def _signals(per_style: int = 4, seconds: float = 4.0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(0)
    waves, labels = [], []
    for s, make in enumerate(STYLES):
        for _ in range(per_style):
            waves.append(make(rng, seconds).astype(np.float32))
            labels.append(s)
    return torch.from_numpy(np.stack(waves)), np.array(labels)


@pytest.fixture(scope="module")
def dsp() -> DspEncoder:
    return DspEncoder()


@pytest.fixture(scope="module")
def cnn() -> CnnEncoder:
    return CnnEncoder()


def test_dsp_shape_norm_and_determinism(dsp: DspEncoder) -> None:
    waves, _ = _signals(2)
    v = dsp.encode(waves)
    assert v.shape == (len(waves), DSP_DIM) and v.dtype == torch.float32
    torch.testing.assert_close(v.norm(dim=1), torch.ones(len(waves)))
    assert torch.equal(v, DspEncoder().encode(waves))
    assert isinstance(dsp, Encoder) and dsp.dim == DSP_DIM == sum(n for _, n in DSP_GROUPS)


@pytest.mark.parametrize("wave", [
    torch.zeros(1, SR * 3),  # digital silence
    torch.zeros(1, SR // 2),  # 0.5 s
    torch.zeros(1, 1),  # one sample
    0.3 * torch.ones(1, SR // 2),  # DC
    torch.rand(1, SR * 2, generator=torch.Generator().manual_seed(0)) * 2 - 1,  # full-scale noise
    torch.sign(torch.randn(1, SR, generator=torch.Generator().manual_seed(1))),  # clipped, +-1
])
def test_dsp_finite_unit_vector_on_edge_cases(dsp: DspEncoder, wave: torch.Tensor) -> None:
    v = dsp.encode(wave)
    assert torch.isfinite(v).all()
    assert float(v.norm()) == pytest.approx(1.0, abs=1e-5)


def test_dsp_batched_equals_unbatched(dsp: DspEncoder) -> None:
    waves, _ = _signals(2)
    batched = dsp.encode(waves)
    single = torch.cat([dsp.encode(w.unsqueeze(0)) for w in waves])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_dsp_no_dimension_dominates(dsp: DspEncoder) -> None:
    """Over varied signals the spread of the vectors is shared: no single coordinate carries most of it."""
    waves, _ = _signals(4)
    v = dsp.encode(waves)
    var = v.var(dim=0)
    assert float(var.max() / var.sum()) < 0.2  # 1/90 would be perfectly even
    assert int((var > 1e-6).sum()) > DSP_DIM // 2  # most features actually vary
    # and each group's share of the squared norm is bounded: equal group weighting at work
    start = 0
    for _, n in DSP_GROUPS:
        share = float((v[:, start: start + n] ** 2).sum(1).mean())
        assert 0.05 < share < 0.45  # raw, unscaled features give timbre 0.63 and tonal 0.01
        start += n


def test_dsp_same_style_is_nearest(dsp: DspEncoder) -> None:
    waves, labels = _signals(4)
    v = dsp.encode(waves)
    sim = v @ v.T
    sim.fill_diagonal_(-2.0)
    nearest = sim.argmax(dim=1).numpy()
    assert (labels[nearest] == labels).all()
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
    s = (v @ v.T).numpy()
    assert s[same].mean() > s[~same].mean() + 0.2


def test_dsp_is_key_invariant_enough(dsp: DspEncoder) -> None:
    """A chord progression moved up a fifth stays nearer to itself than to a noise pattern."""
    t = np.arange(3 * SR) / SR
    chord = lambda root: sum(np.sin(2 * np.pi * root * 2 ** (s / 12) * t) for s in (0, 4, 7))  # noqa: E731
    noise = _noise_bursts(np.random.default_rng(3), 3.0)
    v = dsp.encode(torch.from_numpy(np.stack([chord(220.0), chord(330.0), noise]).astype(np.float32) * 0.2))
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])
    tonal = slice(DSP_DIM - 13, DSP_DIM)
    raw = dsp.raw_features(torch.from_numpy(np.stack([chord(220.0), chord(220.0 * 2 ** (5 / 12))])).float() * 0.2)
    torch.testing.assert_close(raw[0, tonal][:6], raw[1, tonal][:6], atol=0.08, rtol=0.0)


def test_dsp_id_changes_with_its_constants() -> None:
    a, b = DspEncoder(), DspEncoder()
    assert encoder_id(a) == encoder_id(b)
    b.scale[0] *= 2
    assert encoder_id(a) != encoder_id(b)


def test_cnn_shape_norm_and_variable_length(cnn: CnnEncoder) -> None:
    for seconds in (0.05, 1.0, 2.5):
        waves = torch.randn(3, int(seconds * cnn.sample_rate), generator=torch.Generator().manual_seed(0)) * 0.1
        v = cnn.encode(waves)
        assert v.shape == (3, cnn.dim) == (3, 256)
        assert torch.isfinite(v).all()
        torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    assert cnn.encode(torch.zeros(2, 0)).shape == (2, 256)


def test_cnn_frontend_and_embedding_are_separate(cnn: CnnEncoder) -> None:
    waves = torch.randn(2, cnn.sample_rate, generator=torch.Generator().manual_seed(0)) * 0.1
    logmel = cnn.frontend(waves)
    assert logmel.shape[:2] == (2, cnn.config["n_mels"])
    with torch.no_grad():
        assert cnn.embed_logmel(logmel).shape == (2, cnn.dim)
        torch.testing.assert_close(torch.nn.functional.normalize(cnn.embed_logmel(logmel), dim=1), cnn.encode(waves))


def test_cnn_encode_is_eval_mode_and_restores_train_mode() -> None:
    enc = CnnEncoder()
    waves = torch.randn(4, 16000, generator=torch.Generator().manual_seed(0))
    expected = enc.encode(waves)
    enc.train()
    got = enc.encode(waves)
    assert enc.training
    torch.testing.assert_close(got, expected)  # batch statistics were not used
    torch.testing.assert_close(enc.encode(waves[:1]), expected[:1], rtol=1e-4, atol=1e-5)


def test_cnn_untrained_is_deterministic_without_touching_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = CnnEncoder()
    assert torch.equal(torch.rand(1), before)
    b = CnnEncoder()
    assert encoder_id(a) == encoder_id(b)
    assert encoder_id(CnnEncoder({"seed": 1})) != encoder_id(a)


def test_encoder_id_changes_when_weights_change() -> None:
    enc = CnnEncoder()
    before = encoder_id(enc)
    with torch.no_grad():
        enc.embedding.weight[0, 0] += 1e-3
    assert encoder_id(enc) != before


def test_encoder_id_is_stable_across_processes(dsp: DspEncoder, cnn: CnnEncoder) -> None:
    code = ("from recsys.embedder.encoders import DspEncoder, CnnEncoder, encoder_id;"
            "print(encoder_id(DspEncoder()), encoder_id(CnnEncoder()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [encoder_id(dsp), encoder_id(cnn)]


def test_checkpoint_round_trip(tmp_path) -> None:
    enc = CnnEncoder({"channels": [8, 16, 16, 32, 32], "dim": 32})
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.01)
    path = tmp_path / "models" / "cnn.pt"
    save_checkpoint(enc, path, extra={"epochs": 3, "loss": 0.5})
    assert [p.name for p in path.parent.iterdir()] == ["cnn.pt"]  # no temp file left behind
    loaded = load_checkpoint(path, device="cpu")
    waves = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.encode(waves), enc.encode(waves))
    assert encoder_id(loaded) == encoder_id(enc) != encoder_id(CnnEncoder())
    assert loaded.extra == {"epochs": 3, "loss": 0.5} and not loaded.training
    assert encoder_id(build_encoder("cnn", device="cpu", checkpoint=path)) == encoder_id(enc)


class _Arbitrary:
    """Any picklable class: weights_only loading must refuse it."""


def test_checkpoint_with_pickled_object_is_refused(tmp_path) -> None:
    enc = CnnEncoder()
    path = tmp_path / "evil.pt"
    torch.save({"format": 2, "arch": "cnn", "config": enc.config, "state_dict": enc.state_dict(),
                "extra": {"x": _Arbitrary()}}, path)
    with pytest.raises(EncoderError, match="refused"):
        load_checkpoint(path, device="cpu")
    with pytest.raises(EncoderError, match="JSON"):
        save_checkpoint(enc, tmp_path / "bad.pt", extra={"x": _Arbitrary()})
    assert not (tmp_path / "bad.pt").exists()


def test_bad_checkpoints_give_encoder_errors(tmp_path) -> None:
    enc = CnnEncoder()
    other_arch = tmp_path / "other.pt"
    torch.save({"format": 2, "arch": "transformer", "config": {}, "state_dict": {}, "extra": {}}, other_arch)
    with pytest.raises(EncoderError, match="architecture 'transformer'"):
        load_checkpoint(other_arch, device="cpu")
    mismatch = tmp_path / "mismatch.pt"
    torch.save({"format": 2, "arch": "cnn", "config": {"dim": 64}, "state_dict": enc.state_dict(), "extra": {}},
               mismatch)
    with pytest.raises(EncoderError, match="do not match"):
        load_checkpoint(mismatch, device="cpu")
    unknown = tmp_path / "unknown.pt"
    torch.save({"format": 2, "arch": "cnn", "config": {"layers": 9}, "state_dict": {}, "extra": {}}, unknown)
    with pytest.raises(EncoderError, match="layers"):
        load_checkpoint(unknown, device="cpu")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint" * 10)
    with pytest.raises(EncoderError, match="damaged"):
        load_checkpoint(corrupt, device="cpu")
    with pytest.raises(EncoderError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt", device="cpu")
    with pytest.raises(EncoderError, match="takes no checkpoint"):
        build_encoder("dsp", device="cpu", checkpoint=other_arch)


PLUGIN = '''
import torch
import torch.nn.functional as F


class Mean:
    name = "mean"
    sample_rate = 8000
    dim = 4

    def __init__(self):
        self.device = torch.device("cpu")

    def encode(self, waves):
        x = torch.stack([waves.mean(1), waves.std(1), waves.abs().amax(1), torch.ones(len(waves))], dim=1)
        return F.normalize(x, dim=1)

    def identity(self):
        return {"class": "Mean"}

    def to(self, device):
        self.device = torch.device(device)
        return self


class NoEncode:
    name = "broken"
    sample_rate = 8000
    dim = 4
    device = torch.device("cpu")

    def identity(self):
        return {}

    def to(self, device):
        return self


class Explodes:
    def __init__(self):
        raise RuntimeError("model file missing")
'''


def test_plugin_encoders(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_plugin_encoders.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    enc = build_encoder("my_plugin_encoders:Mean", device="cpu")
    v = enc.encode(torch.randn(3, 800))
    assert v.shape == (3, 4) and enc.sample_rate == 8000
    assert len(encoder_id(enc)) == 16
    with pytest.raises(EncoderError, match="lacks encode"):
        build_encoder("my_plugin_encoders:NoEncode", device="cpu")
    with pytest.raises(EncoderError, match="model file missing"):
        build_encoder("my_plugin_encoders:Explodes", device="cpu")
    with pytest.raises(EncoderError, match="has no Missing"):
        build_encoder("my_plugin_encoders:Missing", device="cpu")
    with pytest.raises(EncoderError, match="cannot import no_such_module_xyz"):
        build_encoder("no_such_module_xyz:Enc", device="cpu")
    with pytest.raises(EncoderError, match="not dsp, musicnn, cnn or module:Class"):
        build_encoder("transformer", device="cpu")


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EncoderError, match="unknown device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(EncoderError, match="no CUDA device: use --device cpu"):
            resolve_device("cuda")
        with pytest.raises(RecsysError):
            build_encoder("dsp", device="cuda")


def test_encode_rejects_wrong_shape(dsp: DspEncoder) -> None:
    with pytest.raises(EncoderError, match="batch, samples"):
        dsp.encode(torch.zeros(SR))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_encoders_on_cuda_match_cpu_and_keep_their_id() -> None:
    waves, _ = _signals(2)
    for spec in ("dsp", "cnn"):
        cpu = build_encoder(spec, device="cpu")
        gpu = build_encoder(spec, device="cuda")
        assert gpu.device.type == "cuda" and encoder_id(gpu) == encoder_id(cpu)
        if spec == "cnn":
            waves_in = waves[:, :16000]
        else:
            waves_in = waves
        torch.testing.assert_close(gpu.encode(waves_in.cuda()).cpu(), cpu.encode(waves_in), rtol=1e-3, atol=2e-3)


def test_the_encoder_table_names_each_class_by_its_own_name():
    """recsys.choices.ENCODERS is the one list of built-ins (settings, CLI, build_encoder read it); each entry builds
    the class that calls itself by that name, and the trainable ones are the checkpoint architectures."""
    from recsys.choices import ENCODERS, TRAINABLE_ENCODERS, load
    from recsys.embedder.encoders import ARCHITECTURES

    assert {name: load(entry).name for name, entry in ENCODERS.items()} == {name: name for name in ENCODERS}
    assert set(TRAINABLE_ENCODERS) == set(ARCHITECTURES) <= set(ENCODERS)
