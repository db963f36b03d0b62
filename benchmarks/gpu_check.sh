#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script for a lent GPU machine (about 5 minutes on one H100):
# the gpu-marked tests (AMP bf16/fp16, CUDA resume) and the early-exit step-time benchmark at the
# paper's resolution. Writes benchmarks/results/early_exit_step_time_cuda.{json,md}.
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())"
python -m pytest -q -m gpu tests/test_gpu.py
python benchmarks/early_exit_step_time.py --device cuda --img-size 224 --batch-size 64 --steps 20
