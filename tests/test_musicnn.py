"""The musicnn encoder: a PyTorch port held numerically equal to TensorFlow's MSD_musicnn.

The fixture ``tests/data/musicnn_reference.npz`` was written by ``scripts/convert_musicnn.py`` (TensorFlow 2.15.1,
librosa 0.11.0, musicnn 0.1.0): three synthetic clips as int16 PCM, librosa's log-mel of them, and the restored
TensorFlow graph's penultimate layer and tag logits for each 187-frame patch.

Tolerances, as measured when the port was written (float32 on the CPU) and the bound chosen above them:
log-mel vs librosa max abs 9.7e-5 (values up to ~4.5) -> 3e-4; penultimate vs TensorFlow from the same log-mel
6.6e-6 (values up to ~3.1) -> 5e-5; tag logits 7.6e-6 -> 5e-5; penultimate from the waves (port's own log-mel)
1.3e-5 -> 1e-4.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys.embedder.encoders import EncoderError, build_encoder, encoder_id
from recsys.embedder.musicnn import (
    AMP_DTYPE,
    AMP_TOLERANCE,
    MSD_TAGS,
    PATCH_FRAMES,
    WEIGHTS,
    MusicnnEncoder,
    load_weights,
)

REFERENCE = Path(__file__).parent / "data" / "musicnn_reference.npz"
CLIPS = ("a", "b", "c")


@pytest.fixture(scope="module")
def enc() -> MusicnnEncoder:
    return build_encoder("musicnn", device="cpu")


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def _wave(ref: dict, clip: str) -> torch.Tensor:
    return torch.from_numpy(ref[f"{clip}_pcm"].astype(np.float32) / 32768.0).unsqueeze(0)


def test_every_converted_weight_is_loaded_and_used(enc: MusicnnEncoder) -> None:
    weights = load_weights(WEIGHTS)
    in_file = sum(v.size for v in weights.values())
    in_model = sum(t.numel() for k, t in enc.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert in_file == in_model == 792079
    assert enc.name == "musicnn" and enc.dim == 200 and enc.sample_rate == 16000
    assert enc.device == torch.device("cpu") and not enc.training


@pytest.mark.parametrize("clip", CLIPS)
def test_frontend_equals_librosa(enc: MusicnnEncoder, ref: dict, clip: str) -> None:
    with torch.inference_mode():
        logmel = enc.frontend(_wave(ref, clip))[0].numpy()
    assert logmel.shape == ref[f"{clip}_logmel"].shape  # 1 + samples // 256 frames, centred
    np.testing.assert_allclose(logmel, ref[f"{clip}_logmel"], rtol=0, atol=3e-4)


@pytest.mark.parametrize("clip", CLIPS)
def test_patch_outputs_equal_tensorflow(enc: MusicnnEncoder, ref: dict, clip: str) -> None:
    with torch.inference_mode():
        patches = enc.patches(torch.from_numpy(ref[f"{clip}_logmel"]).unsqueeze(0))[0]
        penultimate, logits = enc.patch_outputs(patches)
        from_waves = enc.patch_outputs(enc.patches(enc.frontend(_wave(ref, clip)))[0])[0]
    expected = ref[f"{clip}_penultimate"]
    assert penultimate.shape == expected.shape  # the remainder after the last whole patch is dropped
    np.testing.assert_allclose(penultimate.numpy(), expected, rtol=0, atol=5e-5)
    np.testing.assert_allclose(logits.numpy(), ref[f"{clip}_logits"], rtol=0, atol=5e-5)
    np.testing.assert_allclose(from_waves.numpy(), expected, rtol=0, atol=1e-4)


def test_encode_is_the_normalised_mean_of_the_patch_vectors(enc: MusicnnEncoder, ref: dict) -> None:
    v = enc.encode(_wave(ref, "b"))
    expected = F.normalize(torch.from_numpy(ref["b_penultimate"]).mean(0, keepdim=True), dim=1)
    assert v.shape == (1, 200) and v.dtype == torch.float32
    assert torch.allclose(v.norm(dim=1), torch.ones(1), atol=1e-6)
    assert torch.allclose(v, expected, atol=1e-5)
    with torch.inference_mode():
        unnormalised = enc.embed_logmel(enc.frontend(_wave(ref, "b")))
    assert unnormalised.norm() > 2.0  # embed_logmel is the raw mean, for training


def test_tags_are_the_mean_of_tensorflows_per_patch_sigmoids(enc: MusicnnEncoder, ref: dict) -> None:
    """musicnn's taggram is each patch's sigmoid and its top_tags ranks by the taggram's mean: the same here."""
    from recsys.embedder.interface import tag_names

    v, probs = enc.encode_with_tags(_wave(ref, "b"))
    expected = torch.sigmoid(torch.from_numpy(ref["b_logits"])).mean(0, keepdim=True)
    assert tag_names(enc) == MSD_TAGS and len(MSD_TAGS) == probs.shape[1] == 50
    assert torch.allclose(probs, expected, atol=1e-4)
    assert torch.allclose(v, enc.encode(_wave(ref, "b")), atol=1e-6)


