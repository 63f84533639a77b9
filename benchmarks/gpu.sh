#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one command: the Triton kernels' tests compiled (no interpreter), then the
# GPU benchmarks of the fused loss and flash attention, then training figures (quick and advanced presets, fp32 and
# --amp, fused and torch loss), with the machine and versions recorded.
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

# Training on the GPU: the quick preset (the README's run) and one epoch of the advanced one, each in fp32 and
# mixed precision, with the fused Triton loss (--loss-backend auto) and with torch's; one line per run, read from the
# run's own metrics.json.
for preset in quick advanced; do
  epochs=$([ "$preset" = quick ] && echo 12 || echo 1)
  for precision in fp32 amp; do
    amp=$([ "$precision" = amp ] && echo --amp || echo --no-amp)
    for loss in auto torch; do
      run="$out/train-$preset-$precision-$loss"
      rm -rf "$run"
      python -m unet_from_scratch.train --config "$preset" --epochs "$epochs" "$amp" --loss-backend "$loss" \
          --progress lines --out "$run" > "$run.log" 2>&1
    done
  done
done
python - "$out" <<'PY' | tee "$out/training.txt"
import json, pathlib, sys
print("preset    prec.   loss   epochs  s/epoch  ms/step  images/s  val_iou  val_instance_f1")
for path in sorted(pathlib.Path(sys.argv[1]).glob("train-*/metrics.json")):
    m, (_, preset, amp, loss) = json.loads(path.read_text()), path.parent.name.split("-", 3)
    epochs = round(m["seconds"] / m["seconds_per_epoch"])
    print(f"{preset:9} {amp:7} {loss:6} {epochs:6} {m['seconds_per_epoch']:8.1f} {m['ms_per_step']:8.1f} "
          f"{m['images_per_s']:9.1f} {m['best']['val_iou']:8.4f} {m['best']['val_instance_f1']:16.4f}")
PY
