"""silver.behaviors and gold.samples: one point-in-time-correct training row per impression.

The sequence of an impression at time T holds the user's last L clicks with event time < T;
at equal times the impression comes first, so a click logged in the same second is not seen.
Each active user's timeline (the carried state plus the day's clicks) is built once, and an
impression takes the last L elements older than itself (see features.sequences); a late
impression, older than the end of the carried state, so gets the last L it can see among the
state's L clicks and the day's. Counts and levels come from silver tables of the days before
(features.activity).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset, days_between
from choirflow.features.activity import (
    item_popularity_by_day,
    top_category,
    user_category_rates_by_day,
)
from choirflow.features.labels import label_impressions
from choirflow.features.sequences import (
    empty_state,
    kept_state_days,
    previous_state,
    sequences_for_day,
    sequences_for_days,
)
from choirflow.fields import SAMPLE_FIELDS, sample_fields
from choirflow.groups.codes import code_prefix

PRICE_BUCKET_EDGES = [5, 10, 20, 40, 80, 160]


def build_behaviors(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> int:
    """Clicks and conversions of the days [start, end] (a daily run: one day) with each
    item's category as of its day -> silver.behaviors, every day's partition in one commit."""
    end = end or start
    events = tables.read(spark, tables.BRONZE_EVENTS, settings).where(tables.day_range(start, end))
    items = tables.read_as_of_days(spark, tables.BRONZE_ITEM_HISTORY, settings, start, end)
    behaviors = (
        events.where(F.col("event_type").isin("click", "conversion"))
        .join(items.select("item_id", F.col("as_of").alias("dt"), "category_path"),
              ["item_id", "dt"], "left")
        .select(
            "event_id",
            "user_id",
            "item_id",
            F.coalesce("category_path", F.lit("unknown")).alias("category"),
            F.col("event_type").alias("behavior_type"),
            "request_id",
            "event_time",
            "ingestion_time",
            "dt",
        )
    )  # fmt: skip
    table = tables.SILVER_BEHAVIORS
    tables.replace_partition(behaviors, table, settings, tables.day_range(start, end))
    return tables.read(spark, table, settings).where(tables.day_range(start, end)).count()


def attach_sequences(impressions: DataFrame, clicks: DataFrame, max_len: int) -> DataFrame:
    """Impressions plus hist_* columns from a set of clicks alone (no carried state)."""
    spark = impressions.sparkSession
    with_hist, _ = sequences_for_day(impressions, clicks, empty_state(spark), max_len)
    return with_hist


def price_bucket(price: F.Column) -> F.Column:
    bucket = F.lit(len(PRICE_BUCKET_EDGES))
    for i, edge in reversed(list(enumerate(PRICE_BUCKET_EDGES))):
        bucket = F.when(price < edge, F.lit(i)).otherwise(bucket)
    return F.when(price.isNull(), F.lit(None)).otherwise(bucket.cast("string"))


def build_samples(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> tuple[DataFrame, DataFrame]:
    """gold.samples rows of the days [start, end] (a daily run: one day) and
    silver.sequence_state at the end of each of the range's days that retention keeps, from
    the range's events and the state carried from the day before start. Both are lazy and
    share a cached state: the caller writes them (samples first), then clears Spark's cache."""
    end = end or start
    f = settings.features
    days = tables.day_range(start, end)
    events = tables.read(spark, tables.BRONZE_EVENTS, settings).where(days)
    impressions = label_impressions(
        spark, settings, events.where(F.col("event_type") == "impression"), start, end
    )
    clicks = (
        tables.read(spark, tables.SILVER_BEHAVIORS, settings)
        .where(days & (F.col("behavior_type") == "click"))
        .select("user_id", "event_id", "event_time", "item_id", "category", "dt")
    )
    prev = previous_state(spark, settings, start).cache()
    kept = tables.day_frame(spark, *kept_state_days(settings, start, end))
    with_hist, states = sequences_for_days(impressions, clicks, prev, f.max_seq_len, kept)
    out = _with_known_before(spark, settings, start, end, with_hist).select(*_sample_columns())
    declared = {f.name for f in SAMPLE_FIELDS}
    if set(out.columns) != declared:  # the registry and this select must agree
        raise ValueError(
            f"gold.samples columns differ from fields.SAMPLE_FIELDS: "
            f"{sorted(set(out.columns) ^ declared)}"
        )
    return out, states


