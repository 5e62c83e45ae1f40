"""Profile inputs per user and day, built in Spark (ChoirRec §4.2.1, adapted to clicks and
purchases).

silver.user_category_daily keeps one day's per-user, per-category counts, so the 7/30/365-day
summaries read a compact table instead of a year of raw behaviours. A price tier says where the
items a user bought into sit inside their own category's price range (low/mid/high).

Every function works on (user_id, dt) pairs: a daily run asks for one day, a backfill chunk
for each of its days in one pass (each pair sees only what was known at the end of its day).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings

WINDOW_NAMES = ("short_term", "medium_term", "long_term")
# Decimals prices and their means are kept to: the sum of doubles depends on the order Spark
# adds them in, so comparisons are made on rounded values.
PRICE_DIGITS = 6


def days_back(day: Column, days: int) -> Column:
    """The ISO day `days` before `day` (an ISO day string column)."""
    return F.date_format(F.date_sub(F.to_date(day), days), "yyyy-MM-dd")


def category_price_terciles(
    spark: SparkSession, settings: Settings, start: str, end: str
) -> DataFrame:
    """category, dt, p33, p67: the thirds of each category's price range in the catalogue
    as it stood at the end of each day of [start, end] (rounded like the mean price they are
    compared with)."""
    items = tables.read_as_of_days(spark, tables.BRONZE_ITEM_HISTORY, settings, start, end)
    return items.groupBy(F.col("category_path").alias("category"), F.col("as_of").alias("dt")).agg(
        F.round(F.percentile("price", F.lit(1 / 3)), PRICE_DIGITS).alias("p33"),
        F.round(F.percentile("price", F.lit(2 / 3)), PRICE_DIGITS).alias("p67"),
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
            F.round(F.sum("price"), PRICE_DIGITS).alias("price_sum"),
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


def in_window(rows: DataFrame, targets: DataFrame, days: int) -> DataFrame:
    """Each target (user_id, dt, ...) beside its user's rows (their dt renamed `row_dt`) of
    the `days` days ending with the target's dt."""
    t = targets.withColumn("_from", days_back(F.col("dt"), days))
    r = rows.withColumnRenamed("dt", "row_dt")
    inside = (F.col("row_dt") > F.col("_from")) & (F.col("row_dt") <= F.col("dt"))
    return r.join(t, "user_id").where(inside).drop("_from")


