"""The CVR model trained on immature against mature labels, on the delayed world.

Method. The `delayed` world (conversions up to 4 days after their click, 5% of clicks and
conversions delivered 1-3 days late) is built from raw logs to gold.samples by `choirflow
backfill` in one chunk (late_labels.py's build: attribution window 96 h, look-back 7
days). Its labels are as of the range's last day, so the first days' labels are mature: a
conversion comes at most 4 days after its click and arrives at most 3 days late.

The CVR model (post-click conversion on clicked impressions) trains on the first
`--train-days` days, the last of them for validation, twice per seed on the same rows:
- immature: each day's labels as the daily run of the evaluation day trains on them: as of
  that day, after its correct_labels step (`features.labels.labelled` with it as the last
  day known), so the last training day's labels are 24 hours mature, the first's 144; the
  default `train.label_maturity_hours` (24) keeps all six;
- mature: the labels gold.samples holds at the end of the range.
Both are scored on the next day's clicked impressions with their mature labels. The gain
of mature over immature is paired by seed, with a bootstrap interval over seeds.

    .venv/bin/python benchmarks/label_maturity.py --root /tmp/maturity-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "label_maturity.json"

from late_labels import WINDOW_HOURS, _build  # noqa: E402
from quality import paired_gain  # noqa: E402


def _immature(spark, settings, frame, last_known: str):
    """`frame` with its labels as of `last_known` (what that day's run trains on)."""
    from choirflow import tables
    from choirflow.features.labels import KEY, label_events, labelled

    first = frame["dt"].min()
    impressions = (
        tables.read(spark, tables.GOLD_SAMPLES, settings)
        .where(tables.day_range(first, last_known))
        .select("event_id", *KEY, "event_time", "dt")
    )
    events = label_events(spark, settings, first, last_known)
    labels = labelled(impressions, events, WINDOW_HOURS, last_known, horizon=10_000)
    young = labels.select("event_id", "click", "conversion").toPandas()
    return frame.drop(columns=["click", "conversion"]).merge(young, on="event_id")


def _fit(spark, settings, model: str, train, evaluation, seed: int, epochs: int) -> dict:
    from choirflow.evaluate import metrics
    from choirflow.train.fit import fit_and_score, task_rows

    options = {"seed": seed, "task": "cvr", "epochs": epochs}
    settings = settings.model_copy(update={"train": settings.train.model_copy(update=options)})
    train, evaluation = task_rows(train, "cvr"), task_rows(evaluation, "cvr")
    t0 = time.perf_counter()
    fit = fit_and_score(spark, settings, model, train, evaluation)
    labels, users = fit.eval_data.conversion, fit.eval_data.users
    return {
        "seed": seed,
        "train_rows": int(len(train)),
        "train_conversions": int(train["conversion"].sum()),
        "auc": round(metrics.auc(labels, fit.scores), 4),
        "gauc": round(metrics.gauc_impression_weighted(labels, fit.scores, users), 4),
        "logloss": round(metrics.logloss(labels, fit.scores), 4),
        # Mean predicted CVR over the observed (mature) rate: 1 is calibrated.
        "calibration_ratio": round(float(fit.scores.mean() / labels.mean()), 4),
        "ece": round(metrics.expected_calibration_error(labels, fit.scores), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _means(runs: list[dict]) -> dict:
    keys = ("auc", "gauc", "logloss", "calibration_ratio", "ece", "train_conversions")
    return {k: round(sum(r[k] for r in runs) / len(runs), 4) for k in keys}


def _gaps(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Each run's distance from calibration, negated (larger is better)."""
    return {k: [{**r, "gap": -abs(1 - r["calibration_ratio"])} for r in v] for k, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="an empty folder for raw logs and tables")
    parser.add_argument("--model", default="din")
    parser.add_argument("--train-days", type=int, default=6)
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--epochs", type=int, default=3, help="early stopping on validation")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    root = Path(args.root)
    os.environ.update({
        "CHOIRFLOW__PATHS__JARS": str(ROOT / ".cache" / "jars"),
        "CHOIRFLOW__SPARK__MASTER": "local[2]", "TQDM_DISABLE": "1",
        "CHOIRFLOW__GROUPS__BACKEND": "template",
        "CHOIRFLOW__PATHS__WAREHOUSE": str(root / "across"),
        "CHOIRFLOW__PATHS__MODELS": str(root / "models"),
        "CHOIRFLOW__FEATURES__ATTRIBUTION_HOURS": str(WINDOW_HOURS),
    })  # fmt: skip
    from choirflow.config import load_settings
    from choirflow.spark import get_spark
    from choirflow.synth.world import generate_world, preset, write_world
    from choirflow.train.inputs import load_samples

    world = generate_world(preset("delayed"))
    start = world.config.start
    days = [str(start.fromordinal(start.toordinal() + d)) for d in range(world.config.days)]
    built = None
    if not (root / "across").exists():
        write_world(world, root)
        built = _build(ROOT, root, "across", days,
                       {"CHOIRFLOW__FEATURES__PARENT_LOOKBACK_DAYS": "7"})  # fmt: skip
    settings = load_settings()
    spark = get_spark(settings)
    train_days, eval_day = days[: args.train_days], days[args.train_days]
    mature, _ = load_samples(spark, settings, train_days)
    evaluation, _ = load_samples(spark, settings, [eval_day])
    young = _immature(spark, settings, mature, eval_day)
    runs: dict[str, list[dict]] = {"immature": [], "mature": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, frame in (("immature", young), ("mature", mature)):
            fit = _fit(spark, settings, args.model, frame, evaluation, seed, args.epochs)
            runs[name].append(fit)
            print(name, runs[name][-1], flush=True)
    result = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "command": "python benchmarks/label_maturity.py " + " ".join(sys.argv[1:]),
        "world": "delayed",
        "model": args.model,
        "task": "cvr",
        "train_days": train_days,
        "evaluation_day": eval_day,
        "evaluation_rows": int((evaluation["click"] == 1).sum()),
        "evaluation_conversions": int(evaluation["conversion"].sum()),
        "runs": runs,
        "epochs": args.epochs,
        "means": {k: _means(v) for k, v in runs.items()},
        "mature_over_immature": {
            key: paired_gain(runs, "mature", "immature", key) for key in ("auc", "gauc")
        },
        # Positive: the mature model's mean prediction is closer to the observed rate.
        "calibration_gap_closed": paired_gain(_gaps(runs), "mature", "immature", "gap"),
        "build_seconds": built,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
