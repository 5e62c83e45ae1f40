"""silver.behaviors and gold.samples: one point-in-time-correct training row per impression.

The sequence of an impression at time T holds the user's last L clicks with event time < T;
at equal times the impression comes first, so a click logged in the same second is not seen.
It is built with two window passes rather than a join: each click carries the last L clicks
up to itself, and each impression takes the most recent click's list before it.
"""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings

PRICE_BUCKET_EDGES = [5, 10, 20, 40, 80, 160]


def _day_offset(dt: str, days: int) -> str:
    return (date.fromisoformat(dt) + timedelta(days=days)).isoformat()


def build_behaviors(spark: SparkSession, settings: Settings, dt: str) -> int:
    """Clicks and conversions of day dt with the item's category -> silver.behaviors[dt]."""
    events = tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == dt)
    items = tables.read(spark, tables.BRONZE_ITEMS, settings).select("item_id", "category_path")
    behaviors = (
        events.where(F.col("event_type").isin("click", "conversion"))
        .join(items, "item_id", "left")
        .select(
            "event_id",
            "user_id",
            "item_id",
            F.coalesce("category_path", F.lit("unknown")).alias("category"),
            F.col("event_type").alias("behavior_type"),
            "request_id",
            "event_time",
            "ingestion_time",
            F.lit(dt).alias("dt"),
        )
    )
    tables.replace_partition(behaviors, tables.SILVER_BEHAVIORS, settings, f"dt = '{dt}'")
    return tables.read(spark, tables.SILVER_BEHAVIORS, settings).where(F.col("dt") == dt).count()


def labelled_impressions(events: DataFrame, attribution_hours: float) -> DataFrame:
    """Impressions with click and conversion labels (conversion within the window of its click)."""
    keys = ["user_id", "item_id", "request_id"]
    impressions = events.where(F.col("event_type") == "impression")
    clicks = (
        events.where(F.col("event_type") == "click")
        .groupBy(*keys)
        .agg(F.min("event_time").alias("click_time"))
    )
    conversions = (
        events.where(F.col("event_type") == "conversion")
        .select(*keys, F.col("event_time").alias("conversion_time"))
        .join(clicks, keys)
        .where(
            (F.col("conversion_time") >= F.col("click_time"))
            & (
                F.col("conversion_time")
                <= F.col("click_time") + F.expr(f"INTERVAL {int(attribution_hours * 3600)} SECONDS")
            )
        )
        .select(*keys)
        .distinct()
        .withColumn("conversion", F.lit(1))
    )
    return (
        impressions.join(clicks.withColumn("click", F.lit(1)), keys, "left")
        .join(conversions, keys, "left")
        .withColumn("click", F.coalesce("click", F.lit(0)).cast("int"))
        .withColumn("conversion", F.coalesce("conversion", F.lit(0)).cast("int"))
        .drop("click_time")
    )


