#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script for a lent GPU machine (about 5 minutes on one H100):
#   1. the gpu-marked tests (AMP bf16/fp16, CUDA resume);
#   2. `leapkit distill` on the demo through the CLI on CUDA with bf16 autocast, then `leapkit bench`
#      of that run's PyTorch student on the GPU against the rtx-4090 profile;
#   3. the early-exit step-time benchmark at the paper's resolution (224 px, batch 64) with a
#      ViT-L/14-shaped teacher and with the paper's ViT-g/14-shaped teacher.
# Every step runs even when an earlier one fails; the exit code is 1 if any failed.
# Writes benchmarks/results/early_exit_step_time_cuda*.{json,md}; the demo run goes to $RUN.
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-/tmp/leapkit_gpu_demo}
failed=()
step() {
    echo "=== $*"
    "$@" || { echo "=== FAILED (exit $?): $*"; failed+=("$*"); }
}
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
step python -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
rm -rf "$RUN"
step python -m leapkit distill --out "$RUN" --device cuda --amp bf16 --no-progress
step python -m leapkit bench "$RUN" --target rtx-4090 --runtime torch --duration 2
step python benchmarks/early_exit_step_time.py --device cuda --img-size 224 --batch-size 64 --steps 20
step python benchmarks/early_exit_step_time.py --device cuda --img-size 224 --batch-size 64 --steps 10 --teacher vit_giant_patch14_dinov2
if ((${#failed[@]})); then
    printf 'gpu_check: %d step(s) failed:\n' "${#failed[@]}"; printf '  %s\n' "${failed[@]}"; exit 1
fi
echo "gpu_check: all steps passed"
