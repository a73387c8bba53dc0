"""The ``musicnn`` encoder: MusiCNN (Pons & Serra 2019), model MSD_musicnn, ported to PyTorch with its weights.

MusiCNN is a tagging network trained on the Million Song Dataset's 50 most common last.fm tags; its 200-d
penultimate layer is a general-purpose description of how music sounds (AudioMuse-AI's encoder). The weights come
from the ``musicnn`` 0.1.0 wheel (ISC licence, Jordi Pons / Music Technology Group UPF: ``weights/LICENSE-musicnn``),
converted once by ``scripts/convert_musicnn.py``; ``tests/test_musicnn.py`` holds this port equal to TensorFlow's
own outputs of the restored checkpoint.

The computation, as musicnn's ``extractor.py`` / ``models.py`` do it:

- frontend: 16 kHz mono, power STFT (512-point periodic Hann, hop 256, centred with zero padding: librosa 0.11's
  ``melspectrogram``), 96 Slaney mel bands with Slaney area norm, ``log10(1 + 10000 x)``. musicnn's extractor
  rounds the mel power to float16 before the log; this port keeps float32 (the difference is rounding noise);
- non-overlapping 3 s patches of 187 frames, the remainder dropped; a clip shorter than one patch is repeated
  (tiled along time) up to 187 frames, musicnn's own ``repeat-pad`` for short training clips;
- per patch: input batch norm; timbral front-end (7x38 and 7x67 time-by-mel filters, max over frequency) and
  temporal front-end (128, 64 and 32-frame filters per mel band, max over frequency), 561 channels; dense mid-end
  (three 7-frame 1-D convolutions, 64 channels, residual), concatenated with the front-end, 753 channels; back-end:
  max and mean over time (interleaved as TensorFlow's flatten orders them), batch norm, dense 200 + ReLU + batch
  norm: the 200-d penultimate layer, the patch's vector (every batch norm in inference mode, epsilon 1e-3);
- the clip's vector is the mean of its patch vectors, L2-normalised;
- the clip's tag probabilities (``encode_with_tags``) are the mean over its patches of the sigmoid of the 50 tag
  logits: musicnn's ``extractor`` returns that per-patch sigmoid (its "taggram") and its ``tagger.top_tags`` ranks
  tags by the taggram's mean over time. The names, in the order of the weights' output units, are musicnn's
  ``configuration.MSD_LABELS`` (:data:`MSD_TAGS`).

This module imports only torch and numpy (and recsys's features and encoder protocol) so that a GPU machine without
the rest of recsys's dependencies can run it (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys.embedder.features import MelSpectrogram
from recsys.embedder.interface import EncoderError, _check_waves

WEIGHTS = Path(__file__).resolve().parent / "weights" / "msd_musicnn.npz"
SAMPLE_RATE, N_FFT, HOP, N_MELS, PATCH_FRAMES = 16000, 512, 256, 96, 187
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default
# On CUDA the network runs under float16 autocast (the frontend stays float32): vectors agree with float32 to
# AMP_TOLERANCE (max abs difference of the unit vectors). Measured with CPU float16 autocast on the three fixture
# clips: 4e-4 to 6.6e-4; bfloat16 (7-bit mantissa) moved them 2.8e-3 to 4.5e-3, so it is not used.
AMP_DTYPE = torch.float16
AMP_TOLERANCE = 2e-3
# musicnn 0.1.0 configuration.MSD_LABELS: the last.fm tags of MSD_musicnn's output units, in their order
MSD_TAGS = ("rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
            "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul",
            "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies",
            "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s",
            "party", "country", "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal",
            "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy")


def _bn(weights: dict[str, np.ndarray], index: int) -> nn.BatchNorm1d:
    """TensorFlow's ``batch_normalization[_index]`` variables as an inference-mode torch batch norm."""
    key = "batch_normalization" + (f"_{index}" if index else "")
    gamma = torch.from_numpy(weights[f"{key}/gamma"])
    bn = nn.BatchNorm1d(gamma.numel(), eps=BN_EPS)
    bn.weight.data.copy_(gamma)
    bn.bias.data.copy_(torch.from_numpy(weights[f"{key}/beta"]))
    bn.running_mean.copy_(torch.from_numpy(weights[f"{key}/moving_mean"]))
    bn.running_var.copy_(torch.from_numpy(weights[f"{key}/moving_variance"]))
    return bn


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An inference-mode batch norm as ``scale * y + shift`` per channel, and the sign of each scale."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    return scale, shift, torch.where(scale >= 0, 1.0, -1.0)


