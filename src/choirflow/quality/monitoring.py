"""Cross-table monitoring for choirflow_quality: freshness, volume and distribution drift.

Freshness: the newest partition of each daily table against the day checked. Volume: the
day's rows against the mean of the 7 days before. Drift: the population stability index
(PSI) of gold.samples columns between the day and the 7 days before (categorical columns by
value, numeric ones by reference deciles). Results go to quality.monitoring and the report.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset
from choirflow.logs import step_log

DAILY_TABLES = (
    tables.BRONZE_EVENTS,
    tables.SILVER_BEHAVIORS,
    tables.SILVER_USER_FEATURES,
    tables.GOLD_SAMPLES,
    tables.GOLD_METRICS,
)
CATEGORICAL_DRIFT = ("activity_bucket", "item_top_category", "device", "surface", "hour")
NUMERIC_DRIFT = ("hist_len", "clicks_30d", "views_level")
PSI_WARN = 0.2
VOLUME_RATIO = (0.33, 3.0)


def psi(reference: np.ndarray, current: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index between two probability vectors over the same bins."""
    ref = np.clip(reference, eps, None)
    cur = np.clip(current, eps, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def categorical_psi(reference: pd.Series, current: pd.Series) -> float:
    values = sorted(set(reference.dropna().astype(str)) | set(current.dropna().astype(str)))
    ref = reference.astype(str).value_counts(normalize=True).reindex(values, fill_value=0)
    cur = current.astype(str).value_counts(normalize=True).reindex(values, fill_value=0)
    return psi(ref.to_numpy(), cur.to_numpy())


def numeric_psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    edges = np.unique(np.quantile(reference.dropna(), np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference.dropna(), edges)[0] / max(reference.notna().sum(), 1)
    cur = np.histogram(current.dropna(), edges)[0] / max(current.notna().sum(), 1)
    return psi(ref, cur)


def _row(check, table, column, value, threshold, ok, detail, dt) -> dict:
    """One quality.monitoring row."""
    status = "ok" if ok else "warn"
    return {
        "check": check, "table": table, "column": column, "value": float(value),
        "threshold": float(threshold), "status": status, "detail": detail, "dt": dt,
    }  # fmt: skip


def _freshness_and_volume(spark: SparkSession, settings: Settings, dt: str) -> list[dict]:
    """Per daily table: days since its newest partition, and the day's rows against the
    mean of the 7 days before."""
    rows = []
    for table in DAILY_TABLES:
        if not tables.exists(spark, table, settings):
            rows.append(_row("freshness", table.full_name, None, -1, 0, False, "table missing", dt))
            continue
        df = tables.read(spark, table, settings)
        newest = df.agg(F.max("dt")).first()[0]
        lag = (date.fromisoformat(dt) - date.fromisoformat(newest)).days if newest else 999
        rows.append(_row("freshness", table.full_name, None, lag, 0, lag <= 0,
                         f"newest partition {newest}", dt))  # fmt: skip
        counts = {
            r["dt"]: r["count"]
            for r in df.where((F.col("dt") >= day_offset(dt, -7)) & (F.col("dt") <= dt))
            .groupBy("dt")
            .count()
            .collect()
        }
        prior = [v for k, v in counts.items() if k < dt]
        today = counts.get(dt, 0)
        if prior:
            mean = sum(prior) / len(prior)
            ratio = today / mean
            ok = VOLUME_RATIO[0] <= ratio <= VOLUME_RATIO[1]
            detail = f"{today} rows vs mean {mean:.0f}"
            rows.append(
                _row("volume", table.full_name, None, ratio, VOLUME_RATIO[1], ok, detail, dt)
            )
    return rows


def _drift(spark: SparkSession, settings: Settings, dt: str) -> list[dict]:
    """PSI of gold.samples' columns on dt against the 7 days before."""
    if not tables.exists(spark, tables.GOLD_SAMPLES, settings):
        return []
    cols = [*CATEGORICAL_DRIFT, *NUMERIC_DRIFT]
    samples = tables.read(spark, tables.GOLD_SAMPLES, settings)
    current = samples.where(F.col("dt") == dt).select(*cols).toPandas()
    reference = (
        samples.where((F.col("dt") >= day_offset(dt, -7)) & (F.col("dt") < dt))
        .select(*cols)
        .toPandas()
    )
    if not (len(current) and len(reference)):
        return []
    rows = []
    for col in cols:
        if col in CATEGORICAL_DRIFT:
            value = categorical_psi(reference[col], current[col])
        else:
            value = numeric_psi(reference[col].astype(float), current[col].astype(float))
        rows.append(
            _row("drift_psi", "gold.samples", col, value, PSI_WARN, value <= PSI_WARN, "", dt)
        )
    return rows


def monitor(spark: SparkSession, settings: Settings, dt: str) -> pd.DataFrame:
    """Freshness, volume and drift checks of day dt, written to quality.monitoring."""
    rows = _freshness_and_volume(spark, settings, dt) + _drift(spark, settings, dt)
    df = tables.QUALITY_MONITORING.frame(spark, rows)
    tables.replace_partition(df, tables.QUALITY_MONITORING, settings, tables.partition(dt))
    result = df.drop("checked_at").toPandas()
    warn = result[result["status"] == "warn"]
    log = step_log(__name__, "monitor", dt)
    log.info("%d checks, %d warnings", len(result), len(warn))
    for r in warn.itertuples():
        log.warning("%s %s %s value=%.3f %s", r.check, r.table, r.column or "", r.value, r.detail)
    return result
