"""The torch log-mel frontend against torchaudio 2.11 outputs recorded in tests/data (torchaudio is not installed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.embedder.features import MelSpectrogram, amplitude_to_db, log_mel, melscale_fbanks

DATA = Path(__file__).parent / "data"
REFERENCE = np.load(DATA / "torchaudio_melspectrogram_reference.npz")
CONFIGS = json.loads((DATA / "torchaudio_melspectrogram_reference.json").read_text())["configs"]


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_matches_torchaudio(i: int) -> None:
    expected = REFERENCE[f"mel_{i}"]
    mel = MelSpectrogram(**CONFIGS[i])(torch.from_numpy(REFERENCE[f"input_{i}"])).numpy()
    assert mel.shape == expected.shape
    np.testing.assert_allclose(mel, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))


def test_batched_input_gives_one_spectrogram_per_row() -> None:
    cfg = CONFIGS[0]
    x = torch.from_numpy(REFERENCE["input_0"])
    batch = torch.stack([x, 0.5 * x, torch.zeros_like(x)])
    mel = MelSpectrogram(**cfg)(batch)
    assert mel.shape == (3, cfg["n_mels"], REFERENCE["mel_0"].shape[1])
    np.testing.assert_allclose(mel[0].numpy(), REFERENCE["mel_0"], rtol=1e-4, atol=1e-6 * float(mel[0].max()))
    torch.testing.assert_close(mel[1], 0.25 * mel[0], rtol=1e-4, atol=1e-6 * float(mel[0].max()))
    assert float(mel[2].abs().max()) == 0.0


def test_slaney_filterbank_has_equal_area_filters() -> None:
    """Slaney norm divides each triangle by its width: on a fine grid every filter's area is ~1/(bin spacing)."""
    n_freqs, sr = 4097, 22050
    fb = melscale_fbanks(n_freqs, 0.0, 8000.0, 40, sr, norm="slaney", mel_scale="slaney")
    spacing = (sr / 2) / (n_freqs - 1)
    areas = fb.sum(0) * spacing
    torch.testing.assert_close(areas, torch.ones(40), rtol=0.02, atol=0.0)
    htk = melscale_fbanks(n_freqs, 0.0, 8000.0, 40, sr)
    assert float(htk.max()) == pytest.approx(1.0, abs=1e-3)
    assert not torch.allclose(fb, htk)


def test_log_mel_floors_silence_and_top_db() -> None:
    mel = torch.tensor([[[0.0, 1e-3], [1.0, 100.0]]])
    db = log_mel(mel)
    torch.testing.assert_close(db, torch.tensor([[[-100.0, -30.0], [0.0, 20.0]]]))
    assert float(amplitude_to_db(mel, top_db=40.0).min()) == pytest.approx(-20.0)
    assert float(amplitude_to_db(torch.tensor([[[10.0]]]), multiplier=20.0)) == pytest.approx(20.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda() -> None:
    module = MelSpectrogram(**CONFIGS[1]).to("cuda")
    mel = module(torch.from_numpy(REFERENCE["input_1"]).cuda())
    assert mel.device.type == "cuda"
    expected = REFERENCE["mel_1"]
    np.testing.assert_allclose(mel.cpu().numpy(), expected, rtol=1e-3, atol=1e-5 * float(expected.max()))
