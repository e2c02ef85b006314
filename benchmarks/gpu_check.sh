#!/usr/bin/env bash
# GPU check: streaming labelling vs bare forward for real-size shapes on one CUDA device (fp16
# autocast), then a multi-model pass (4 x ViT-B-32 in one pass vs one by one, 20,000 JPEGs at
# 224 px), in under 10 minutes on a recent GPU. Random-init weights (throughput only).
#   bash benchmarks/gpu_check.sh            # results appended to benchmarks/results/labeling_scale.md
#                                           # and benchmarks/results/multi_model_scale.md
# Needs the project environment (`bash scripts/bootstrap.sh env`) and a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
WORKERS=${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}
IMAGES=${IMAGES:-20000}
for arch in ViT-B-32 ViT-L-14; do
  timeout 150 "$PY" benchmarks/bench_labeling_scale.py --device cuda --arch "$arch" \
    --images "$IMAGES" --bare 2048 --batch-size 256 --workers "$WORKERS" \
    --work "${WORK:-/tmp/mll-gpu-check}"
done
timeout 300 "$PY" benchmarks/bench_multi_model_scale.py --device cuda --arch ViT-B-32 \
  --models "${MODELS:-4}" --images "$IMAGES" --batch-size 256 --workers "$WORKERS" \
  --work "${WORK:-/tmp/mll-gpu-check}"
