#!/usr/bin/env bash
# #44 on a GPU machine, in one go (the device tool: a few minutes, run once, read, fix, rerun):
# the CUDA tests, then the GPU benchmark. Its machine has torch with CUDA but not this venv:
#   bash benchmarks/gpu_check.sh            # PYTHONPATH=src, pytest without the benchmark plugin
set -uo pipefail
export PYTHONPATH=src
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
python3 -m pytest -p no:benchmark -o addopts="" -q tests/test_gpu.py tests/test_engine.py \
  -k "gpu or cuda or synchronisation" 2>&1 | tail -15
python3 benchmarks/gpu.py --rounds "${ROUNDS:-2}"
