#!/usr/bin/env bash
# The GPU figures in benchmarks/README.md, in one go on a lent CUDA machine (its python3 has
# torch; pydantic travels as wheels in .whl/). Writes JSON files under $OUT (default /tmp/out).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:-}:src TQDM_DISABLE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
BUNDLE=benchmarks/data/demo.npz
python3 benchmarks/train.py --bundle $BUNDLE --device cuda --batch-size 1024 --epochs 2 \
  --output "$OUT/train_cuda_b1024.json" 2>&1 | grep -v Warning | tail -12
python3 benchmarks/train.py --bundle $BUNDLE --device cuda --batch-size 8192 --epochs 3 \
  --output "$OUT/train_cuda_b8192.json" 2>&1 | grep -v Warning | tail -12
python3 benchmarks/quality.py --bundle $BUNDLE --device cuda --seeds "${QUALITY_SEEDS:-0,1,2}" --epochs 6 --learning-rate 0.001 \
  --output "$OUT/quality_cuda.json" 2>&1 | tail -60
# DDP through torchrun on CUDA: two ranks share the one GPU, so gloo instead of NCCL.
CHOIRFLOW_DDP_BACKEND=gloo torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py "$OUT" din cuda 2>&1 | tail -5
python3 - "$OUT" <<'PY'
import sys, torch
a, b = (torch.load(f"{sys.argv[1]}/rank{r}.pt", weights_only=False) for r in (0, 1))
same = all(torch.equal(v, b["state"][k]) for k, v in a["state"].items() if "running_" not in k and "num_batches" not in k)
print("ddp world", a["world"], a["device"], "identical params", same,
      "loss", round(sum(a["losses"][:5]) / 5, 4), "->", round(sum(a["losses"][-5:]) / 5, 4))
PY
ls "$OUT"
