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
from choirflow.dates import day_offset

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


def _in_order(prev_seq: Column, today: Column) -> Column:
    """prev ++ today in (time, event id) order. Both are sorted; only a late click (older than
    the end of prev) needs the full sort, so the common case is a plain concat."""
    combined = F.concat(prev_seq, today)
    in_order = F.coalesce(
        F.try_element_at(today, F.lit(1)) > F.try_element_at(prev_seq, F.lit(-1)), F.lit(True)
    )
    return F.when(in_order, combined).otherwise(F.array_sort(combined))


def sequences_for_day(
    impressions: DataFrame,
    clicks: DataFrame,
    prev: DataFrame,
    max_len: int,
    day_start: Column | None = None,
) -> tuple[DataFrame, DataFrame]:
    """(impressions with the hist_* columns, the new state rows of users who clicked).

    Each active user's timeline (carried state ++ the day's clicks, in order) is built once;
    an impression takes the last max_len elements of it that are strictly older than itself.
    Ties: a click in the same second as the impression is not before it.

    impressions: user_id, event_id, event_time, ...; clicks (the day's): user_id, event_id,
    event_time, item_id, category; prev: user_id, seq.
    """
    empty = F.array().cast(SEQUENCE)
    today = clicks.groupBy("user_id").agg(F.array_sort(F.collect_list(_element())).alias("today"))
    active = impressions.select("user_id").union(clicks.select("user_id")).distinct()
    timeline = (
        active.join(prev, "user_id", "left")
        .join(today, "user_id", "left")
        .select(
            "user_id",
            F.col("today").isNotNull().alias("clicked"),
            _in_order(F.coalesce("seq", empty), F.coalesce("today", empty)).alias("timeline"),
        )
        .cache()  # read twice: for the impressions' sequences and for the new state
    )
    # Every impression's user has a timeline row (maybe empty): `active` includes them all.
    out = attach_history(impressions, timeline, ["user_id"], max_len, day_start)
    changed = timeline.where("clicked").select(
        "user_id", _last(F.col("timeline"), max_len).alias("seq")
    )
    return out, changed


def attach_history(
    impressions: DataFrame,
    timelines: DataFrame,
    keys: list[str],
    max_len: int,
    day_start: Column | None = None,
) -> DataFrame:
    """Impressions with hist_* columns: the last max_len elements of their timeline (joined
    on `keys`) strictly older than the impression; with `day_start`, also clicks_today (all
    of the timeline's clicks from day_start until the impression, not only the last L)."""
    per_user = timelines.select(
        *keys,
        F.transform("timeline", lambda x: x["ts"]).alias("_ts"),
        F.transform("timeline", lambda x: x["item_id"]).alias("_items"),
        F.transform("timeline", lambda x: x["category"]).alias("_categories"),
    )
    ts = F.col("event_time")
    before = F.size(F.filter("_ts", lambda t: t < ts))  # the timeline is in time order
    start = F.greatest(before - max_len + 1, F.lit(1))
    length = before - start + 1
    out = impressions.join(per_user, keys, "left").select(
        "*",
        F.slice("_items", start, length).alias("hist_item_ids"),
        F.slice("_categories", start, length).alias("hist_categories"),
        F.transform(
            F.slice("_ts", start, length), lambda t: ts.cast("double") - t.cast("double")
        ).alias("hist_gap_seconds"),
        length.alias("hist_len"),
    )
    if day_start is not None:
        out = out.withColumn(
            "clicks_today", F.size(F.filter("_ts", lambda t: (t >= day_start) & (t < ts)))
        )
    return out.drop("_ts", "_items", "_categories")


def sequences_for_days(
    impressions: DataFrame,
    clicks: DataFrame,
    prev: DataFrame,
    max_len: int,
    state_days: DataFrame,
) -> tuple[DataFrame, DataFrame]:
    """sequences_for_day for every day of a range at once, by the same rule.

    impressions and clicks carry their arrival day `dt`; prev is the state before the range.
    The timeline of an impression on day d is the state at the end of d - 1 (the last
    max_len of prev and of the range's clicks that arrived before d, in order) followed by
    the clicks that arrived on d: what the daily run reads from silver.sequence_state and
    adds to. Returns (impressions with hist_* and clicks_today, the state at the end of each
    day of `state_days` (column `day`): user_id, seq, dt)."""
    empty = F.array().cast(SEQUENCE)
    tagged = F.struct(_element().alias("e"), F.col("dt").alias("day"))
    arrived = clicks.groupBy("user_id").agg(F.array_sort(F.collect_list(tagged)).alias("_arr"))
    users = prev.select("user_id", "seq").join(arrived, "user_id", "full").cache()

    def arrived_when(keep) -> Column:
        """The range's clicks whose arrival day passes `keep`, in order."""
        picked = F.filter(F.coalesce("_arr", F.array()), lambda x: keep(x["day"]))
        return F.transform(picked, lambda x: x["e"]).cast(SEQUENCE)

    def state_at(keep) -> Column:
        merged = F.concat(F.coalesce("seq", empty), arrived_when(keep))
        return _last(F.array_sort(merged), max_len)

    days = impressions.select("user_id", "dt").distinct()
    timelines = days.join(users, "user_id", "left").select(
        "user_id",
        "dt",
        _in_order(
            state_at(lambda day: day < F.col("dt")), arrived_when(lambda day: day == F.col("dt"))
        ).alias("timeline"),
    )
    out = attach_history(
        impressions, timelines, ["user_id", "dt"], max_len, day_start=F.to_timestamp("dt")
    )
    states = (
        users.crossJoin(F.broadcast(state_days))
        .select("user_id", state_at(lambda day: day <= F.col("day")).alias("seq"),
                F.col("day").alias("dt"))
        .where(F.size("seq") > 0)
    )  # fmt: skip
    return out, states


def next_state(prev: DataFrame, changed: DataFrame) -> DataFrame:
    """State at the end of the day: users who clicked get their new list, others keep theirs."""
    kept = prev.join(changed.select("user_id"), "user_id", "left_anti")
    return kept.select("user_id", "seq").unionByName(changed.select("user_id", "seq"))


def write_state(settings: Settings, state: DataFrame, dt: str) -> None:
    """Write the state of day dt and drop the days past retention in the same commit."""
    write_states(settings, state.withColumn("dt", F.lit(dt)), dt, dt)


def kept_state_days(settings: Settings, start: str, end: str) -> tuple[str, str]:
    """The days of [start, end] whose state survives retention once end is written."""
    return max(start, day_offset(end, -settings.features.state_retention_days)), end


def write_states(settings: Settings, states: DataFrame, start: str, end: str) -> None:
    """Replace the states of [start, end] with `states` (user_id, seq, dt) and drop the days
    past retention (counted from end) in the same commit; later days are left alone, as a
    daily run of end leaves them."""
    oldest = day_offset(end, -settings.features.state_retention_days)
    replaced = tables.day_range(start, end) | (F.col("dt") < oldest)
    tables.replace_partition(states, tables.SILVER_SEQUENCE_STATE, settings, replaced)