def test_batch_equals_one_at_a_time(enc: MusicnnEncoder) -> None:
    g = torch.Generator().manual_seed(3)
    t = torch.arange(4 * 16000) / 16000
    waves = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) + 0.05 * torch.randn(t.shape, generator=g)
                         for f in (110.0, 440.0, 1500.0)])
    batch = enc.encode(waves)
    single = torch.cat([enc.encode(w.unsqueeze(0)) for w in waves])
    assert torch.allclose(batch, single, atol=1e-5)
    assert (batch @ batch.T).fill_diagonal_(0).max() < 0.999  # different sounds, different vectors


def test_short_clip_is_tiled_to_one_patch(enc: MusicnnEncoder, ref: dict) -> None:
    wave = _wave(ref, "a")[:, :16000]  # 1 s: 63 frames
    with torch.inference_mode():
        logmel = enc.frontend(wave)
        patches = enc.patches(logmel)
        assert patches.shape == (1, 1, 96, PATCH_FRAMES)
        tiled = torch.cat([logmel] * 3, dim=-1)[..., :PATCH_FRAMES]
        assert torch.equal(patches[0, 0], tiled[0])
    v = enc.encode(wave)
    assert v.shape == (1, 200) and torch.isfinite(v).all()
    assert torch.allclose(v.norm(dim=1), torch.ones(1), atol=1e-6)
    for n in (0, 1, 300):  # no samples, one sample, one frame's worth: still a unit vector
        v = enc.encode(torch.zeros(2, n))
        assert v.shape == (2, 200) and torch.isfinite(v).all()


