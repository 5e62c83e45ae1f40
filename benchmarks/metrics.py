"""GAUC over 1,000,000 rows and 100,000 users: the vectorised metric against a per-user
loop (scikit-learn's roc_auc_score per user), the obvious implementation it replaces.

    .venv/bin/python benchmarks/metrics.py [--rows 1000000 --users 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from choirflow.evaluate.metrics import gauc_impression_weighted  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "metrics.json"


def per_user_loop(labels, scores, users) -> float:
    order = np.argsort(users, kind="stable")
    labels, scores, users = labels[order], scores[order], users[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    total, weight = 0.0, 0
    for y, s in zip(np.split(labels, bounds), np.split(scores, bounds), strict=True):
        if y.min() != y.max():
            total += roc_auc_score(y, s) * len(y)
            weight += len(y)
    return total / weight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    users = rng.integers(0, args.users, args.rows)
    scores = rng.random(args.rows)
    labels = (rng.random(args.rows) < 0.1 + 0.3 * scores).astype(np.int64)
    fast = []
    for _ in range(3):
        t0 = time.perf_counter()
        value = gauc_impression_weighted(labels, scores, users)
        fast.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    reference = per_user_loop(labels, scores, users)
    loop_seconds = time.perf_counter() - t0
    assert abs(value - reference) < 1e-9, (value, reference)
    out = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "command": "python benchmarks/metrics.py " + " ".join(sys.argv[1:]),
        "rows": args.rows,
        "users": args.users,
        "gauc_seconds_1m": round(min(fast), 3),
        "per_user_loop_seconds": round(loop_seconds, 2),
        "speedup_vs_loop": round(loop_seconds / min(fast), 1),
        "gauc": value,
    }
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
