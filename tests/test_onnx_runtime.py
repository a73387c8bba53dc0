"""``embed.runtime: onnx``: musicnn's patch network exported and run by ONNX Runtime on the CPU.

Held to the same TensorFlow fixture and bounds as the torch port (tests/test_musicnn.py), with the same encoder id;
without onnxruntime the encoder stays on torch and the embed report says why.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.app.embed import embed_library
from recsys.app.settings import command_settings
from recsys.embedder.active import resolve_encoder
from recsys.embedder.onnx_cpu import onnx_file
from recsys.index.store import TrackStore

REFERENCE = Path(__file__).parent / "data" / "musicnn_reference.npz"  # TensorFlow's outputs (tests/test_musicnn.py)
CLIPS = ("a", "b", "c")


def _wave(ref: dict, clip: str) -> torch.Tensor:
    return torch.from_numpy(ref[f"{clip}_pcm"].astype(np.float32) / 32768.0).unsqueeze(0)


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The musicnn encoder on torch and on ONNX Runtime (exported into a fresh home)."""
    home = tmp_path_factory.mktemp("onnx-home")
    plain = resolve_encoder("musicnn", home, "cpu")
    onnx = resolve_encoder("musicnn", home, "cpu", runtime="onnx")
    return plain, onnx, home


def test_onnx_vectors_equal_tensorflow_and_the_torch_port(both, ref) -> None:
    plain, onnx, home = both
    assert onnx.encoder.runtime_label == "onnxruntime" and onnx.encoder.patch_runner is not None
    assert onnx_file(home, onnx.encoder_id).is_file()  # converted into the home, nothing fetched
    assert onnx.encoder_id == plain.encoder_id  # the same vectors: rows embedded by either stay current
    for clip in CLIPS:
        with torch.inference_mode():
            patches = onnx.encoder.patches(torch.from_numpy(ref[f"{clip}_logmel"]).unsqueeze(0))[0]
            penultimate, logits = onnx.encoder.patch_runner(patches)
        np.testing.assert_allclose(penultimate.numpy(), ref[f"{clip}_penultimate"], rtol=0, atol=5e-5)
        np.testing.assert_allclose(logits.numpy(), ref[f"{clip}_logits"], rtol=0, atol=5e-5)
        # the whole encode goes through the runner, and agrees with torch's to float32 rounding
        vectors, probs = onnx.encoder.encode_with_tags(_wave(ref, clip))
        torch_vectors, torch_probs = plain.encoder.encode_with_tags(_wave(ref, clip))
        assert float((vectors - torch_vectors).abs().max()) < 1e-5
        assert float((probs - torch_probs).abs().max()) < 1e-5


def test_onnx_runner_is_used_for_inference_only(both, monkeypatch) -> None:
    _, onnx, _ = both
    calls = []
    runner = onnx.encoder.patch_runner
    monkeypatch.setattr(onnx.encoder, "patch_runner", lambda p: calls.append(len(p)) or runner(p))
    waves = 0.1 * torch.randn(2, 6 * 16000, generator=torch.Generator().manual_seed(3))
    onnx.encoder.encode(waves)
    assert calls == [4]  # 2 clips x 2 patches, one batch
    out = onnx.encoder.embed_logmel(onnx.encoder.frontend(waves))  # training's path: torch, with gradients
    assert out.requires_grad and calls == [4]


def test_a_damaged_converted_file_is_converted_again(tmp_path) -> None:
    plain = resolve_encoder("musicnn", tmp_path, "cpu")
    path = onnx_file(tmp_path, plain.encoder_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a graph")
    again = resolve_encoder("musicnn", tmp_path, "cpu", runtime="onnx")
    assert again.encoder.runtime_label == "onnxruntime" and path.stat().st_size > 1_000_000


def _embed(lib, home, monkeypatch, without_onnxruntime: bool):
    with monkeypatch.context() as patch:
        if without_onnxruntime:
            patch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: its import fails
        settings = command_settings(None, str(home), db=str(lib.db),
                                    embed={"encoder": "musicnn", "device": "cpu", "workers": 1})  # default runtime
        report = embed_library(settings)
    assert report.embedded == 12 and report.failed == 0
    table, vectors = TrackStore.open(home, writable=False).read_all()
    return report, dict(zip(table.column("key").to_pylist(), vectors, strict=True))


def test_embed_on_onnx_and_without_onnxruntime_on_torch_saying_why(small_library, monkeypatch, tmp_path) -> None:
    fallback, on_torch = _embed(small_library, tmp_path / "torch", monkeypatch, without_onnxruntime=True)
    assert fallback.device == ("cpu, torch (embed.runtime onnx: onnxruntime is not installed: pip install "
                               "onnxruntime, or set embed.runtime: torch)"), fallback.device
    assert not (tmp_path / "torch" / "models" / "onnx").exists()
    report, on_onnx = _embed(small_library, tmp_path / "onnx", monkeypatch, without_onnxruntime=False)
    assert report.device == "cpu, onnxruntime" and report.encoder_id == fallback.encoder_id
    assert on_onnx.keys() == on_torch.keys()
    assert max(float(np.abs(on_onnx[k] - on_torch[k]).max()) for k in on_onnx) < 1e-5


def test_other_encoders_stay_on_torch_without_a_word(tmp_path) -> None:
    dsp = resolve_encoder("dsp", tmp_path, "cpu", runtime="onnx")  # the default runtime, whatever the encoder
    assert dsp.encoder.runtime_label == "" and not (tmp_path / "models").exists()


def test_a_failed_conversion_leaves_the_encoder_on_torch_saying_why(tmp_path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "onnx").write_text("a file where the folder goes")  # the export cannot write there
    resolved = resolve_encoder("musicnn", tmp_path, "cpu", runtime="onnx")
    label = resolved.encoder.runtime_label
    assert label.startswith("torch (embed.runtime onnx: exporting the network to ") and "\n" not in label, label
    assert resolved.encoder.patch_runner is None
    assert resolved.encoder.encode(torch.zeros(1, 16000)).shape == (1, 200)  # and torch encodes