def _pool_affine(z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """(N, C, freq, time) ``sign * conv(x)`` -> batch norm of relu(conv) maxed over frequency: see ``_freq_max``."""
    pooled = torch.relu(z.amax(2) * sign.view(1, -1, 1))  # relu(max conv) or relu(min conv), per channel
    return pooled * scale.view(1, -1, 1) + shift.view(1, -1, 1)


def _conv(weights: dict[str, np.ndarray], index: int, conv1d: bool = False) -> nn.Module:
    """TensorFlow's ``conv2d[_index]`` (kernel [time, width, in, out]) as a torch convolution.

    Front-end convolutions see a (N, 1, mel, time) map, so the kernel becomes (out, in, width, time); mid-end ones
    span the whole feature axis, which makes them 1-D convolutions over time with the features as channels.
    """
    key = "conv2d" + (f"_{index}" if index else "")
    kernel = torch.from_numpy(weights[f"{key}/kernel"])
    bias = torch.from_numpy(weights[f"{key}/bias"])
    kt, kw, cin, cout = kernel.shape
    if conv1d:  # [7, features, 1, out] -> (out, features, 7)
        conv: nn.Module = nn.Conv1d(kw, cout, kt)
        conv.weight.data.copy_(kernel[:, :, 0, :].permute(2, 1, 0))
    else:
        conv = nn.Conv2d(cin, cout, (kw, kt))
        conv.weight.data.copy_(kernel.permute(3, 2, 1, 0))
    conv.bias.data.copy_(bias)
    return conv


def _dense(weights: dict[str, np.ndarray], index: int) -> nn.Linear:
    key = "dense" + (f"_{index}" if index else "")
    kernel = torch.from_numpy(weights[f"{key}/kernel"])
    dense = nn.Linear(*kernel.shape)
    dense.weight.data.copy_(kernel.T)
    dense.bias.data.copy_(torch.from_numpy(weights[f"{key}/bias"]))
    return dense


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """The converted TensorFlow variables; a missing or damaged file is an EncoderError naming it."""
    try:
        with np.load(path) as data:
            return {k: data[k].astype(np.float32) for k in data.files}
    except (OSError, ValueError) as exc:
        raise EncoderError(f"musicnn weights {path} cannot be read ({exc}): reinstall recsys, or regenerate them "
                           "with scripts/convert_musicnn.py") from None


class MusicnnEncoder(nn.Module):
    """MusiCNN's 200-d penultimate layer, averaged over the 3 s patches of a clip: see the module docstring.

    ``frontend`` and ``embed_logmel`` are separate so that training can work from cached log-mels; ``encode`` is
    ``normalize(embed_logmel(frontend(waves)))`` run in inference mode, ``patch_batch`` patches at a time (by default
    16 on the CPU, where small batches stay in cache, and 256 on CUDA; halved on a CUDA out-of-memory). ``amp``:
    float16 autocast on CUDA.
    """

    name = "musicnn"
    tag_names = MSD_TAGS
    # bump when the computation changes: it is part of identity() and so of encoder_id. 2: rows carry the tag
    # probabilities (encode_with_tags), so a table embedded by version 1 is embedded again once and gets its tags
    VERSION = 2

    def __init__(self, weights: str | Path | None = None, patch_batch: int | None = None, amp: bool = True) -> None:
        super().__init__()
        self.weights_file = Path(weights) if weights is not None else WEIGHTS
        w = load_weights(self.weights_file)
        self.sample_rate, self.dim, self.patch_frames = SAMPLE_RATE, 200, PATCH_FRAMES
        self.patch_batch, self.amp = patch_batch, amp
        # inference on the CPU through ONNX Runtime (recsys.embedder.onnx_cpu, embed.runtime onnx) when set: a
        # callable like patch_outputs; training and gradients always run the torch modules below
        self.patch_runner = None
        self.config: dict = {}  # what a fine-tuned checkpoint records to rebuild it (encoders.ARCHITECTURES)
        self.mel = MelSpectrogram(SAMPLE_RATE, N_FFT, hop_length=HOP, n_mels=N_MELS, pad_mode="constant",
                                  norm="slaney", mel_scale="slaney")
        try:
            self.input_bn = _bn(w, 0)
            self.timbral = nn.ModuleList([_conv(w, 0), _conv(w, 1)])
            self.timbral_bn = nn.ModuleList([_bn(w, 1), _bn(w, 2)])
            self.temporal = nn.ModuleList([_conv(w, i) for i in (2, 3, 4)])
            self.temporal_bn = nn.ModuleList([_bn(w, i) for i in (3, 4, 5)])
            self.midend = nn.ModuleList([_conv(w, i, conv1d=True) for i in (5, 6, 7)])
            self.midend_bn = nn.ModuleList([_bn(w, i) for i in (6, 7, 8)])
            self.pool_bn = _bn(w, 9)
            self.dense = _dense(w, 0)
            self.dense_bn = _bn(w, 10)
            self.tags = _dense(w, 1)
        except KeyError as exc:
            raise EncoderError(f"musicnn weights {self.weights_file} lack {exc}: regenerate them with "
                               "scripts/convert_musicnn.py") from None
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.dense.weight.device

    def identity(self) -> dict:
        return {"class": "MusicnnEncoder", "version": self.VERSION, "model": self.weights_file.stem,
                "sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS,
                "patch_frames": PATCH_FRAMES, "pooling": "mean"}

    def frontend(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, T) 16 kHz waves -> (B, 96, 1 + T // 256) log-mel, ``log10(1 + 10000 mel power)``."""
        if waves.shape[-1] == 0:  # one sample of silence: still one frame
            waves = F.pad(waves, (0, 1))
        return torch.log10(1.0 + 10000.0 * self.mel(waves))

    @staticmethod
    def patches(logmel: torch.Tensor) -> torch.Tensor:
        """(B, 96, frames) -> (B, P, 96, 187) non-overlapping patches; under 187 frames the clip is tiled to 187."""
        frames = logmel.shape[-1]
        if frames < PATCH_FRAMES:
            logmel = logmel.repeat(1, 1, -(-PATCH_FRAMES // frames))[..., :PATCH_FRAMES]
            frames = PATCH_FRAMES
        p = frames // PATCH_FRAMES
        b, m = logmel.shape[:2]
        return logmel[..., : p * PATCH_FRAMES].reshape(b, m, p, PATCH_FRAMES).transpose(1, 2)

    def patch_outputs(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 96, 187) log-mel patches -> ((N, 200) penultimate layer, (N, 50) tag logits)."""
        x = self.input_bn(patches.reshape(patches.shape[0], 1, -1)).reshape(patches.shape).unsqueeze(1)
        front = []
        timbral_in = F.pad(x, (3, 3))  # 'same' in time for the 7-frame filters, 'valid' in frequency
        for conv, bn in zip(self.timbral, self.timbral_bn, strict=True):
            front.append(self._freq_max(conv, bn, timbral_in))
        if self.training:
            for conv, bn in zip(self.temporal, self.temporal_bn, strict=True):
                k = conv.kernel_size[1]  # TensorFlow's 'same' padding: the extra frame of an even kernel goes after
                front.append(self._freq_max(conv, bn, F.pad(x, ((k - 1) // 2, k // 2))))
        else:
            front.append(self._temporal_inference(x))
        feats = [torch.cat(front, dim=1)]  # (N, 561, 187)
        h = feats[0]
        for i, (conv, bn) in enumerate(zip(self.midend, self.midend_bn, strict=True)):
            out = bn(torch.relu(conv(F.pad(h, (3, 3)))))
            h = out if i == 0 else out + h
            feats.append(h)
        feats = torch.cat(feats, dim=1)  # (N, 753, 187)
        pooled = torch.stack([feats.amax(-1), feats.mean(-1)], dim=2).flatten(1)  # (N, 1506): max, mean interleaved
        penultimate = self.dense_bn(torch.relu(self.dense(self.pool_bn(pooled))))
        return penultimate, self.tags(penultimate)

    def _freq_max(self, conv: nn.Conv2d, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        """relu(conv) -> batch norm -> max over frequency, (N, C, freq, time) -> (N, C, time).

        In training batch norm uses the batch's statistics, so it is computed as written. In inference it is a
        per-channel affine map a y + b, and the maximum over frequency of a relu(z) + b is a relu(max z) + b where
        a >= 0 and a relu(min z) + b where a < 0 (relu is monotonic). Most of MSD_musicnn's front-end channels have
        a < 0, so those filters are run negated (max of -z is -min z): one convolution and one max over the largest
        tensor of the network, and the relu and batch norm only on the pooled result."""
        if self.training:
            y = torch.relu(conv(x))
            return bn(y.flatten(2)).view_as(y).amax(2)
        scale, shift, sign = _bn_affine(bn)
        z = F.conv2d(x, conv.weight * sign.view(-1, 1, 1, 1), conv.bias * sign)  # sign * conv(x)
        return _pool_affine(z, scale, shift, sign)

    def _temporal_inference(self, x: torch.Tensor) -> torch.Tensor:
        """The three temporal filters (128, 64 and 32 frames) as one convolution of 128-frame filters, each shorter
        kernel placed where its own 'same' padding puts it inside the longest one's window and zeros elsewhere.

        The zero taps add exact zeros, so the output is the three convolutions' own, bit for bit where oneDNN sums
        taps in order (``tests/test_musicnn.py`` holds it to the separate path); one wider convolution keeps the
        vector units busier than three narrow ones over the same input. Inference only: ``_freq_max`` is the
        definition, and training runs it."""
        longest = max(conv.kernel_size[1] for conv in self.temporal)
        before = (longest - 1) // 2
        weights, biases, scales, shifts, signs = [], [], [], [], []
        for conv, bn in zip(self.temporal, self.temporal_bn, strict=True):
            k = conv.kernel_size[1]
            scale, shift, sign = _bn_affine(bn)
            w = conv.weight.new_zeros(conv.out_channels, 1, 1, longest)
            start = before - (k - 1) // 2
            w[..., start: start + k] = conv.weight * sign.view(-1, 1, 1, 1)
            weights.append(w)
            biases.append(conv.bias * sign)
            scales.append(scale)
            shifts.append(shift)
            signs.append(sign)
        z = F.conv2d(F.pad(x, (before, longest // 2)), torch.cat(weights), torch.cat(biases))
        return _pool_affine(z, torch.cat(scales), torch.cat(shifts), torch.cat(signs))

    def embed_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, 96, frames) log-mel -> (B, 200) mean of the patch vectors (not normalised); differentiable."""
        patches = self.patches(logmel)
        b, p = patches.shape[:2]
        return self._run_patches(patches.reshape(b * p, N_MELS, PATCH_FRAMES)).reshape(b, p, -1).mean(1)

    def _run_patches(self, patches: torch.Tensor, output: int | None = 0) -> torch.Tensor:
        """Penultimate vectors (``output`` 0), or with ``output`` None each patch's vector and its tag logits side by
        side (N, 200 + 50); ``patch_batch`` patches at a time; on CUDA under autocast, halving on OOM."""
        cuda = patches.device.type == "cuda"
        use_amp = self.amp and cuda
        step = self.patch_batch or (256 if cuda else 16)
        run = self.patch_outputs
        if self.patch_runner is not None and not cuda and not self.training and not torch.is_grad_enabled():
            run = self.patch_runner
        while True:
            try:
                with torch.autocast("cuda", dtype=AMP_DTYPE, enabled=use_amp):
                    out = [self._pick(run(patches[i: i + step]), output)
                           for i in range(0, patches.shape[0], step)]
                return torch.cat(out).float()
            except torch.cuda.OutOfMemoryError:
                if step == 1:
                    raise
                step = max(1, step // 2)
                self.patch_batch = step
                torch.cuda.empty_cache()

    @staticmethod
    def _pick(outputs: tuple[torch.Tensor, torch.Tensor], output: int | None) -> torch.Tensor:
        return torch.cat([o.float() for o in outputs], 1) if output is None else outputs[output]

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.embed_logmel(self.frontend(waves))

    def encode(self, waves: torch.Tensor) -> torch.Tensor:
        waves = _check_waves(waves, self.name).to(self.device)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return F.normalize(self.forward(waves), dim=1)
        finally:
            self.train(was_training)

    def encode_with_tags(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode``'s rows and (B, 50) tag probabilities: the mean over patches of each patch's sigmoid."""
        waves = _check_waves(waves, self.name).to(self.device)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                patches = self.patches(self.frontend(waves))
                b, p = patches.shape[:2]
                both = self._run_patches(patches.reshape(b * p, N_MELS, PATCH_FRAMES), output=None)
                vectors = both[:, : self.dim].reshape(b, p, -1).mean(1)
                probs = torch.sigmoid(both[:, self.dim:]).reshape(b, p, -1).mean(1)
                return F.normalize(vectors, dim=1), probs
        finally:
            self.train(was_training)
