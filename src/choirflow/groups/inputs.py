"""Profile inputs per user, built in Spark (ChoirRec §4.2.1, adapted to clicks and purchases).

silver.user_category_daily keeps one day's per-user, per-category counts, so the 7/30/365-day
summaries read a compact table instead of a year of raw behaviours. A price tier says where the
items a user bought into sit inside their own category's price range (low/mid/high).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset

WINDOW_NAMES = ("short_term", "medium_term", "long_term")


def category_price_terciles(spark: SparkSession, settings: Settings, dt: str) -> DataFrame:
    """category, p33, p67: the thirds of each category's price range in the catalogue of dt."""
    items = tables.read_as_of(spark, tables.BRONZE_ITEM_HISTORY, settings, dt)
    return items.groupBy(F.col("category_path").alias("category")).agg(
        F.percentile("price", F.lit(1 / 3)).alias("p33"),
        F.percentile("price", F.lit(2 / 3)).alias("p67"),
    )


def build_user_category_daily(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> int:
    """silver.user_category_daily of each day of [start, end] from silver.behaviors of that
    day, with each item's price as of the day. Raw price sums are kept; tiers are judged when
    inputs are built, against one catalogue."""
    end = end or start
    days = tables.day_range(start, end)
    behaviors = tables.read(spark, tables.SILVER_BEHAVIORS, settings).where(days)
    prices = tables.read_as_of_days(spark, tables.BRONZE_ITEM_HISTORY, settings, start, end).select(
        "item_id", F.col("as_of").alias("dt"), "price"
    )

    def count(kind: str) -> F.Column:
        return F.sum(F.when(F.col("behavior_type") == kind, 1).otherwise(0)).cast("long")

    daily = (
        behaviors.join(prices, ["item_id", "dt"], "left")
        .groupBy("user_id", "category", "dt")
        .agg(
            count("click").alias("clicks"),
            count("conversion").alias("purchases"),
            # Rounded: a sum of doubles depends on the order Spark adds them in.
            F.round(F.sum("price"), 6).alias("price_sum"),
            F.count("price").cast("long").alias("priced"),
        )
    )  # fmt: skip
    table = tables.SILVER_USER_CATEGORY_DAILY
    tables.replace_partition(daily, table, settings, days)
    return tables.read(spark, table, settings).where(days).count()


def _price_tier(mean_price: Column) -> Column:
    """Where the user's mean price sits among the category's price thirds (mid if unknown)."""
    return (
        F.when(mean_price.isNull() | F.col("p33").isNull(), "mid")
        .when(mean_price < F.col("p33"), "low")
        .when(mean_price < F.col("p67"), "mid")
        .otherwise("high")
    )


def window_summary(
    spark: SparkSession, settings: Settings, dt: str, days: int, users: DataFrame, name: str
) -> DataFrame:
    """user_id, <name>: top categories over the `days` ending with dt, strongest first."""
    top_n = settings.groups.top_categories
    daily = tables.read(spark, tables.SILVER_USER_CATEGORY_DAILY, settings).where(
        (F.col("dt") > day_offset(dt, -days)) & (F.col("dt") <= dt)
    )
    sums = (
        daily.join(users, "user_id", "left_semi")
        .groupBy("user_id", "category")
        .agg(
            F.sum("clicks").alias("clicks"),
            F.sum("purchases").alias("purchases"),
            (F.sum("price_sum") / F.sum("priced")).alias("mean_price"),
        )
        .join(F.broadcast(category_price_terciles(spark, settings, dt)), "category", "left")
    )
    ranked = sums.withColumn(
        "rank",
        F.row_number().over(
            Window.partitionBy("user_id").orderBy(
                F.desc("purchases"), F.desc("clicks"), F.asc("category")
            )
        ),
    ).where(F.col("rank") <= top_n)
    entry = F.struct(
        F.col("rank"),
        F.col("category"),
        F.col("clicks"),
        F.col("purchases"),
        _price_tier(F.col("mean_price")).alias("price_tier"),
    )
    return ranked.groupBy("user_id").agg(
        F.transform(F.array_sort(F.collect_list(entry)), lambda e: e.dropFields("rank")).alias(name)
    )


def recent_titles(spark: SparkSession, settings: Settings, dt: str, users: DataFrame) -> DataFrame:
    """user_id, recent_titles: titles of the last few items clicked in the 30 days up to dt."""
    k = settings.groups.recent_titles
    if k == 0:
        return users.select("user_id").withColumn("recent_titles", F.array().cast("array<string>"))
    clicks = tables.read(spark, tables.SILVER_BEHAVIORS, settings).where(
        (F.col("dt") > day_offset(dt, -30))
        & (F.col("dt") <= dt)
        & (F.col("behavior_type") == "click")
    )
    titles = tables.read_as_of(spark, tables.BRONZE_ITEM_HISTORY, settings, dt).select(
        "item_id", "title"
    )
    newest_first = Window.partitionBy("user_id").orderBy(F.desc("event_time"), F.desc("event_id"))
    last = (
        clicks.join(users, "user_id", "left_semi")
        .withColumn("pos", F.row_number().over(newest_first))
        .where(F.col("pos") <= k)
        .join(titles, "item_id", "inner")
    )
    return last.groupBy("user_id").agg(
        F.transform(
            F.array_sort(F.collect_list(F.struct("pos", F.substring("title", 1, 80).alias("t")))),
            lambda e: e["t"],
        ).alias("recent_titles")
    )


def profiles_as_of(spark: SparkSession, settings: Settings, dt: str) -> DataFrame:
    """Each user's newest profile written on or before dt: a rerun or backfill of an earlier
    day never sees a profile written later."""
    return tables.read_as_of(spark, tables.SILVER_USER_PROFILES, settings, dt, newest_by=())


def target_users(spark: SparkSession, settings: Settings, dt: str, everyone: bool) -> DataFrame:
    """Users whose inputs may have changed: active on dt, or without a profile yet."""
    users = tables.read_as_of(spark, tables.BRONZE_USER_HISTORY, settings, dt).select("user_id")
    if everyone or not tables.exists(spark, tables.SILVER_USER_PROFILES, settings):
        return users
    active = (
        tables.read(spark, tables.SILVER_USER_CATEGORY_DAILY, settings)
        .where(F.col("dt") == dt)
        .select("user_id")
        .distinct()
    )
    profiled = profiles_as_of(spark, settings, dt).select("user_id")
    return active.unionByName(users.join(profiled, "user_id", "left_anti")).distinct()


def build_profile_inputs(
    spark: SparkSession, settings: Settings, dt: str, everyone: bool = False
) -> DataFrame:
    """user_id, input_json (coarse attributes, three window summaries, recent titles: no
    identifier) and activity_30d for budget priority."""
    users = target_users(spark, settings, dt, everyone)
    attributes = tables.read_as_of(spark, tables.BRONZE_USER_HISTORY, settings, dt).select(
        "user_id", "age_band", "gender", "city_tier"
    )
    frame = users.join(attributes, "user_id", "left")
    for name, days in zip(WINDOW_NAMES, settings.groups.windows_days, strict=True):
        frame = frame.join(
            window_summary(spark, settings, dt, days, users, name), "user_id", "left"
        )
    frame = frame.join(recent_titles(spark, settings, dt, users), "user_id", "left")
    empty = F.array().cast(
        "array<struct<category:string,clicks:bigint,purchases:bigint,price_tier:string>>"
    )
    payload = F.struct(
        "age_band",
        "city_tier",
        "gender",
        F.coalesce("long_term", empty).alias("long_term"),
        F.coalesce("medium_term", empty).alias("medium_term"),
        F.coalesce(F.col("recent_titles"), F.array().cast("array<string>")).alias("recent_titles"),
        F.coalesce("short_term", empty).alias("short_term"),
    )
    activity = F.aggregate(
        F.coalesce("medium_term", empty), F.lit(0).cast("long"), lambda acc, e: acc + e["clicks"]
    )
    return frame.select(
        "user_id",
        F.to_json(payload, {"ignoreNullFields": "false"}).alias("input_json"),
        activity.alias("activity_30d"),
    )
