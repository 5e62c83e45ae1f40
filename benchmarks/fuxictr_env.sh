#!/usr/bin/env bash
# FuxiCTR's own environment for the peer of benchmarks/train.py (fuxictr 2.3.10 pulls ray,
# which stays out of the project lock). The torch wheel comes from uv's cache when the project
# environment already has it.
set -euo pipefail
VENV=${1:-.cache/fuxictr-venv}
UV=.venv/bin/uv
test -x "$VENV/bin/python" || "$UV" venv --quiet "$VENV" --python python3.11
"$UV" pip install --quiet --python "$VENV/bin/python" fuxictr==2.3.10 "torch==$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')"
echo "$VENV/bin/python"
