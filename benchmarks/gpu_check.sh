#!/usr/bin/env bash
# GPU check for a lent CUDA machine with only Python 3.12, torch (CUDA) and numpy: no lancedb, faiss, PyAV, mlflow,
# soundfile, no network. Run from the repository root:  bash benchmarks/gpu_check.sh
# Prints encode throughput per encoder (CUDA vs CPU), CUDA-vs-CPU vector agreement, an AMP training step of the cnn
# and of musicnn, and musicnn's out-of-memory batch halving; exits non-zero if a check fails. Under 5 minutes.
# The CPU path users get by default (musicnn on ONNX Runtime) is timed beside CUDA when onnxruntime and onnx import:
# the machine has no network, so carry Python 3.12 wheels in benchmarks/gpu-wheels/ (ignored by git; fill it with
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       --platform manylinux2014_x86_64 -d benchmarks/gpu-wheels onnxruntime==1.31.1 onnx==1.23.2
# and remove the numpy wheel) and they are installed into a private folder first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -c "import torch, numpy; print('python', __import__('sys').version.split()[0], 'numpy', numpy.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
EXTRA=""
if [ -d benchmarks/gpu-wheels ] && ls benchmarks/gpu-wheels/*.whl >/dev/null 2>&1; then
    EXTRA="$(mktemp -d)"
    "$PY" -m pip install -q --no-index --no-deps --target "$EXTRA" benchmarks/gpu-wheels/*.whl \
        || { echo "gpu-wheels could not be installed: the ONNX Runtime row is skipped"; EXTRA=""; }
fi
PYTHONPATH="$PWD${EXTRA:+:$EXTRA}${PYTHONPATH:+:$PYTHONPATH}" timeout 290 "$PY" benchmarks/gpu_check.py "$@"
