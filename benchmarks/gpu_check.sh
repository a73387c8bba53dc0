#!/usr/bin/env bash
# GPU check for a lent CUDA machine with only Python 3.12, torch (CUDA) and numpy: no lancedb, faiss, PyAV, mlflow,
# soundfile, no network. Run from the repository root:  bash benchmarks/gpu_check.sh
# Prints encode throughput per encoder (CUDA vs CPU), CUDA-vs-CPU vector agreement, an AMP training step of the cnn
# and of musicnn, and musicnn's out-of-memory batch halving; exits non-zero if a check fails. Under 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -c "import torch, numpy; print('python', __import__('sys').version.split()[0], 'numpy', numpy.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 290 "$PY" benchmarks/gpu_check.py "$@"
