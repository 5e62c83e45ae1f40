"""Clicks and conversions that arrive before their parent wait; they are not refused.

A click whose impression has not been kept (a conversion whose click has not) is pending: it
waits in bronze.pending_events, a state written for the end of every day, and is released
into bronze.events on the first later day, within `features.parent_lookback_days` of its
arrival (the days a click looks back for its impression), on which its
parent is kept. It goes into that day's partition: a past partition is never rewritten, so
no feature already built changes. What still waits when the window closes expires into
bronze.quarantine (orphan_click / orphan_conversion) on the day it closes.

A daily run reads the state of the day before; a range reads the state before its chunk and
computes every day of the chunk in closed form (the first day a parent is kept), so the two
agree row for row.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset


def _day_plus(day: SparkColumn, days: int) -> SparkColumn:
    return F.date_format(F.date_add(F.to_date(day), days), "yyyy-MM-dd")


def carried(spark: SparkSession, settings: Settings, start: str, columns: list[str]) -> DataFrame:
    """The rows still waiting at the end of the day before start, shaped as a delivery:
    `columns` (the contract's), raw_record and dt = the day each arrived."""
    table = tables.BRONZE_PENDING_EVENTS
    if not tables.exists(spark, table, settings):
        schema = tables.parse_columns(table.columns)
        return spark.createDataFrame([], schema).select(*columns, "raw_record", "dt")
    state = tables.read(spark, table, settings).where(F.col("dt") == day_offset(start, -1))
    return state.select(*columns, "raw_record", F.col("arrival_dt").alias("dt"))


def parent_days(
    rows: DataFrame, parents: DataFrame, keys: list[str], window_days: int,
    span: tuple[str, str],
) -> DataFrame:  # fmt: skip
    """rows (dt: arrival day; `_carried`: already waiting) with `orphan`: no parent of the
    same keys kept that day or in the window_days before it (a carried row is one), and for
    those `released_dt`, the first later day within window_days and the span on which a parent
    is kept (null if none), and `until`, the last day the event id stays taken while it waits
    (null once released: it is then in bronze for good). One join for both questions."""
    start, end = span
    have = parents.select(*[F.col(k).alias(f"_p_{k}") for k in keys], F.col("dt").alias("_p_dt"))
    match = reduce(lambda a, b: a & b, [F.col(k) == F.col(f"_p_{k}") for k in keys])
    arrival, seen = F.col("dt"), F.col("_p_dt")
    near = (seen >= _day_plus(arrival, -window_days)) & (seen <= _day_plus(arrival, window_days))
    later = (seen > arrival) & (seen >= F.lit(start)) & (seen <= F.lit(end))
    found = (
        rows.select("event_id", "dt", *keys)
        .join(have, match & near)
        .groupBy("event_id", "dt")
        .agg(
            F.max(seen <= arrival).alias("_before"),
            F.min(F.when(later, seen)).alias("_freed"),
        )
    )
    orphan = F.col("_carried") | ~F.coalesce(F.col("_before"), F.lit(False))
    released = F.when(F.col("orphan"), F.col("_freed"))
    until = F.when(F.col("orphan") & F.col("released_dt").isNull(), _day_plus(arrival, window_days))
    return (
        rows.join(found, ["event_id", "dt"], "left")
        .withColumn("orphan", orphan)
        .withColumn("released_dt", released)
        .withColumn("until", until)
        .drop("_before", "_freed")
    )


def released(resolved: DataFrame) -> DataFrame:
    """The rows a parent freed, in the partition of the day it was freed."""
    return resolved.where(F.col("released_dt").isNotNull()).withColumn("dt", F.col("released_dt"))


def expired(resolved: DataFrame, end: str) -> DataFrame:
    """The rows whose window closed by `end` without a parent, on the day it closed."""
    closed = F.col("released_dt").isNull() & (F.col("until") <= F.lit(end))
    return resolved.where(closed).withColumn("dt", F.col("until"))


def states(resolved: DataFrame, columns: list[str], start: str, end: str) -> DataFrame:
    """The state at the end of each day of [start, end]: the rows that had arrived by then and
    were neither released nor expired (a row freed or expired on day p waits through p - 1)."""
    leaves = F.coalesce("released_dt", "until")
    first = F.greatest(F.to_date("dt"), F.to_date(F.lit(start)))
    last = F.least(F.date_sub(F.to_date(leaves), 1), F.to_date(F.lit(end)))
    days = F.when(first <= last, F.sequence(first, last)).otherwise(F.array())
    return (
        resolved.select(
            *columns,
            "raw_record",
            F.col("dt").alias("arrival_dt"),
            F.explode(days).alias("_day"),
        )
        .select("*", F.date_format("_day", "yyyy-MM-dd").alias("dt"))
        .drop("_day")
    )