def test_inference_front_end_equals_its_definition(enc: MusicnnEncoder, ref: dict) -> None:
    """The inference front-end (sign-folded filters pooled before the batch norm, the three temporal filters as
    one zero-padded convolution) is the same function as the network's definition, relu -> batch norm -> max over
    frequency per filter: the fast path cannot drift from it."""
    logmel = torch.from_numpy(ref["b_logmel"][:, : 2 * PATCH_FRAMES]).reshape(96, 2, PATCH_FRAMES).transpose(0, 1)
    with torch.inference_mode():
        x = enc.input_bn(logmel.reshape(2, 1, -1)).reshape(2, 96, PATCH_FRAMES).unsqueeze(1)

        def definition(conv, bn, left: int, right: int) -> torch.Tensor:
            y = torch.relu(conv(F.pad(x, (left, right))))
            return bn(y.flatten(2)).view_as(y).amax(2)

        timbral = [definition(c, bn, 3, 3) for c, bn in zip(enc.timbral, enc.timbral_bn, strict=True)]
        temporal = [definition(c, bn, (c.kernel_size[1] - 1) // 2, c.kernel_size[1] // 2)
                    for c, bn in zip(enc.temporal, enc.temporal_bn, strict=True)]
        fast_timbral = [enc._freq_max(c, bn, F.pad(x, (3, 3))) for c, bn in zip(enc.timbral, enc.timbral_bn,
                                                                                 strict=True)]
        separate = [enc._freq_max(c, bn, F.pad(x, ((c.kernel_size[1] - 1) // 2, c.kernel_size[1] // 2)))
                    for c, bn in zip(enc.temporal, enc.temporal_bn, strict=True)]
        combined = enc._temporal_inference(x)
    assert combined.shape == (2, 153, PATCH_FRAMES)
    # the combined convolution adds exact zeros to the separate ones' sums: equal up to the order oneDNN sums in
    np.testing.assert_allclose(combined.numpy(), torch.cat(separate, 1).numpy(), rtol=0, atol=1e-6)
    for fast, slow in zip(fast_timbral + [combined], timbral + [torch.cat(temporal, 1)], strict=True):
        np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=0, atol=2e-5)  # values up to ~10


def test_encoder_id_is_stable(enc: MusicnnEncoder) -> None:
    again = MusicnnEncoder()
    assert encoder_id(again) == encoder_id(enc) == "1962df597ab8e8a1"  # version 2: rows carry tags
    other = MusicnnEncoder()
    with torch.no_grad():
        other.dense.bias[0] += 1e-3
    assert encoder_id(other) != encoder_id(enc)


def test_missing_or_foreign_weights_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="cannot be read"):
        MusicnnEncoder(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3, dtype=np.float32))
    with pytest.raises(EncoderError, match="lack 'batch_normalization"):
        MusicnnEncoder(tmp_path / "other.npz")


def test_embed_logmel_trains(ref: dict) -> None:
    """The hook a fine-tuning stage uses: differentiable, batch norm on batch statistics in training mode."""
    enc = MusicnnEncoder()
    enc.train()
    logmel = torch.from_numpy(ref["b_logmel"][:, :PATCH_FRAMES]).unsqueeze(0).repeat(2, 1, 1)
    logmel[1] += 0.1 * torch.randn(logmel[1].shape, generator=torch.Generator().manual_seed(0))
    before = enc.timbral_bn[0].running_mean.clone()
    out = enc.embed_logmel(logmel)
    out.pow(2).sum().backward()
    assert out.shape == (2, 200)
    assert enc.timbral[0].weight.grad is not None and enc.timbral[0].weight.grad.abs().sum() > 0
    assert not torch.equal(enc.timbral_bn[0].running_mean, before)  # the front-end batch norm saw the batch


def test_half_precision_keeps_the_vectors(enc: MusicnnEncoder, ref: dict) -> None:
    """What CUDA autocast does, emulated on the CPU (float16 convolutions): the vectors move by < AMP_TOLERANCE."""
    logmel = torch.from_numpy(ref["b_logmel"][:, :PATCH_FRAMES]).unsqueeze(0)
    with torch.inference_mode():
        full = F.normalize(enc.embed_logmel(logmel), dim=1)
        with torch.autocast("cpu", dtype=AMP_DTYPE):
            half = F.normalize(enc.embed_logmel(logmel).float(), dim=1)
    assert (half - full).abs().max() < AMP_TOLERANCE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(enc: MusicnnEncoder, ref: dict) -> None:
    wave = _wave(ref, "b")
    gpu = build_encoder("musicnn", device="cuda")
    assert gpu.device.type == "cuda" and encoder_id(gpu) == encoder_id(enc)
    cpu_v = enc.encode(wave)
    assert (gpu.encode(wave.cuda()).cpu() - cpu_v).abs().max() < AMP_TOLERANCE
    gpu.amp = False
    assert (gpu.encode(wave.cuda()).cpu() - cpu_v).abs().max() < 1e-4


def test_imports_without_the_storage_and_decoding_packages() -> None:
    """A GPU machine with only torch and numpy must run the encoders (benchmarks/gpu_check.sh)."""
    code = (
        "import sys\n"
        "for m in ('lancedb', 'faiss', 'av', 'mlflow', 'soundfile', 'soxr', 'pyarrow', 'mutagen', 'click', 'yaml'):\n"
        "    sys.modules[m] = None\n"
        "import torch\n"
        "from recsys.embedder.encoders import build_encoder\n"
        "import recsys.embedder.features, recsys.embedder.musicnn\n"
        "for name in ('dsp', 'musicnn', 'cnn'):\n"
        "    v = build_encoder(name, device='cpu').encode(torch.zeros(1, 16000))\n"
        "    assert v.shape[0] == 1, name\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
