#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one command: the Triton kernels' tests compiled (no interpreter), then the
# GPU benchmarks of the fused loss and flash attention, with the machine and versions recorded.
#
#   bash benchmarks/gpu.sh [OUT_DIR]        (default OUT_DIR: benchmarks/gpu-results)
#
# Needs the package installed with a CUDA build of torch and triton (pip install -e ".[test]").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/gpu-results}
mkdir -p "$out"
unset TRITON_INTERPRET  # compiled kernels, not the CPU interpreter

python - <<'PY' | tee "$out/machine.txt"
import datetime, torch, triton
assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA device"
print(f"date {datetime.date.today()}  device {torch.cuda.get_device_name()}  torch {torch.__version__}  "
      f"CUDA {torch.version.cuda}  triton {triton.__version__}")
PY

python -m pytest -m triton tests -q 2>&1 | tee "$out/tests.txt"
python -m pytest benchmarks/test_fused_loss.py benchmarks/test_attention.py \
    --benchmark-group-by=group --benchmark-columns=min,median,max,rounds \
    --benchmark-json="$out/benchmarks.json" 2>&1 | tee "$out/benchmarks.txt"
