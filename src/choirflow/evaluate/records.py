"""gold.metrics rows: every metric of one evaluation, overall and per activity bucket."""

from __future__ import annotations

from typing import Any

import numpy as np
from pyspark.sql import SparkSession

from choirflow import tables
from choirflow.buckets import ACTIVITY_BUCKETS
from choirflow.config import Settings
from choirflow.evaluate import metrics


def metric_rows(
    model_name: str,
    run_id: str,
    dt: str,
    labels: np.ndarray,
    scores: np.ndarray,
    users: np.ndarray,
    buckets: np.ndarray,
) -> list[dict[str, Any]]:
    """One row per (slice, metric): slice `all` and `activity=<bucket>` for each bucket that
    has rows; NaN (a slice with one class) is recorded as null."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    users, buckets = np.asarray(users), np.asarray(buckets)
    slices = {"all": np.ones(len(labels), dtype=bool)}
    for bucket in ACTIVITY_BUCKETS:
        slices[f"activity={bucket}"] = buckets == bucket
    rows = []
    for name, mask in slices.items():
        if not mask.any():
            continue
        for metric, value in metrics.summary(labels[mask], scores[mask], users[mask]).items():
            rows.append(
                {
                    "model": model_name,
                    "run_id": run_id,
                    "slice": name,
                    "metric": metric,
                    "value": None if value is None or np.isnan(value) else float(value),
                    "dt": dt,
                }
            )
    return rows


def write_metrics(
    spark: SparkSession, settings: Settings, rows: list[dict[str, Any]], dt: str, model: str
) -> None:
    """Replace this model's rows of day dt (a rerun does not double them)."""
    table = tables.GOLD_METRICS
    df = table.frame(spark, rows)
    tables.replace_partition(df, table, settings, tables.partition(dt, model=model))
