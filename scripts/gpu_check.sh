#!/usr/bin/env bash
# What only a GPU can show, in one script of about 10 minutes on one H100-class GPU:
# Gemma 3 270M (from its PyPI GGUF, no hub access needed) trained with LoRA and with QLoRA
# in bfloat16 for 300 steps each, then evaluated and used to predict on the GPU. Prints
# tokens/s, peak GPU memory and the last validation loss of each training, and examples/s
# of the evaluation and the prediction, with the accuracy beside the baselines. With
# QUALITY=1 it then runs benchmarks/bench_quality.py --model gemma-3-270m-gguf for a
# 10-minute budget (the CPU benchmark's 1,000 test rows and baselines; the goal on a GPU is
# >= 97 % channel top-1), a few more minutes with its scoring.
#
#   bash scripts/gpu_check.sh [OUT]        # OUT: where everything goes (default runs/gpu-check)
#   QUALITY=1 bash scripts/gpu_check.sh
#
# Needs an NVIDIA driver >= 580 (torch 2.13.0 from PyPI is a CUDA 13.0 build) and the gpu
# and gemma extras (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu-check}"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -c "import bitsandbytes, gguf" 2>/dev/null || bash scripts/setup.sh "gpu,gemma"
[ -x .venv/bin/python ] && PY=.venv/bin/python
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"

started=$(date +%s)
"$PY" -m flows.data --n-rows 20000 --out-dir "$OUT/data" --no-export
for mode in lora qlora; do
    "$PY" -m flows.train --model gemma-3-270m-gguf --mode "$mode" --bf16 --data-dir "$OUT/data" --out-dir "$OUT/runs" --run-name "gemma-$mode" --max-steps 300 --batch-size 16 --learning-rate 2e-4 --eval-rows 200 --eval-steps 100 --save-steps 150 --logging-steps 25
done
"$PY" -m flows.evaluate --model "$OUT/runs/gemma-lora" --data-dir "$OUT/data" --max-rows 1000 --device cuda --batch-size 64
predict_started=$(date +%s)
"$PY" -m flows.predict --model "$OUT/runs/gemma-qlora" --input "$OUT/data" --split test --output "$OUT/predictions.csv" --device cuda --batch-size 64
predict_seconds=$(( $(date +%s) - predict_started ))

"$PY" - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
for mode in ("lora", "qlora"):
    run = json.loads((out / "runs" / f"gemma-{mode}" / "run.json").read_text())
    gpu = (run.get("peak_memory_mb") or {}).get("gpu")
    print(
        f"train {mode:5}: {run['steps']} steps in {run['train_seconds']} s, "
        f"{run['tokens_per_second']} tokens/s, peak GPU {gpu} MB, "
        f"val loss {run['final_eval_loss']}"
    )
metrics = json.loads((out / "runs" / "gemma-lora" / "eval-test" / "metrics.json").read_text())
timing = metrics["timing"]
print(
    f"evaluate on {metrics['device']}: {metrics['rows']} rows, "
    f"{timing['examples_per_second']} examples/s greedy, {timing['total_seconds']} s in all"
)
for system in metrics["systems"]:
    channel = system.get("channel") or {}
    print(f"  {system['name']:40} top1 {channel.get('top1')}  top1 ranked {channel.get('top1_ranked')}")
EOF
rows=$(( $(wc -l < "$OUT/predictions.csv") - 1 ))
echo "predict: $rows rows in $predict_seconds s (Prefect start and model load included), $OUT/predictions.csv"
if [ -n "${QUALITY:-}" ]; then
    "$PY" benchmarks/bench_quality.py --model gemma-3-270m-gguf --budget-minutes 10 --batch-size 32 --curve-every 100
fi
echo "gpu_check: $(( $(date +%s) - started )) s in all"
