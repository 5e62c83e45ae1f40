"""The daily gates: bronze after ingest, gold (samples and item embeddings) after features."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset
from choirflow.quality.gate import gate
from choirflow.quality.suites import (
    bronze_dimension_suite,
    bronze_events_suite,
    gold_samples_suite,
    item_embeddings_suite,
    user_groups_suite,
)


def previous_counts(
    spark: SparkSession, settings: Settings, table: tables.Table, dt: str, days: int = 7
) -> list[int]:
    """Row counts of the partitions in the `days` before dt (those that exist)."""
    if not tables.exists(spark, table, settings):
        return []
    rows = (
        tables.read(spark, table, settings)
        .where((F.col("dt") >= day_offset(dt, -days)) & (F.col("dt") < dt))
        .groupBy("dt")
        .count()
        .collect()
    )
    return [int(r["count"]) for r in rows]


def bronze_gate(spark: SparkSession, settings: Settings, dt: str) -> list[dict[str, Any]]:
    q = settings.quality
    events = tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == dt)
    prior = previous_counts(spark, settings, tables.BRONZE_EVENTS, dt)
    out = [gate(spark, settings, events, bronze_events_suite(prior, q.volume_tolerance), dt)]
    for name, table in (
        ("items", tables.BRONZE_ITEM_HISTORY),
        ("users", tables.BRONZE_USER_HISTORY),
    ):
        out.append(
            gate(
                spark,
                settings,
                tables.read_as_of(spark, table, settings, dt),
                bronze_dimension_suite(name),
                dt,
            )
        )
    return out


def gold_gate(spark: SparkSession, settings: Settings, dt: str) -> list[dict[str, Any]]:
    q = settings.quality
    samples = tables.read(spark, tables.GOLD_SAMPLES, settings).where(F.col("dt") == dt)
    prior = previous_counts(spark, settings, tables.GOLD_SAMPLES, dt)
    groups_before = tables.exists(spark, tables.SILVER_USER_GROUPS, settings) and (
        tables.read(spark, tables.SILVER_USER_GROUPS, settings)
        .where(F.col("dt") < dt)
        .limit(1)
        .count()
        > 0
    )
    spec = gold_samples_suite(
        settings.features.max_seq_len, prior, q.volume_tolerance, (q.ctr_min, q.ctr_max),
        groups_expected=groups_before,
    )  # fmt: skip
    out = [gate(spark, settings, samples, spec, dt)]
    if tables.exists(spark, tables.SILVER_ITEM_EMBEDDINGS, settings):
        embeddings = tables.read(spark, tables.SILVER_ITEM_EMBEDDINGS, settings)
        spec = item_embeddings_suite(settings.features.item_embedding_dim)
        out.append(gate(spark, settings, embeddings, spec, dt))
    return out


def groups_gate(spark: SparkSession, settings: Settings, dt: str) -> list[dict[str, Any]]:
    """silver.user_groups[dt] after assignment: coverage of every known user, code shape."""
    groups = tables.read(spark, tables.SILVER_USER_GROUPS, settings).where(F.col("dt") == dt)
    users = tables.read_as_of(spark, tables.BRONZE_USER_HISTORY, settings, dt).count()
    spec = user_groups_suite(users, len(settings.groups.centroids))
    return [gate(spark, settings, groups, spec, dt)]