def _next_day(df: DataFrame) -> DataFrame:
    """Rows of day d relabelled as known before d + 1."""
    return df.withColumn("dt", F.date_format(F.date_add(F.to_date("dt"), 1), "yyyy-MM-dd"))


def _with_known_before(
    spark: SparkSession, settings: Settings, start: str, end: str, impressions: DataFrame
) -> DataFrame:
    """Impressions joined (on user or item and their day dt) with what was known before the
    day: user and item attributes as of dt, item popularity and the user x category rates of
    the days before, the user's activity at the end of the day before, and their semantic
    group."""
    user_prev = _user_features_before(spark, settings, start, end)
    users = tables.read_as_of_days(spark, tables.BRONZE_USER_HISTORY, settings, start, end)
    users = users.select("user_id", F.col("as_of").alias("dt"), "age_band", "gender", "city_tier")
    items = tables.read_as_of_days(spark, tables.BRONZE_ITEM_HISTORY, settings, start, end)
    items = items.select(
        "item_id",
        F.col("as_of").alias("dt"),
        F.col("category_path").alias("item_category"),
        top_category(F.col("category_path")).alias("item_top_category"),
        F.col("brand").alias("item_brand"),
        price_bucket(F.col("price")).alias("price_bucket"),
    )
    before = (day_offset(start, -1), day_offset(end, -1))
    popularity = _next_day(item_popularity_by_day(spark, settings, *before))
    category_rates = _next_day(user_category_rates_by_day(spark, settings, *before))
    return (
        impressions.join(F.broadcast(users), ["user_id", "dt"], "left")
        .join(F.broadcast(items), ["item_id", "dt"], "left")
        .join(F.broadcast(popularity), ["item_id", "dt"], "left")
        .join(F.broadcast(category_rates), ["user_id", "item_top_category", "dt"], "left")
        .join(F.broadcast(user_prev), ["user_id", "dt"], "left")
        .join(F.broadcast(_groups_before(spark, settings, start, end)), ["user_id", "dt"], "left")
    )


def _sample_columns() -> list:
    """gold.samples' columns from the joined impressions (levels and counts default to 0)."""
    gaps = F.col("hist_gap_seconds")
    return [
        "event_id",
        "request_id",
        "user_id",
        "item_id",
        "event_time",
        "position",
        "device",
        "surface",
        "click",
        "conversion",
        F.hour("event_time").alias("hour"),
        F.dayofweek("event_time").alias("weekday"),
        "age_band",
        "gender",
        "city_tier",
        "item_category",
        "item_top_category",
        "item_brand",
        "price_bucket",
        F.coalesce("views_level", F.lit(0)).alias("views_level"),
        F.coalesce("likes_level", F.lit(0)).alias("likes_level"),
        F.coalesce("user_category_ctr_level", F.lit(0)).alias("user_category_ctr_level"),
        F.coalesce("user_category_impressions_level", F.lit(0)).alias(
            "user_category_impressions_level"
        ),
        "hist_item_ids",
        "hist_categories",
        "hist_gap_seconds",
        "hist_len",
        F.when(F.col("hist_len") > 0, F.try_element_at(gaps, F.lit(-1))).alias(
            "seconds_since_last_click"
        ),
        F.size(F.filter(gaps, lambda g: g <= 3600)).alias("clicks_1h"),
        F.size(F.filter(gaps, lambda g: g <= 86400)).alias("clicks_1d"),
        (F.coalesce("prev_clicks_7d", F.lit(0)) + F.col("clicks_today")).alias("clicks_7d"),
        (F.coalesce("prev_clicks_30d", F.lit(0)) + F.col("clicks_today")).alias("clicks_30d"),
        F.coalesce("prev_activity_bucket", F.lit("low")).alias("activity_bucket"),
        F.coalesce("prev_conversions_30d", F.lit(0)).alias("conversions_30d"),
        *GROUP_COLUMNS,
        "dt",
    ]