def attach_sequences(impressions: DataFrame, clicks: DataFrame, max_len: int) -> DataFrame:
    """Add hist_item_ids / hist_categories / hist_gap_seconds (oldest first) to impressions.

    `impressions` needs user_id, event_id, event_time; `clicks` needs user_id, event_id,
    event_time, item_id, category.
    """
    beh = clicks.select(
        "user_id",
        "event_id",
        F.col("event_time").alias("ts"),
        F.lit(1).alias("kind"),
        F.struct(F.col("event_time").alias("ts"), "item_id", "category").alias("b"),
    )
    upto_self = (
        Window.partitionBy("user_id").orderBy("ts", "event_id").rowsBetween(-(max_len - 1), 0)
    )
    beh = beh.withColumn("seq", F.collect_list("b").over(upto_self)).drop("b")
    imp = impressions.select(
        "user_id",
        "event_id",
        F.col("event_time").alias("ts"),
        F.lit(0).alias("kind"),
        F.lit(None).cast(beh.schema["seq"].dataType).alias("seq"),
    )
    # Impressions sort before clicks at the same instant: ties do not leak.
    before = (
        Window.partitionBy("user_id")
        .orderBy("ts", "kind", "event_id")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    hist = (
        imp.unionByName(beh)
        .withColumn("hist", F.last("seq", ignorenulls=True).over(before))
        .where(F.col("kind") == 0)
        .select("event_id", F.coalesce("hist", F.array()).alias("hist"))
    )
    gap = lambda x: F.col("event_time").cast("double") - x["ts"].cast("double")  # noqa: E731
    return (
        impressions.join(hist, "event_id", "left")
        .withColumn("hist", F.coalesce("hist", F.array()))
        .withColumn("hist_item_ids", F.transform("hist", lambda x: x["item_id"]))
        .withColumn("hist_categories", F.transform("hist", lambda x: x["category"]))
        .withColumn("hist_gap_seconds", F.transform("hist", gap))
        .withColumn("hist_len", F.size("hist"))
        .withColumn(
            "seconds_since_last_click",
            F.when(F.col("hist_len") > 0, F.try_element_at("hist_gap_seconds", F.lit(-1))),
        )
        .drop("hist")
    )


def activity_buckets(behaviors: DataFrame, settings: Settings) -> DataFrame:
    """user_id, clicks_30d, activity_bucket from the 30 days of clicks before the day."""
    f = settings.features
    counts = behaviors.where(F.col("behavior_type") == "click").groupBy("user_id").count()
    return counts.select(
        "user_id",
        F.col("count").alias("clicks_30d"),
    ).withColumn(
        "activity_bucket",
        F.when(F.col("clicks_30d") <= f.activity_low_max, "low")
        .when(F.col("clicks_30d") <= f.activity_mid_max, "mid")
        .otherwise("high"),
    )


def price_bucket(price: F.Column) -> F.Column:
    bucket = F.lit(len(PRICE_BUCKET_EDGES))
    for i, edge in reversed(list(enumerate(PRICE_BUCKET_EDGES))):
        bucket = F.when(price < edge, F.lit(i)).otherwise(bucket)
    return F.when(price.isNull(), F.lit(None)).otherwise(bucket.cast("string"))


def build_samples(spark: SparkSession, settings: Settings, dt: str) -> int:
    """gold.samples[dt]: labels, target item, PIT sequence, context, user and item attributes."""
    f = settings.features
    events = tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == dt)
    impressions = labelled_impressions(events, f.attribution_hours)
    behaviors = tables.read(spark, tables.SILVER_BEHAVIORS, settings)
    window = behaviors.where(
        (F.col("dt") >= _day_offset(dt, -f.history_days)) & (F.col("dt") <= dt)
    )
    clicks = window.where(F.col("behavior_type") == "click")
    samples = attach_sequences(impressions, clicks, f.max_seq_len)

    before_day = behaviors.where((F.col("dt") >= _day_offset(dt, -30)) & (F.col("dt") < dt))
    activity = activity_buckets(before_day, settings)
    users = tables.read(spark, tables.BRONZE_USERS, settings).select(
        "user_id", "age_band", "gender", "city_tier"
    )
    items = tables.read(spark, tables.BRONZE_ITEMS, settings).select(
        "item_id",
        F.col("category_path").alias("item_category"),
        F.split("category_path", "/").getItem(0).alias("item_top_category"),
        F.col("brand").alias("item_brand"),
        price_bucket(F.col("price")).alias("price_bucket"),
    )
    out = (
        samples.join(F.broadcast(users), "user_id", "left")
        .join(F.broadcast(items), "item_id", "left")
        .join(activity, "user_id", "left")
        .select(
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
            "hist_item_ids",
            "hist_categories",
            "hist_gap_seconds",
            "hist_len",
            "seconds_since_last_click",
            F.coalesce("clicks_30d", F.lit(0)).alias("clicks_30d"),
            F.coalesce("activity_bucket", F.lit("low")).alias("activity_bucket"),
            F.lit(dt).alias("dt"),
        )
    )
    tables.replace_partition(out, tables.GOLD_SAMPLES, settings, f"dt = '{dt}'")
    return tables.read(spark, tables.GOLD_SAMPLES, settings).where(F.col("dt") == dt).count()
