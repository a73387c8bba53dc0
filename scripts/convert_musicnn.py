"""Convert the MusiCNN TensorFlow checkpoints of the ``musicnn`` 0.1.0 wheel to numpy, and write the port's fixture.

Runs in a throw-away venv, never in recsys's own (TensorFlow is not a recsys dependency):

    python3.11 -m venv /work/venv-tf
    /work/venv-tf/bin/pip install tensorflow-cpu==2.15.1 numpy==1.26.4 librosa==0.11.0
    /work/venv-tf/bin/pip install --no-deps musicnn==0.1.0
    /work/venv-tf/bin/python scripts/convert_musicnn.py            # MSD_musicnn -> weights + test fixture

What it does, and why each step is there:

- builds the graph with musicnn's own ``models.define_model`` and restores the checkpoint with a ``Saver``. musicnn's
  ``extractor()`` swallows a failed restore (it would then run on random weights), so here every variable of the
  graph must exist in the checkpoint and its restored value must equal the checkpoint's bytes, or the script stops.
  The wheel's ``checkpoint`` file names a path on the author's machine, so the checkpoint is opened by its exact
  prefix (the model directory with a trailing slash: the files are ``.index``, ``.data-00000-of-00001``);
- writes every model variable (optimiser slots left out) to ``recsys/embedder/weights/<model>.npz`` (float32, the
  TensorFlow names as keys), which ``recsys.embedder.musicnn`` loads;
- for MSD_musicnn, writes ``tests/data/musicnn_reference.npz`` (for MTT_musicnn ``mtt_musicnn_reference.npz``
  beside it, the same clips through the other weights): three fixed clips synthesised here (int16 PCM, so
  they are exact), librosa's log-mel of them (float32, no float16 rounding) and TensorFlow's outputs of the
  restored graph run on their non-overlapping 187-frame patches: the 200-d penultimate layer and the 50 tag logits.
  The graph is run here on the patches directly, not through ``extractor()``, whose 0.1.0 loop returns copies of
  the first patch's penultimate row for every later patch.

``--embed-logmels IN OUT`` runs a model on log-mel patches that recsys computed (``benchmarks/encoder_quality.py
--dump-logmels``) and writes one vector per track: how the VGG model, which recsys does not port, was measured.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import musicnn  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from musicnn import configuration, models  # noqa: E402

tf.compat.v1.disable_eager_execution()

ROOT = Path(__file__).resolve().parent.parent
SR, N_FFT, HOP, N_MELS, N_FRAMES = 16000, 512, 256, 96, 187
MODELS = ("MSD_musicnn", "MTT_musicnn", "MSD_vgg", "MTT_vgg")


def checkpoint_prefix(model: str) -> str:
    return os.path.join(os.path.dirname(musicnn.__file__), model) + "/"


class Restored:
    """One model's graph in its own session, restored from the wheel's checkpoint and verified."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.graph = tf.Graph()
        num_classes = len(configuration.MSD_LABELS if model.startswith("MSD") else configuration.MTT_LABELS)
        with self.graph.as_default():
            with tf.name_scope("model"):
                self.x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, N_MELS])
                self.is_training = tf.compat.v1.placeholder(tf.bool)
                outputs = models.define_model(self.x, self.is_training, model, num_classes)
            self.logits = outputs[0]
            # musicnn: the 200-d penultimate layer; vgg (no dense layer before the tags): pool5 flattened (256-d)
            self.vector = outputs[-1] if "musicnn" in model else tf.compat.v1.layers.flatten(outputs[-1])
            self.session = tf.compat.v1.Session(graph=self.graph)
            self.variables = tf.compat.v1.global_variables()
            tf.compat.v1.train.Saver().restore(self.session, checkpoint_prefix(model))
        self.weights = self._verified()

    def _verified(self) -> dict[str, np.ndarray]:
        """Every graph variable, as restored; stops unless each one equals its value in the checkpoint file."""
        reader = tf.compat.v1.train.NewCheckpointReader(checkpoint_prefix(self.model))
        in_file = {k for k in reader.get_variable_to_shape_map() if "Adam" not in k and not k.startswith("beta")}
        values = self.session.run(self.variables)
        weights = {v.op.name: np.asarray(val, dtype=np.float32) for v, val in zip(self.variables, values, strict=True)}
        if set(weights) != in_file:
            raise SystemExit(f"{self.model}: graph and checkpoint disagree: graph only {sorted(set(weights) - in_file)}"
                             f", checkpoint only {sorted(in_file - set(weights))}")
        for name, value in weights.items():
            if not np.array_equal(value, reader.get_tensor(name)):
                raise SystemExit(f"{self.model}: variable {name} was not restored")
        return weights

    def run(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 187, 96) log-mel patches -> (vectors, logits), batch normalisation in inference mode."""
        return self.session.run([self.vector, self.logits], {self.x: patches, self.is_training: False})


def log_mel(wave: np.ndarray) -> np.ndarray:
    """librosa's log-mel as musicnn computes it, (96, frames) float32 (without extractor's float16 rounding)."""
    mel = librosa.feature.melspectrogram(y=wave, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    return np.log10(10000.0 * mel + 1.0).astype(np.float32)


def patches_of(logmel: np.ndarray) -> np.ndarray:
    """(96, frames) -> (N, 187, 96) non-overlapping patches, the remainder dropped (as extractor with hop 187)."""
    n = logmel.shape[1] // N_FRAMES
    return np.stack([logmel[:, i * N_FRAMES:(i + 1) * N_FRAMES].T for i in range(n)])


def reference_clips() -> dict[str, np.ndarray]:
    """Three deterministic clips as int16 PCM at 16 kHz: tonal + noise + clicks, a sweep over drums, and a quiet one."""
    rng = np.random.default_rng(20191105)
    t1 = np.arange(int(3.5 * SR)) / SR
    chord = sum(0.2 * np.sin(2 * np.pi * f * t1) for f in (220.0, 277.18, 329.63, 440.0))
    clicks = np.zeros_like(t1)
    clicks[:: SR // 2] = 0.9
    a = chord + 0.05 * rng.standard_normal(t1.size) + clicks
    t2 = np.arange(int(6.5 * SR)) / SR
    sweep = 0.3 * np.sin(2 * np.pi * (100.0 * t2 + 400.0 * t2**2))
    beat = np.exp(-30.0 * (t2 % 0.4)) * rng.standard_normal(t2.size) * 0.5
    bass = 0.3 * np.sin(2 * np.pi * 55.0 * t2) * (1 + np.sign(np.sin(2 * np.pi * 0.5 * t2))) / 2
    b = sweep + beat + bass
    t3 = np.arange(int(3.2 * SR)) / SR
    c = 0.01 * np.sin(2 * np.pi * 880.0 * t3) + 0.003 * rng.standard_normal(t3.size)
    return {name: np.round(np.clip(x, -1, 1) * 32767).astype(np.int16) for name, x in zip("abc", (a, b, c),
                                                                                             strict=True)}


def write_fixture(net: Restored, path: Path) -> None:
    out: dict[str, np.ndarray] = {}
    for name, pcm in reference_clips().items():
        wave = pcm.astype(np.float32) / 32768.0
        logmel = log_mel(wave)
        vectors, logits = net.run(patches_of(logmel))
        out.update({f"{name}_pcm": pcm, f"{name}_logmel": logmel, f"{name}_penultimate": vectors.astype(np.float32),
                    f"{name}_logits": logits.astype(np.float32)})
    out["librosa_version"] = np.array(librosa.__version__)
    out["tensorflow_version"] = np.array(tf.__version__)
    np.savez_compressed(path, **out)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


def embed_logmels(model: str, src: Path, dst: Path) -> None:
    """Per-track mean of the model's patch vectors for the log-mel patches in ``src`` (keys: track ids)."""
    net = Restored(model)
    data = np.load(src)
    keys = sorted(data.files)
    vectors = np.stack([net.run(np.ascontiguousarray(data[k].transpose(0, 2, 1)))[0].mean(0) for k in keys])
    np.savez(dst, keys=np.array(keys), vectors=vectors.astype(np.float32))
    print(f"{model}: {len(keys)} tracks -> {dst}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["MSD_musicnn"], choices=MODELS)
    ap.add_argument("--weights-dir", type=Path, default=ROOT / "recsys" / "embedder" / "weights")
    ap.add_argument("--fixture", type=Path, default=ROOT / "tests" / "data" / "musicnn_reference.npz")
    ap.add_argument("--embed-logmels", nargs=2, type=Path, metavar=("IN", "OUT"))
    args = ap.parse_args()
    if args.embed_logmels:
        for model in args.models:
            src, dst = args.embed_logmels
            embed_logmels(model, src, dst if len(args.models) == 1 else dst.with_name(f"{model}-{dst.name}"))
        return
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        net = Restored(model)
        path = args.weights_dir / f"{model.lower()}.npz"
        np.savez_compressed(path, **net.weights)
        n = sum(v.size for v in net.weights.values())
        print(f"{model}: restored and verified {len(net.weights)} variables ({n} numbers) -> {path}")
        if model == "MSD_musicnn":
            write_fixture(net, args.fixture)
        elif model.endswith("_musicnn"):  # the same clips through another weight set, to hold its port equal too
            write_fixture(net, args.fixture.with_name(f"{model.lower()}_reference.npz"))


if __name__ == "__main__":
    main()
