#!/usr/bin/env bash
# The quality figures on a lent CUDA machine: benchmarks/quality.py on a bundle, one process
# per seed side by side on the one GPU (the models are small: one process leaves the GPU
# mostly idle between kernel launches), then the seeds merged into one result file.
# Its python3 has torch; pydantic and friends travel as wheels in .whl/ (this Python's only).
#   BUNDLE=benchmarks/data/quality.npz SEEDS=0,1,2,3,4 bash benchmarks/gpu_quality.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
BUNDLE=${BUNDLE:-benchmarks/data/quality.npz}
SEEDS=${SEEDS:-0,1,2,3,4}
EPOCHS=${EPOCHS:-6}
LR=${LR:-0.001}
WD=${WD:-0}
BATCH=${BATCH:-1024}
LIMIT=${LIMIT:-480}  # seconds a seed may take; what finished by then is still merged
NAME=${NAME:-quality}
MODELS=${MODELS:-dnn,din,tin,choirrec,qin,transformer_dcn}  # the slowest last
PARTS=${PARTS:-$OUT}  # per-seed files; $OUT may bring back only a few files
mkdir -p "$OUT" "$PARTS"
tag=$(python3 -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
wheels=$(ls .whl/*-py3-none-any.whl .whl/*-"$tag"-*.whl 2>/dev/null)
if [ -n "$wheels" ] && [ ! -d /tmp/site/pydantic ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $wheels
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site
export PYTHONPATH=${PYTHONPATH:-}:src TQDM_DISABLE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
parts=()
logs=()
for seed in ${SEEDS//,/ }; do
  rm -f "$PARTS/${NAME}_seed$seed.json" "$PARTS/${NAME}_seed$seed.log"  # no stale part merged
  timeout "$LIMIT" python3 benchmarks/quality.py --bundle "$BUNDLE" --device cuda --seeds "$seed" --models "$MODELS" \
    --epochs "$EPOCHS" --learning-rate "$LR" --batch-size "$BATCH" --weight-decay "$WD" \
    --output "$PARTS/${NAME}_seed$seed.json" >"$PARTS/${NAME}_seed$seed.log" 2>&1 &
  parts+=("$PARTS/${NAME}_seed$seed.json")
  logs+=("$PARTS/${NAME}_seed$seed.log")
done
wait
done_parts=$(for p in "${parts[@]}"; do [ -f "$p" ] && echo "$p"; done | paste -sd,)
grep -h -E "Error|Traceback" "${logs[@]}"
if [ -n "$done_parts" ]; then
  python3 benchmarks/quality.py --merge "$done_parts" --output "$OUT/$NAME.json"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({k: r[k] for k in ('oracle','summary','best_auc_gap_to_oracle','claims')}, indent=1))" "$OUT/$NAME.json"
fi
