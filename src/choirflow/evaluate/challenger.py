"""The day's challenger: train on the days before dt, evaluate on dt, record and register.

Also `compare`: several models on the same samples, ranked in a leaderboard.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession

from choirflow.config import Settings
from choirflow.dates import days_before
from choirflow.evaluate import tracking
from choirflow.evaluate.records import metric_rows, write_metrics
from choirflow.evaluate.rescore import LABEL_COLUMN, MATURITY_AS_SCORED, RUN_ID, forget_rescored
from choirflow.features.labels import mature_days, maturity
from choirflow.logs import step_log
from choirflow.train.artifacts import RunFiles
from choirflow.train.fit import Fit, fit_and_score, task_label, task_rows
from choirflow.train.inputs import load_samples
from choirflow.train.loop import save_checkpoint

LEADERBOARD_COLUMNS = [
    "model",
    "auc",
    "gauc_impression_weighted",
    "user_averaged_auc",
    "logloss",
    "model_version",
]


def record_name(model_name: str, task: str) -> str:
    """A CVR run of a model is recorded apart from its CTR run."""
    return model_name if task == "ctr" else f"{model_name}-{task}"


def train_and_evaluate(
    spark: SparkSession, settings: Settings, dt: str, model_name: str | None = None
) -> dict[str, Any]:
    """Train on the days before dt, evaluate on dt (the next day), record metrics, track the
    run in MLflow and register the model as a challenger. The training window and the
    evaluation day are read from one version of gold.samples."""
    log = step_log(__name__, "train", dt)
    settings = tracking.with_task_registry(settings)
    model_name = model_name or settings.train.model
    task, label = settings.train.task, task_label(settings.train.task)
    window = days_before(dt, settings.train.train_days)
    train_days = mature_days(spark, settings, window, settings.train.label_maturity_hours)
    if len(train_days) < len(window):
        log.info("left out, labels not yet mature: %s", sorted(set(window) - set(train_days)))
    train_frame, version = load_samples(spark, settings, train_days)
    eval_frame, _ = load_samples(spark, settings, [dt], version=version)
    train_frame, eval_frame = task_rows(train_frame, task), task_rows(eval_frame, task)
    if train_frame.empty or eval_frame.empty or train_frame[label].nunique() < 2:
        reason = f"no training samples before {dt}" if train_frame.empty else "no evaluation rows"
        log.info("skipped: %s", reason)
        return {"status": "skipped", "reason": reason, "dt": dt}

    name = record_name(model_name, task)
    files = RunFiles.of(settings.models_dir, name, dt)
    if files.checkpoint.exists():  # a finished run: start over, not resume
        shutil.rmtree(files.train_state, ignore_errors=True)
    fit = fit_and_score(
        spark, settings, model_name, train_frame, eval_frame,
        checkpoint_dir=files.train_state, warm_from=_champion_to_warm_start(settings, model_name),
    )  # fmt: skip
    run_id = uuid.uuid4().hex[:12]
    labels = getattr(fit.eval_data, label)
    rows = metric_rows(
        name, run_id, dt, labels, fit.scores, fit.eval_data.users, fit.eval_data.activity_bucket
    )
    lineage = {
        "gold.samples": version,
        "silver.item_embeddings": fit.embeddings_version,
        "train_days": train_days,
        "label_maturity_hours": maturity(spark, settings, [*train_days, dt]),
    }
    meta = _run_meta(fit, model_name, task, run_id, dt, lineage)
    as_scored = {
        LABEL_COLUMN: label,
        MATURITY_AS_SCORED: lineage["label_maturity_hours"].get(dt),
        RUN_ID: run_id,
    }
    _write_run_files(files, fit, meta, eval_frame, labels, as_scored)
    overall = {r["metric"]: r["value"] for r in rows if r["slice"] == "all"}
    tracked = _track(settings, fit, name, dt, meta, lineage, overall, files)
    for row in rows:
        row["model_version"] = tracked["model_version"]
    write_metrics(spark, settings, rows, dt, name)
    forget_rescored(spark, settings, dt, name)  # an earlier run's second readings
    log.info(
        "%s on %d rows (%s samples/s): next-day AUC=%.4f GAUC=%.4f on %d rows; "
        "registered version %s",
        model_name, fit.train_rows, f"{fit.samples_per_second:,.0f}", overall["auc"],
        overall["gauc_impression_weighted"], len(fit.eval_data), tracked["model_version"],
    )  # fmt: skip
    return {
        "status": "trained",
        "dt": dt,
        "model": name,
        "run_id": run_id,
        "checkpoint": str(files.checkpoint),
        **tracked,
        **overall,
    }


def _track(
    settings: Settings,
    fit: Fit,
    name: str,
    dt: str,
    meta: dict[str, Any],
    lineage: dict[str, Any],
    overall: dict[str, Any],
    files: RunFiles,
) -> dict[str, str]:
    """The MLflow run and the registered challenger version."""
    return tracking.log_training_run(
        settings,
        model_name=name,
        dt=dt,
        params={**fit.params, **fit.train_opts, "train_rows": fit.train_rows},
        config=meta | {"vocab": None},
        lineage=lineage,
        epoch_losses=fit.epoch_losses,
        eval_metrics={k: v for k, v in overall.items() if isinstance(v, float)},
        checkpoint=files.checkpoint,
    )


def _run_meta(
    fit: Fit, model_name: str, task: str, run_id: str, dt: str, lineage: dict[str, Any]
) -> dict[str, Any]:
    """What the checkpoint carries: enough to rebuild and score the model later."""
    return {
        "model": model_name,
        "task": task,
        "model_config": fit.model_config,
        "run_id": run_id,
        "dt": dt,
        "params": fit.params,
        "train": fit.train_opts,
        "lineage": lineage,
        "vocab": fit.vocab.values,
        "train_rows": fit.train_rows,
        "samples_per_second": fit.samples_per_second,
        "warm_start_from": fit.warm_start,
        "valid_aucs": fit.valid_aucs,
        "best_epoch": fit.best_epoch,
    }


def _write_run_files(
    files: RunFiles,
    fit: Fit,
    meta: dict[str, Any],
    eval_frame: pd.DataFrame,
    labels,
    as_scored: dict[str, Any],
) -> None:
    save_checkpoint(files.checkpoint, fit.model, meta)
    predictions = pd.DataFrame(
        {
            "user_id": fit.eval_data.users,
            "activity_bucket": fit.eval_data.activity_bucket,
            "click": labels,  # the task's label (conversion for cvr)
            "score": fit.scores,
            "event_id": eval_frame["event_id"].to_numpy(),
            **as_scored,  # for evaluate.rescore: which label, how mature it was
        }
    )
    tmp = files.predictions.with_name(f".{files.predictions.name}.tmp")
    predictions.to_parquet(tmp, index=False)
    tmp.replace(files.predictions)
    curve = {
        "losses": fit.losses,
        "epoch_losses": fit.epoch_losses,
        "valid_aucs": fit.valid_aucs,
        "best_epoch": fit.best_epoch,
    }
    files.curve.write_text(json.dumps(curve))


def _champion_to_warm_start(settings: Settings, model_name: str) -> tuple[str, str] | None:
    """(version, checkpoint path) of the champion when warm start is on and the champion is
    the same kind of model."""
    if not settings.train.warm_start:
        return None
    current = tracking.champion(settings)
    if current is None or current["tags"].get("model") != model_name:
        return None
    return str(current["version"]), current["path"]


def compare(spark: SparkSession, settings: Settings, models: list[str], dt: str) -> pd.DataFrame:
    """Train the listed models on the same samples, evaluate on dt; return the leaderboard
    (also written as `<reports>/<dt>/leaderboard.csv`)."""
    return leaderboard(settings, [train_and_evaluate(spark, settings, dt, m) for m in models], dt)


def leaderboard(settings: Settings, results: list[dict[str, Any]], dt: str) -> pd.DataFrame:
    """The trained runs of `results`, best next-day GAUC first, written beside the report."""
    board = pd.DataFrame([r for r in results if r.get("status") == "trained"])
    if board.empty:
        return board
    board = board[LEADERBOARD_COLUMNS].sort_values("gauc_impression_weighted", ascending=False)
    out = Path(settings.reports_dir) / dt
    out.mkdir(parents=True, exist_ok=True)
    board.to_csv(out / "leaderboard.csv", index=False)
    return board