def _user_features_before(
    spark: SparkSession, settings: Settings, start: str, end: str
) -> DataFrame:
    """Activity as of the end of the day before each day dt (history before the sample)."""
    empty = (
        "user_id string, prev_clicks_7d long, prev_clicks_30d long, prev_conversions_30d long, "
        "prev_activity_bucket string, dt string"
    )
    if not tables.exists(spark, tables.SILVER_USER_FEATURES, settings):
        return spark.createDataFrame([], empty)
    features = tables.read(spark, tables.SILVER_USER_FEATURES, settings).where(
        tables.day_range(day_offset(start, -1), day_offset(end, -1))
    )
    return _next_day(
        features.select(
            "user_id",
            F.col("clicks_7d").alias("prev_clicks_7d"),
            F.col("clicks_30d").alias("prev_clicks_30d"),
            F.col("conversions_30d").alias("prev_conversions_30d"),
            F.col("activity_bucket").alias("prev_activity_bucket"),
            "dt",
        )
    )


_GROUP_FIELDS = (*sample_fields("group"), *sample_fields("group_sequence"))
GROUP_COLUMNS = tuple(f.name for f in _GROUP_FIELDS)
_GROUP_DDL = ", ".join(["user_id string", *(f"{f.name} {f.type}" for f in _GROUP_FIELDS)])


def _groups_before(spark: SparkSession, settings: Settings, start: str, end: str) -> DataFrame:
    """Each user's semantic group and its priors as of the end of the latest day before each
    day dt of [start, end] (ChoirRec group channel); none before the first assignment."""
    empty = spark.createDataFrame([], f"{_GROUP_DDL}, dt string")
    if not (
        tables.exists(spark, tables.SILVER_USER_GROUPS, settings)
        and tables.exists(spark, tables.SILVER_GROUP_PRIORS, settings)
    ):
        return empty
    groups = tables.read(spark, tables.SILVER_USER_GROUPS, settings).where(F.col("dt") < end)
    assigned = sorted(r[0] for r in groups.select("dt").distinct().collect())
    # Each day of the range -> the latest assignment day before it (a small driver-side map).
    latest = []
    for day in days_between(start, end):
        earlier = [d for d in assigned if d < day]
        if earlier:
            latest.append((day, earlier[-1]))
    if not latest:
        return empty
    which = spark.createDataFrame(latest, "dt string, assigned string")
    priors = tables.read(spark, tables.SILVER_GROUP_PRIORS, settings).where(
        F.col("dt").isin(sorted({a for _, a in latest}))
    )
    chosen = groups.join(
        F.broadcast(which.withColumnRenamed("dt", "day")), F.col("dt") == F.col("assigned")
    )
    return chosen.join(
        priors.withColumnRenamed("group_id", "prior_group").withColumnRenamed("dt", "assigned"),
        ["prior_group", "assigned"],
        "left",
    ).select(
        "user_id",
        *[code_prefix("codes", level).alias(f"group_c{level}") for level in (1, 2, 3)],
        F.col("prior_group").alias("group_id"),
        F.col("voted_age_band").alias("group_age_band"),
        F.col("voted_gender").alias("group_gender"),
        F.col("voted_city_tier").alias("group_city_tier"),
        "group_hist_categories",
        "group_hist_top_categories",
        F.col("day").alias("dt"),
    )
