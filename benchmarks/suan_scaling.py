"""SUAN's scaling claim on the quality world: does AUC grow with grade and with training days?

Method. The quality bundle (`quality_world.py`); SUAN with its full config
(configs/models/suan.yaml) at grades (stacked blocks) 1, 2 and 3, each trained on the last
1, 2 and 4 training days of the bundle, one epoch as the paper's released configs do
(so more days also means more steps), the same seed, scored on the evaluation day. A small
grid on a 2-core CPU, not the paper's three orders of magnitude: it checks the direction of
the claim, with the seed-to-seed spread of the quality table (about 0.001-0.002 AUC) as
the noise to read it against.

    .venv/bin/python benchmarks/suan_scaling.py --bundle benchmarks/data/quality.npz \
        --output benchmarks/results/suan_scaling.json [--grades 1,2,3 --days 1,2,4]
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import _write_json, evaluate, last_days  # noqa: E402
from samples_bundle import load  # noqa: E402

from choirflow.models import build_model  # noqa: E402
from choirflow.train.loop import load_model_config, predict, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--grades", default="1,2,3")
    parser.add_argument("--days", default="1,2,4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    splits, sizes, vectors, _, meta = load(args.bundle)
    ev, device = splits["eval"], torch.device("cpu")
    cfg = load_model_config("suan")
    cells = _done(args.output, args.seed)  # a rerun keeps the cells a cut-short run finished
    for days in (int(d) for d in args.days.split(",")):
        rows = last_days(args.bundle, splits["train"], days)
        for grade in (int(g) for g in args.grades.split(",")):
            if any((c["grade"], c["days"]) == (grade, days) for c in cells):
                continue
            torch.manual_seed(args.seed)
            model = build_model("suan", sizes, vectors, **(cfg.params | {"grade": grade}))
            start = time.perf_counter()
            result = train(model, rows, epochs=1, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, seed=args.seed, device=device,
                           progress=False)  # fmt: skip
            cell = evaluate(ev.click, predict(model, ev, device), ev.users, ev.activity_bucket)
            cell = {k: round(v, 4) for k, v in cell.items()} | {
                "grade": grade, "days": days, "train_rows": len(rows),
                "parameters": sum(p.numel() for p in model.parameters()),
                "seconds": round(time.perf_counter() - start, 1),
                "samples_per_s": round(result.samples_per_second),
            }  # fmt: skip
            cells.append(cell)
            print(json.dumps(cell), flush=True)
            _write(args, meta, cells)
    _write(args, meta, cells)  # also when every cell was done before


def _write(args, meta: dict, cells: list[dict]) -> None:
    table = {f"grade {c['grade']}": {} for c in sorted(cells, key=lambda c: c["grade"])}
    for c in sorted(cells, key=lambda c: c["days"]):
        table[f"grade {c['grade']}"][f"{c['days']} days"] = c["auc"]
    _write_json(args.output, {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU",
        "command": "python benchmarks/suan_scaling.py " + " ".join(sys.argv[1:]),
        "data": meta, "seed": args.seed, "auc_by_grade_and_days": table, "cells": cells,
        "grows_with_grade": _monotone(cells, "grade", "days"),
        "grows_with_days": _monotone(cells, "days", "grade"),
    })  # fmt: skip


def _done(output: str, seed: int) -> list[dict]:
    path = Path(output)
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    return earlier["cells"] if earlier.get("seed") == seed else []


def _monotone(cells: list[dict], along: str, fixed: str) -> dict[str, bool]:
    """For each value of `fixed`: does AUC rise with `along` (every step up)?"""
    out = {}
    for value in sorted({c[fixed] for c in cells}):
        line = sorted((c[along], c["auc"]) for c in cells if c[fixed] == value)
        aucs = [auc for _, auc in line]
        if len(aucs) > 1:  # a single cell says nothing about a trend
            out[f"{fixed}={value}"] = bool(np.all(np.diff(aucs) > 0))
    return out


if __name__ == "__main__":
    main()
