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
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FEATURE_STEPS = ("behaviors", "item_embeddings", "user_features", "samples")


def build_world(work: Path, days: int) -> list[str]:
    """The demo world's settings over `days`, each day's feature steps run in this process."""
    from quality_world import build  # puts src/ on the path

    def features_only(dt: str, settings) -> None:
        from choirflow import pipeline
        from choirflow.steps import run_step

        run_step("ingest", dt, settings)
        pipeline.build_features(dt, settings, steps=FEATURE_STEPS)

    return build(work, "demo", features_only, days=days)


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
