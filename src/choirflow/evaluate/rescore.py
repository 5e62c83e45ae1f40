"""Evaluations scored a second time, once their day's labels have matured.

A day is evaluated by its own run, when its labels are as young as they get: the clicks
and conversions that arrive on later days are not in them yet, so the first AUC of a CVR
model in particular is measured against conversions that are partly missing. Promotion has
to decide then. Later runs, after correct_labels has brought the late events in, score the
same predictions (kept beside each run's checkpoint) against the day's labels as they are
now and record both readings in gold.mature_metrics, so the report shows how far the first
one was off. No model is run again: only the labels differ, on the same rows.
"""

from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset, days_between
from choirflow.evaluate.records import metric_rows
from choirflow.features.labels import horizon_days, maturity
from choirflow.logs import step_log
from choirflow.train.artifacts import RunFiles

# Columns each run's predictions carry for this: the task's label column of gold.samples,
# the evaluation day's label maturity when the run scored it, and the run.
LABEL_COLUMN = "label_column"
MATURITY_AS_SCORED = "label_maturity_hours"
RUN_ID = "run_id"


def rescore_matured(spark: SparkSession, settings: Settings, dt: str) -> list[dict[str, Any]]:
    """Score again the evaluations of the days before dt (within the labels' horizon) whose
    labels have matured since they were scored; one summary per run re-scored."""
    horizon = horizon_days(settings)
    if horizon < 1 or not tables.exists(spark, tables.GOLD_METRICS, settings):
        return []  # no label changes after a day's own run, or nothing evaluated yet
    days = days_between(day_offset(dt, -horizon), day_offset(dt, -1))
    now = maturity(spark, settings, days)
    ready = [d for d in days if now.get(d, -1) >= settings.train.label_maturity_hours]
    stale = {d: _stale_runs(settings, d, now[d]) for d in ready}
    stale = {d: runs for d, runs in stale.items() if runs}
    if not stale:
        return []
    labels = _labels_now(spark, settings, list(stale))
    first = _metrics_as_scored(spark, settings, stale)
    rows: list[dict[str, Any]] = []
    for day, runs in stale.items():
        for name, predictions in runs.items():
            rows += _rescored_rows(name, day, predictions, labels[day], first, now[day])
    if not rows:
        return []
    _write(spark, settings, rows)
    pairs = sorted({(r["dt"], r["model"]) for r in rows})
    done = [_summary(rows, day, name) for day, name in pairs]
    step_log(__name__, "rescore", dt).info(
        "%d evaluations re-scored on mature labels: %s", len(done), done
    )
    return done


def forget_rescored(spark: SparkSession, settings: Settings, dt: str, name: str) -> None:
    """Drop the second readings of an earlier run of (dt, name): a new run replaces it."""
    if tables.exists(spark, tables.GOLD_MATURE_METRICS, settings):
        path = tables.GOLD_MATURE_METRICS.path(settings)
        DeltaTable.forPath(spark, path).delete(tables.partition(dt, model=name))


def _stale_runs(settings: Settings, day: str, hours_now: int) -> dict[str, pd.DataFrame]:
    """record name -> predictions of the runs that evaluated `day` on younger labels than
    it has now (and kept what this needs)."""
    out = {}
    for folder in sorted(Path(settings.models_dir).glob(f"*/{day}")):
        path = RunFiles(folder).predictions
        if path.exists():
            predictions = pd.read_parquet(path)
            if {LABEL_COLUMN, MATURITY_AS_SCORED, RUN_ID} <= set(predictions.columns):
                if _as_scored_hours(predictions) < hours_now:
                    out[folder.parent.name] = predictions
    return out


