"""The daily gates: bronze after ingest, gold (samples and item embeddings) after features."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset, days_between
from choirflow.quality.gate import (
    GateReport,
    conclude,
    gate_days,
    validate_days,
    validate_states,
)
from choirflow.quality.suites import (
    bronze_dimension_suite,
    bronze_events_suite,
    bronze_ingest_runs_suite,
    gold_samples_suite,
    item_embeddings_suite,
    relabelled_samples_suite,
    user_groups_suite,
)


def previous_counts(
    spark: SparkSession, settings: Settings, table: tables.Table, start: str, end: str,
    days: int = 7,
) -> dict[str, list[int]]:  # fmt: skip
    """For each day of [start, end]: the row counts of the partitions (those that exist) in
    the `days` before it, from one scan."""
    if not tables.exists(spark, table, settings):
        return {dt: [] for dt in days_between(start, end)}
    rows = (
        tables.read(spark, table, settings)
        .where((F.col("dt") >= day_offset(start, -days)) & (F.col("dt") < end))
        .groupBy("dt")
        .count()
        .collect()
    )
    counts = {r["dt"]: int(r["count"]) for r in rows}
    return {
        dt: [n for day, n in sorted(counts.items()) if day_offset(dt, -days) <= day < dt]
        for dt in days_between(start, end)
    }


def bronze_gate(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> list[dict[str, Any]]:
    """The bronze suites over every day of [start, end] (one day when end is None): the
    day's events, each dimension as it stood at the end of the day, and the ingest's own
    account of the day (counts reconcile, no file left unread)."""
    end = end or start
    tolerance = settings.quality.volume_tolerance
    events = tables.read(spark, tables.BRONZE_EVENTS, settings).where(tables.day_range(start, end))
    prior = previous_counts(spark, settings, tables.BRONZE_EVENTS, start, end)
    severity = settings.quality.volume_severity
    specs = {dt: bronze_events_suite(counts, tolerance, severity) for dt, counts in prior.items()}
    reports = validate_days(settings, events, specs)
    for name, table in (
        ("items", tables.BRONZE_ITEM_HISTORY),
        ("users", tables.BRONZE_USER_HISTORY),
    ):
        as_of = tables.read_as_of_days(spark, table, settings, start, end)
        delivered = _days_with(tables.read(spark, table, settings), "dt", start, end)
        spec = bronze_dimension_suite(name)
        reports += validate_states(settings, as_of, spec, list(prior), delivered, "as_of")
    runs = tables.read(spark, tables.BRONZE_INGEST_RUNS, settings).where(
        tables.day_range(start, end)
    )
    reports += validate_days(settings, runs, {dt: bronze_ingest_runs_suite() for dt in prior})
    return conclude(spark, settings, reports)


def _days_with(df: DataFrame, column: str, start: str, end: str) -> set[str]:
    """The days of [start, end] on which df has rows (by `column`)."""
    rows = df.where((F.col(column) >= start) & (F.col(column) <= end)).select(column)
    return {r[0] for r in rows.distinct().collect()}


def gold_gate(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> list[dict[str, Any]]:
    """The gold suites over every day of [start, end]: the day's samples, and the item
    vectors as they stood at the end of the day."""
    end = end or start
    q = settings.quality
    samples = tables.read(spark, tables.GOLD_SAMPLES, settings).where(tables.day_range(start, end))
    prior = previous_counts(spark, settings, tables.GOLD_SAMPLES, start, end)
    first_groups = (
        tables.read(spark, tables.SILVER_USER_GROUPS, settings).agg(F.min("dt")).first()[0]
        if tables.exists(spark, tables.SILVER_USER_GROUPS, settings)
        else None
    )
    specs = {
        dt: gold_samples_suite(
            settings.features.max_seq_len,
            counts,
            q.volume_tolerance,
            (q.ctr_min, q.ctr_max),
            groups_expected=first_groups is not None and first_groups < dt,
            volume_severity=q.volume_severity,
        )  # fmt: skip
        for dt, counts in prior.items()
    }
    reports = validate_days(settings, samples, specs)
    if tables.exists(spark, tables.SILVER_ITEM_EMBEDDINGS, settings):
        reports += _item_embedding_reports(spark, settings, start, end, list(prior))
    return conclude(spark, settings, reports)


def relabelled_gate(
    spark: SparkSession, settings: Settings, changed: DataFrame, days: list[str]
) -> list[dict[str, Any]]:
    """The past days whose labels a correction changed (`changed`: event_id of each changed
    row), after the MERGE: each recorded under its own day as `gold.samples:relabelled`."""
    if not days:
        return []
    q = settings.quality
    marked = changed.select("event_id", F.lit(1).alias("_changed"))
    samples = (
        tables.read(spark, tables.GOLD_SAMPLES, settings)
        .where(F.col("dt").isin(days))
        .select("event_id", "click", "conversion", "dt")
        .join(F.broadcast(marked), "event_id", "left")
        .withColumn("_changed", F.coalesce("_changed", F.lit(0)))
    )
    spec = relabelled_samples_suite((q.ctr_min, q.ctr_max), q.max_relabelled_share)
    return gate_days(spark, settings, samples, {dt: spec for dt in days})


def _item_embedding_reports(
    spark: SparkSession, settings: Settings, start: str, end: str, days: list[str]
) -> list[GateReport]:
    """The vectors of every item in the catalogue as of each day. The table keeps one
    vector per item, so a day is checked with the items known by then and their current
    vectors: a backfill that re-encodes an item later in its chunk checks the same rows a
    daily run did (a daily run has no later vector yet)."""
    stored = tables.read(spark, tables.SILVER_ITEM_EMBEDDINGS, settings)
    known = tables.read_as_of_days(spark, tables.BRONZE_ITEM_HISTORY, settings, start, end)
    embeddings = stored.join(known.select("item_id", F.col("as_of").alias("day")), "item_id")
    history = tables.read(spark, tables.BRONZE_ITEM_HISTORY, settings)
    changed = _days_with(stored, "updated_dt", start, end) | _days_with(history, "dt", start, end)
    spec = item_embeddings_suite(settings.features.item_embedding_dim)
    return validate_states(settings, embeddings, spec, days, changed, "day")


def groups_gate(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> list[dict[str, Any]]:
    """silver.user_groups of each day of [start, end] after assignment: coverage of every
    user known that day, code shape."""
    end = end or start
    groups = tables.read(spark, tables.SILVER_USER_GROUPS, settings).where(
        tables.day_range(start, end)
    )
    known = (
        tables.read_as_of_days(spark, tables.BRONZE_USER_HISTORY, settings, start, end)
        .groupBy("as_of")
        .count()
        .collect()
    )
    users = {r["as_of"]: int(r["count"]) for r in known}
    stages = len(settings.groups.centroids)
    specs = {dt: user_groups_suite(users.get(dt, 0), stages) for dt in days_between(start, end)}
    return gate_days(spark, settings, groups, specs)
