"""Behaviour sequences, carried from day to day in silver.sequence_state.

silver.sequence_state[dt] holds each user's last L clicks as of the end of day dt. A daily run
reads one partition (the day before), adds the day's clicks and writes the next one, so its
cost follows the day's events and the number of users with state, not the length of history.

Point in time: the sequence of an impression at T holds clicks with event time < T only; at
equal times the impression comes first. Elements are ordered by (event time, event id).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from choirflow import tables
from choirflow.config import Settings
from choirflow.features.activity import day_offset

ELEMENT = T.StructType(
    [
        T.StructField("ts", T.TimestampType()),
        T.StructField("event_id", T.StringType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("category", T.StringType()),
    ]
)
SEQUENCE = T.ArrayType(ELEMENT)


def _element() -> Column:
    return F.struct(F.col("event_time").alias("ts"), "event_id", "item_id", "category").cast(
        ELEMENT
    )


def _last(arr: Column, n: int) -> Column:
    """The last n elements of an array (all of it when shorter)."""
    return F.slice(arr, F.greatest(F.size(arr) - n + 1, F.lit(1)), n)


def _append_in_order(prev: str, today: str) -> Column:
    """prev ++ today in (time, event id) order. Both are sorted; only a late click (older than
    the end of prev) needs the full sort, so the common case is a plain concat."""
    prev_seq = F.coalesce(F.col(prev), F.array().cast(SEQUENCE))
    combined = F.concat(prev_seq, today)
    in_order = (F.size(prev_seq) == 0) | (F.element_at(today, 1) > F.element_at(prev_seq, -1))
    return F.when(in_order, combined).otherwise(F.array_sort(combined))


def empty_state(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(
        [], T.StructType([T.StructField("user_id", T.StringType()), T.StructField("seq", SEQUENCE)])
    )


def state_from_clicks(clicks: DataFrame, max_len: int) -> DataFrame:
    """Full recomputation: user_id, seq (last max_len clicks) from a set of clicks."""
    ranked = clicks.withColumn(
        "_r",
        F.row_number().over(
            Window.partitionBy("user_id").orderBy(
                F.col("event_time").desc(), F.col("event_id").desc()
            )
        ),
    ).where(F.col("_r") <= max_len)
    return ranked.groupBy("user_id").agg(F.array_sort(F.collect_list(_element())).alias("seq"))


def previous_state(spark: SparkSession, settings: Settings, dt: str) -> DataFrame:
    """user_id, seq as of the end of the day before dt.

    Reads silver.sequence_state[dt - 1]; when that partition is missing (first run, or the
    state was dropped) it is recomputed from silver.behaviors of the history window.
    """
    prev_day = day_offset(dt, -1)
    if tables.exists(spark, tables.SILVER_SEQUENCE_STATE, settings):
        state = tables.read(spark, tables.SILVER_SEQUENCE_STATE, settings).where(
            F.col("dt") == prev_day
        )
        if state.limit(1).count():
            return state.select("user_id", "seq")
    if not tables.exists(spark, tables.SILVER_BEHAVIORS, settings):
        return empty_state(spark)
    f = settings.features
    clicks = tables.read(spark, tables.SILVER_BEHAVIORS, settings).where(
        (F.col("dt") >= day_offset(dt, -f.history_days))
        & (F.col("dt") < dt)
        & (F.col("behavior_type") == "click")
    )
    return state_from_clicks(clicks, f.max_seq_len)


def sequences_for_day(
    impressions: DataFrame, clicks: DataFrame, prev: DataFrame, max_len: int
) -> tuple[DataFrame, DataFrame]:
    """(impressions with `hist`, the new state rows of users who clicked).

    impressions: user_id, event_id, event_time, ...; clicks (the day's): user_id, event_id,
    event_time, item_id, category; prev: user_id, seq.
    """
    prev = prev.withColumnRenamed("seq", "prev_seq")
    upto_self = (
        Window.partitionBy("user_id")
        .orderBy("event_time", "event_id")
        .rowsBetween(-(max_len - 1), 0)
    )
    with_seq = (
        clicks.withColumn("today", F.collect_list(_element()).over(upto_self))
        .join(prev, "user_id", "left")
        .withColumn("seq", _last(_append_in_order("prev_seq", "today"), max_len))
        .cache()  # read twice: for the impressions' sequences and for the new state
    )
    click_rows = with_seq.select(
        "user_id", "event_id", F.col("event_time").alias("ts"), F.lit(1).alias("kind"), "seq"
    )
    active = impressions.select("user_id").distinct()
    seeds = prev.join(active, "user_id").select(
        "user_id",
        F.lit("").alias("event_id"),
        F.lit("1970-01-01 00:00:00").cast("timestamp").alias("ts"),  # before any impression
        F.lit(1).alias("kind"),
        F.col("prev_seq").alias("seq"),
    )
    # Impressions carry all their columns through the window (no join back afterwards).
    impression_rows = impressions.select(
        "*",
        F.col("event_time").alias("ts"),
        F.lit(0).alias("kind"),
        F.lit(None).cast(SEQUENCE).alias("seq"),
    )
    # Impressions sort before clicks at the same instant: ties do not leak.
    before = (
        Window.partitionBy("user_id")
        .orderBy("ts", "kind", "event_id")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    union = impression_rows.unionByName(click_rows, allowMissingColumns=True).unionByName(
        seeds, allowMissingColumns=True
    )
    # A late impression may precede clicks carried in the state: keep only what came before.
    # The list is in time order, so only a list whose last click is not before the impression
    # needs the element-wise filter.
    hist = F.coalesce("hist", F.array().cast(SEQUENCE))
    out = (
        union.withColumn("hist", F.last("seq", ignorenulls=True).over(before))
        .where(F.col("kind") == 0)
        .withColumn(
            "hist",
            F.when(
                F.coalesce(F.try_element_at(hist, F.lit(-1))["ts"] < F.col("ts"), F.lit(True)), hist
            ).otherwise(F.filter(hist, lambda x: x["ts"] < F.col("ts"))),
        )
        .drop("ts", "kind", "seq")
    )
    last_click = Window.partitionBy("user_id").orderBy(
        F.col("event_time").desc(), F.col("event_id").desc()
    )
    changed = (
        with_seq.withColumn("_r", F.row_number().over(last_click))
        .where(F.col("_r") == 1)
        .select("user_id", "seq")
    )
    return out, changed


def next_state(prev: DataFrame, changed: DataFrame) -> DataFrame:
    """State at the end of the day: users who clicked get their new list, others keep theirs."""
    kept = prev.join(changed.select("user_id"), "user_id", "left_anti")
    return kept.select("user_id", "seq").unionByName(changed.select("user_id", "seq"))


def write_state(settings: Settings, state: DataFrame, dt: str) -> None:
    """Write the state of day dt and drop the days past retention in the same commit."""
    out = state.withColumn("dt", F.lit(dt))
    oldest = day_offset(dt, -settings.features.state_retention_days)
    tables.replace_partition(
        out, tables.SILVER_SEQUENCE_STATE, settings, f"dt = '{dt}' OR dt < '{oldest}'"
    )


def sequence_columns(hist: str = "hist", time_col: str = "event_time") -> list[Column]:
    """hist_item_ids, hist_categories, hist_gap_seconds (oldest first), hist_len."""
    gap = lambda x: F.col(time_col).cast("double") - x["ts"].cast("double")  # noqa: E731
    return [
        F.transform(hist, lambda x: x["item_id"]).alias("hist_item_ids"),
        F.transform(hist, lambda x: x["category"]).alias("hist_categories"),
        F.transform(hist, gap).alias("hist_gap_seconds"),
        F.size(hist).alias("hist_len"),
    ]