def _labels_now(
    spark: SparkSession, settings: Settings, days: list[str]
) -> dict[str, pd.DataFrame]:
    """day -> its gold.samples labels by event id, the days read in one pass."""
    rows = tables.read(spark, tables.GOLD_SAMPLES, settings).where(F.col("dt").isin(days))
    frame = rows.select("event_id", "dt", "click", "conversion").toPandas()
    by_day = {day: part.set_index("event_id") for day, part in frame.groupby("dt")}
    return {day: by_day.get(day, frame.set_index("event_id").iloc[:0]) for day in days}


def _as_scored_hours(predictions: pd.DataFrame) -> int:
    hours = predictions[MATURITY_AS_SCORED]
    return -1 if hours.isna().all() else int(hours.iloc[0])


def _metrics_as_scored(
    spark: SparkSession, settings: Settings, stale: dict[str, dict[str, pd.DataFrame]]
) -> pd.DataFrame:
    """gold.metrics rows of the runs' first readings, the days read in one pass."""
    metrics = tables.read(spark, tables.GOLD_METRICS, settings)
    wanted = metrics.where(_runs_condition(stale))
    return wanted.select(
        "dt", "model", "run_id", "model_version", "slice", "metric", "value"
    ).toPandas()


def _runs_condition(stale: dict[str, Any]):
    """The rows of each (day, record name) pair: what one run owns in either table."""
    pairs = [tables.partition(day, model=name) for day, runs in stale.items() for name in runs]
    return reduce(lambda a, b: a | b, pairs)


def _rescored_rows(
    name: str,
    day: str,
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    first: pd.DataFrame,
    hours_now: int,
) -> list[dict[str, Any]]:
    """gold.mature_metrics rows of one run: its predictions against today's labels, beside
    its first reading (matched by slice and metric). Rows gold.samples no longer holds are
    left out of the second reading, not counted as negatives."""
    run = str(predictions[RUN_ID].iloc[0])  # the run gold.metrics holds, not an earlier one
    first = first[(first["dt"] == day) & (first["model"] == name) & (first["run_id"] == run)]
    if first.empty:
        return []
    column = str(predictions[LABEL_COLUMN].iloc[0])
    current = labels[column].reindex(predictions["event_id"].to_numpy())
    kept = current.notna().to_numpy()
    if not kept.any():
        return []
    rows = predictions[kept]
    current = current[kept].to_numpy(dtype=int)
    scored = rows["click"].to_numpy(dtype=int)  # the task's label when it was scored
    version = str(first["model_version"].iloc[0])
    again = metric_rows(
        name, run, day, current, rows["score"].to_numpy(),
        rows["user_id"].to_numpy(), rows["activity_bucket"].to_numpy(),
    )  # fmt: skip
    before = first.set_index(["slice", "metric"])["value"]
    for row in again:
        value = before.get((row["slice"], row["metric"]))
        row["model_version"] = version
        row["value_as_scored"] = None if value is None or pd.isna(value) else float(value)
        row["maturity_hours_as_scored"] = _as_scored_hours(predictions)
        row["maturity_hours"] = hours_now
        row["labels_changed"] = int(np.sum(current != scored))
    return again


def _write(spark: SparkSession, settings: Settings, rows: list[dict[str, Any]]) -> None:
    """One commit for every run re-scored: each (day, record name) pair's rows replaced."""
    stale: dict[str, set[str]] = {}
    for row in rows:
        stale.setdefault(row["dt"], set()).add(row["model"])
    table = tables.GOLD_MATURE_METRICS
    tables.replace_partition(table.frame(spark, rows), table, settings, _runs_condition(stale))


def _summary(rows: list[dict[str, Any]], day: str, name: str) -> dict[str, Any]:
    """A run's overall AUC, first and now, for the log and the step's result."""
    auc = next(
        r for r in rows
        if (r["dt"], r["model"], r["slice"], r["metric"]) == (day, name, "all", "auc")
    )  # fmt: skip
    return {
        "dt": day,
        "model": name,
        "auc_as_scored": _rounded(auc["value_as_scored"]),
        "auc_mature": _rounded(auc["value"]),
        "labels_changed": auc["labels_changed"],
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