def window_summary(
    spark: SparkSession, settings: Settings, targets: DataFrame, days: int, name: str,
    start: str, end: str,
) -> DataFrame:  # fmt: skip
    """user_id, dt, <name>: top categories over the `days` ending with dt, strongest first."""
    top_n = settings.groups.top_categories
    daily = tables.read(spark, tables.SILVER_USER_CATEGORY_DAILY, settings).where(
        (F.col("dt") > days_back(F.lit(start), days)) & (F.col("dt") <= end)
    )
    terciles = category_price_terciles(spark, settings, start, end)
    sums = (
        in_window(daily, targets, days)
        .groupBy("user_id", "dt", "category")
        .agg(
            F.sum("clicks").alias("clicks"),
            F.sum("purchases").alias("purchases"),
            # Rounded: a user whose mean sits exactly on a third (two items, clicked 2:1)
            # would otherwise change tier with the order Spark adds the days in.
            F.round(F.sum("price_sum") / F.sum("priced"), PRICE_DIGITS).alias("mean_price"),
        )
        .join(F.broadcast(terciles), ["category", "dt"], "left")
    )
    ranked = sums.withColumn(
        "rank",
        F.row_number().over(
            Window.partitionBy("user_id", "dt").orderBy(
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
    return ranked.groupBy("user_id", "dt").agg(
        F.transform(F.array_sort(F.collect_list(entry)), lambda e: e.dropFields("rank")).alias(name)
    )


def recent_titles(
    spark: SparkSession, settings: Settings, targets: DataFrame, start: str, end: str
) -> DataFrame:
    """user_id, dt, recent_titles: titles (as of dt) of the last few items clicked in the 30
    days up to dt."""
    k = settings.groups.recent_titles
    if k == 0:
        return targets.select(
            "user_id", "dt", F.array().cast("array<string>").alias("recent_titles")
        )
    clicks = tables.read(spark, tables.SILVER_BEHAVIORS, settings).where(
        (F.col("dt") > days_back(F.lit(start), 30))
        & (F.col("dt") <= end)
        & (F.col("behavior_type") == "click")
    )
    titles = tables.read_as_of_days(spark, tables.BRONZE_ITEM_HISTORY, settings, start, end).select(
        "item_id", F.col("as_of").alias("dt"), "title"
    )
    newest_first = Window.partitionBy("user_id", "dt").orderBy(
        F.desc("event_time"), F.desc("event_id")
    )
    last = (
        in_window(clicks.select("user_id", "dt", "item_id", "event_time", "event_id"), targets, 30)
        .withColumn("pos", F.row_number().over(newest_first))
        .where(F.col("pos") <= k)
        .join(titles, ["item_id", "dt"], "inner")
    )
    return last.groupBy("user_id", "dt").agg(
        F.transform(
            F.array_sort(F.collect_list(F.struct("pos", F.substring("title", 1, 80).alias("t")))),
            lambda e: e["t"],
        ).alias("recent_titles")
    )


def profiles_as_of(spark: SparkSession, settings: Settings, dt: str) -> DataFrame:
    """Each user's newest profile written on or before dt: a rerun or backfill of an earlier
    day never sees a profile written later."""
    return tables.read_as_of(spark, tables.SILVER_USER_PROFILES, settings, dt, newest_by=())


def target_users(
    spark: SparkSession, settings: Settings, start: str, end: str, everyone: bool = False
) -> DataFrame:
    """(user_id, dt): the users whose inputs may have changed on each day of [start, end] as
    the daily run sees them: everyone known (with `everyone`, or on the first day ever
    labelled), else those active that day and those known but without a profile yet (they
    get one on the first such day)."""
    known = tables.read_as_of_days(spark, tables.BRONZE_USER_HISTORY, settings, start, end).select(
        "user_id", F.col("as_of").alias("dt")
    )
    if everyone:
        return known
    first_ever = not tables.exists(spark, tables.SILVER_USER_PROFILES, settings)
    active = (
        tables.read(spark, tables.SILVER_USER_CATEGORY_DAILY, settings)
        .where(tables.day_range(start, end))
        .select("user_id", "dt")
        .distinct()
    )
    if first_ever:  # the first day labels every known user, later days as usual
        active = active.where(F.col("dt") > start)
    # A profile stands from the day it was written: a user is unprofiled on their first
    # known day in the range when no profile was written on or before it, and no earlier
    # active day of the range gave them one.
    profiled_from = (
        tables.read(spark, tables.SILVER_USER_PROFILES, settings)
        .where(F.col("dt") <= end)
        .groupBy("user_id")
        .agg(F.min("dt").alias("profiled_from"))
        if not first_ever
        else spark.createDataFrame([], "user_id string, profiled_from string")
    )
    first_active = active.groupBy("user_id").agg(F.min("dt").alias("first_active"))
    first_known = known.groupBy("user_id").agg(F.min("dt").alias("dt"))
    unprofiled = (
        first_known.join(profiled_from, "user_id", "left")
        .join(first_active, "user_id", "left")
        .where(F.col("profiled_from").isNull() | (F.col("profiled_from") > F.col("dt")))
        .where(F.col("first_active").isNull() | (F.col("first_active") >= F.col("dt")))
        .select("user_id", "dt")
    )
    return active.unionByName(unprofiled).distinct()


def build_profile_inputs(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None,
    everyone: bool = False,
) -> DataFrame:  # fmt: skip
    """user_id, dt, input_json (coarse attributes, three window summaries, recent titles: no
    identifier) and activity_30d for budget priority, for each target user of each day."""
    end = end or start
    users = target_users(spark, settings, start, end, everyone).cache()
    attributes = tables.read_as_of_days(
        spark, tables.BRONZE_USER_HISTORY, settings, start, end
    ).select("user_id", F.col("as_of").alias("dt"), "age_band", "gender", "city_tier")
    frame = users.join(attributes, ["user_id", "dt"], "left")
    for name, days in zip(WINDOW_NAMES, settings.groups.windows_days, strict=True):
        summary = window_summary(spark, settings, users, days, name, start, end)
        frame = frame.join(summary, ["user_id", "dt"], "left")
    frame = frame.join(recent_titles(spark, settings, users, start, end), ["user_id", "dt"], "left")
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
        "dt",
        F.to_json(payload, {"ignoreNullFields": "false"}).alias("input_json"),
        activity.alias("activity_30d"),
    )
