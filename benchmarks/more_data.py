"""Does more training data close the gap to the oracle AUC?

Method. The demo world's settings with more days (default 24). Its days run in-process
(ingest, behaviours, item embeddings, user features, samples; the groups step is skipped, so
only models without a group channel are compared). Then one bundle per training window (the
same evaluation day, the last day) and `quality.py` on each, so the only difference between
the rows is how many days of impressions the models learn from.

    .venv/bin/python benchmarks/more_data.py [--days 24 --train-days 7,21 --models dnn,din,tin]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FEATURE_STEPS = ("behaviors", "item_embeddings", "user_features", "samples")


def build_world(work: Path, days: int) -> list[str]:
    """Generate the world and run its days in this process; returns the days."""
    os.environ["CHOIRFLOW__PATHS__RAW"] = str(work / "raw")
    os.environ["CHOIRFLOW__PATHS__WAREHOUSE"] = str(work / "warehouse")
    sys.path.insert(0, str(ROOT / "src"))
    from choirflow import pipeline
    from choirflow.config import load_settings
    from choirflow.synth.world import generate_world, preset, write_world

    world = generate_world(preset("demo", days=days))
    day_list = write_world(world, work)["days"]
    print(json.dumps(world.summary), flush=True)
    settings = load_settings()
    for dt in day_list:
        t0 = time.perf_counter()
        pipeline.ingest(dt, settings)
        pipeline.build_features(dt, settings, steps=FEATURE_STEPS)
        print(f"[more_data] {dt} built in {time.perf_counter() - t0:.0f}s", flush=True)
    return day_list


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=24)
    parser.add_argument("--train-days", default="7,21", help="training windows to compare")
    parser.add_argument("--models", default="dnn,din,tin")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", default="", help="world folder (default: a new temp dir)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="choirflow-more-data-"))
    work.mkdir(parents=True, exist_ok=True)
    day_list = build_world(work, args.days)
    summary = {}
    for window in [int(w) for w in args.train_days.split(",")]:
        bundle = work / f"bundle_{window}.npz"
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "samples_bundle.py"),
             "--warehouse", str(work / "warehouse"), "--raw", str(work / "raw"),
             "--day", day_list[-1], "--train-days", str(window), "--out", str(bundle)],
            check=True,
        )  # fmt: skip
        out = RESULTS / f"quality_more_data_{window}d.json"
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--bundle", str(bundle),
             "--models", args.models, "--seeds", args.seeds, "--epochs", str(args.epochs),
             "--learning-rate", "0.001", "--device", args.device, "--output", str(out)],
            check=True,
        )  # fmt: skip
        result = json.loads(out.read_text())
        summary[window] = {
            "rows": result["data"]["rows"],
            "oracle_auc": result["oracle"]["auc"],
            "best_model": result["best_model"],
            "best_auc": result["summary"][result["best_model"]]["auc"],
            "best_auc_gap_to_oracle": result["best_auc_gap_to_oracle"],
        }
        print(f"[more_data] {window} training days: {json.dumps(summary[window])}", flush=True)
    (RESULTS / "quality_more_data.json").write_text(
        json.dumps({"days": args.days, "command": " ".join(sys.argv), "windows": summary}, indent=2)
    )


if __name__ == "__main__":
    main()
