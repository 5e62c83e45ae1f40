"""Per-day activity aggregates and the rolling counts built from them.

silver.user_daily_activity and silver.item_daily_stats hold one small row per active user or
item per day. Rolling counts (7/30/365 days) sum those rows over a fixed window, so a day's
cost depends on the window and the day's activity, never on how long the history is.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.buckets import activity_bucket_column
from choirflow.config import Settings
from choirflow.dates import day_offset

USER_WINDOWS = (7, 30, 365)
POPULARITY_WINDOW_DAYS = 30
MAX_LEVEL = 10


def _count(event_type: str) -> Column:
    return F.sum(F.when(F.col("event_type") == event_type, 1).otherwise(0)).cast("long")


def build_daily_activity(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> None:
    """Impressions, clicks and conversions per user and per item that arrived on each day of
    [start, end] (a daily run: one day)."""
    end = end or start
    days = tables.day_range(start, end)
    events = tables.read(spark, tables.BRONZE_EVENTS, settings).where(days)
    counts = [
        _count("impression").alias("impressions"),
        _count("click").alias("clicks"),
        _count("conversion").alias("conversions"),
    ]
    users = events.groupBy("user_id", "dt").agg(*counts)
    items = events.groupBy("item_id", "dt").agg(*counts)
    tables.replace_partition(users, tables.SILVER_USER_DAILY, settings, days)
    tables.replace_partition(items, tables.SILVER_ITEM_DAILY, settings, days)


def rolling_sums(
    daily: DataFrame, key: str, last_day: str, windows: tuple[int, ...], columns: tuple[str, ...]
) -> DataFrame:
    """key, <column>_<w>d for each window: sums over the w days ending at last_day (inclusive)."""
    return rolling_sums_by_day(daily, key, last_day, last_day, windows, columns).drop("dt")


def activity_bucket(clicks: Column, settings: Settings) -> Column:
    f = settings.features
    return activity_bucket_column(clicks, f.activity_low_max, f.activity_mid_max)


def build_user_features(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> None:
    """silver.user_features of each day d of [start, end]: attributes as of d, activity over
    the 7/30/365 days ending with d, for every user known on d or active in the year to d."""
    end = end or start
    daily = tables.read(spark, tables.SILVER_USER_DAILY, settings)
    counts = rolling_sums_by_day(
        daily, "user_id", start, end, USER_WINDOWS, ("clicks", "impressions", "conversions")
    )
    users = tables.read_as_of_days(
        spark, tables.BRONZE_USER_HISTORY, settings, start, end
    ).select("user_id", F.col("as_of").alias("dt"), "age_band", "gender", "city_tier",
             "signup_date")  # fmt: skip
    count_cols = [c for c in counts.columns if c not in ("user_id", "dt")]
    features = (
        users.join(counts, ["user_id", "dt"], "full")
        .fillna(0, subset=count_cols)
        .withColumn("activity_bucket", activity_bucket(F.col("clicks_30d"), settings))
    )
    days = tables.day_range(start, end)
    tables.replace_partition(features, tables.SILVER_USER_FEATURES, settings, days)


def rolling_sums_by_day(
    daily: DataFrame,
    key: str,
    start: str,
    end: str,
    windows: tuple[int, ...],
    columns: tuple[str, ...],
) -> DataFrame:
    """key, dt, <column>_<w>d: rolling_sums for every day dt of [start, end] at once, one row
    per key and day on which the key has a row inside its longest window.

    The day rows (zero counts) are put beside the activity rows and each window is a range
    frame over the key's rows ordered by day number: one sort per key, whatever the windows."""
    longest = max(windows)
    n = F.datediff(F.to_date("dt"), F.lit("1970-01-01").cast("date"))
    scoped = daily.where(
        (F.col("dt") >= day_offset(start, -(longest - 1))) & (F.col("dt") <= end)
    ).select(key, "dt", *columns)
    # The days a key is inside its longest window: from its last row before start, and from
    # its first row in the range (every later day of a range shorter than the window).
    before = scoped.where(F.col("dt") < start).groupBy(key).agg(F.max("dt").alias("_last"))
    inside = scoped.where(F.col("dt") >= start).groupBy(key).agg(F.min("dt").alias("_first"))
    span = lambda lo, hi: F.explode(F.sequence(F.to_date(lo), F.to_date(hi)))  # noqa: E731
    window_end = F.date_add(F.to_date("_last"), longest - 1)
    from_before = before.where(window_end >= F.to_date(F.lit(start))).select(
        key, span(F.lit(start), F.least(window_end, F.to_date(F.lit(end)))).alias("_d")
    )
    from_inside = inside.select(key, span(F.col("_first"), F.lit(end)).alias("_d"))
    grid = (
        from_before.unionByName(from_inside)
        .select(key, F.date_format("_d", "yyyy-MM-dd").alias("dt"))
        .distinct()
        .select(key, "dt", *[F.lit(0).cast("long").alias(c) for c in columns],
                F.lit(True).alias("_day"))
    )  # fmt: skip
    rows = scoped.withColumn("_day", F.lit(False)).unionByName(grid).withColumn("_n", n)
    sums = []
    for w in windows:
        frame = Window.partitionBy(key).orderBy("_n").rangeBetween(-(w - 1), 0)
        sums += [F.sum(c).over(frame).cast("long").alias(f"{c}_{w}d") for c in columns]
    return rows.select(key, "dt", "_day", *sums).where("_day").drop("_day")


def level(count: Column) -> Column:
    """0..10 from a count on a log2 scale, as the MM-CTR likes/views levels."""
    return F.least(F.floor(F.log2(count + 1)), F.lit(MAX_LEVEL)).cast("int")


def item_popularity_before(spark: SparkSession, settings: Settings, dt: str) -> DataFrame:
    """item_id, views_level, likes_level from the 30 days before dt (known before the day)."""
    day_before = day_offset(dt, -1)
    return item_popularity_by_day(spark, settings, day_before, day_before).drop("dt")


def item_popularity_by_day(
    spark: SparkSession, settings: Settings, first: str, last: str
) -> DataFrame:
    """item_id, dt, views_level, likes_level: from the 30 days ending with each day dt of
    [first, last]."""
    if not tables.exists(spark, tables.SILVER_ITEM_DAILY, settings):
        return spark.createDataFrame(
            [], "item_id string, dt string, views_level int, likes_level int"
        )
    daily = tables.read(spark, tables.SILVER_ITEM_DAILY, settings)
    w = POPULARITY_WINDOW_DAYS
    sums = rolling_sums_by_day(daily, "item_id", first, last, (w,), ("impressions", "clicks"))
    return sums.select(
        "item_id",
        "dt",
        level(F.col(f"impressions_{w}d")).alias("views_level"),
        level(F.col(f"clicks_{w}d")).alias("likes_level"),
    )


def top_category(category_path: Column) -> Column:
    return F.split(category_path, "/").getItem(0)


def build_user_category_exposure(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> int:
    """silver.user_category_exposure of each day of [start, end]: impressions and clicks per
    user and top category (of the item as of that day).

    silver.behaviors holds clicks only; a user shown a category many times who never clicks
    it says as much about their taste as a click does, and only the impressions show it."""
    end = end or start
    days = tables.day_range(start, end)
    events = (
        tables.read(spark, tables.BRONZE_EVENTS, settings)
        .where(days)
        .where(F.col("event_type").isin("impression", "click"))
    )
    items = tables.read_as_of_days(spark, tables.BRONZE_ITEM_HISTORY, settings, start, end)
    items = items.select(
        "item_id", F.col("as_of").alias("dt"),
        top_category(F.col("category_path")).alias("top_category"),
    )  # fmt: skip
    daily = (
        events.join(F.broadcast(items), ["item_id", "dt"], "left")
        .withColumn("top_category", F.coalesce("top_category", F.lit("unknown")))
        .groupBy("user_id", "top_category", "dt")
        .agg(_count("impression").alias("impressions"), _count("click").alias("clicks"))
    )
    table = tables.SILVER_USER_CATEGORY_EXPOSURE
    tables.replace_partition(daily, table, settings, days)
    return tables.read(spark, table, settings).where(days).count()


CATEGORY_RATE_WINDOW_DAYS = 30
CATEGORY_RATE_PRIOR_IMPRESSIONS = 5.0  # a few impressions move the rate only a little
LIFT_STEPS_PER_DOUBLING = 4
LIFT_DOUBLINGS = 2  # levels span 1/4 to 4 times the category's rate
BASE_LIFT_LEVEL = LIFT_DOUBLINGS * LIFT_STEPS_PER_DOUBLING + 1  # 9: the category's rate
MAX_LIFT_LEVEL = 2 * LIFT_DOUBLINGS * LIFT_STEPS_PER_DOUBLING + 1  # 17; 0 = never shown


def lift_level(rate: Column, base: Column) -> Column:
    """1..MAX_LIFT_LEVEL: the rate over the base on a log2 scale in quarter steps."""
    steps = F.floor(F.log2(rate / base) * LIFT_STEPS_PER_DOUBLING) + BASE_LIFT_LEVEL
    return F.least(F.greatest(steps, F.lit(1)), F.lit(MAX_LIFT_LEVEL)).cast("int")


def _newest_state_day(spark: SparkSession, settings: Settings, first: str, last: str) -> str | None:
    table = tables.SILVER_USER_CATEGORY_STATE
    if not tables.exists(spark, table, settings):
        return None
    days = tables.read(spark, table, settings).where(F.col("dt").between(first, last))
    return days.agg(F.max("dt")).first()[0]


def category_window_sums(
    spark: SparkSession, settings: Settings, day: str, state_until: str
) -> DataFrame:
    """user_id, top_category, impressions_30d, clicks_30d over the 30 days ending with day.

    Carried from the newest silver.user_category_state[p] with p <= state_until inside the
    window: its sums, plus the exposure days after p, minus the days that left the window since
    p. So a daily run reads one state and two exposure days, whatever the history's length;
    without a recent state the sums are rebuilt from the window's exposure rows."""
    return category_window_sums_by_day(spark, settings, day, day, state_until).drop("dt")


def category_window_sums_by_day(
    spark: SparkSession, settings: Settings, start: str, end: str, state_until: str | None = None
) -> DataFrame:
    """category_window_sums for every day of [start, end] at once (column dt): carried from
    the newest state on or before `state_until` (default: the day before start) inside start's
    window, each day adds the exposure days that entered and subtracts those that left;
    without such a state the window of start is rebuilt from exposure rows. Each exposure row
    is spread over the days of the range it counts for (at most the range's length): one job
    for the whole range."""
    w = CATEGORY_RATE_WINDOW_DAYS
    keys = ["user_id", "top_category"]
    sums = [f"impressions_{w}d", f"clicks_{w}d"]
    exposure = tables.read(spark, tables.SILVER_USER_CATEGORY_EXPOSURE, settings)
    until = state_until or day_offset(start, -1)
    since = _newest_state_day(spark, settings, day_offset(start, -(w - 1)), min(until, start))
    last = F.to_date(F.lit(end))

    def spread(rows: DataFrame, first_day: Column, sign: int) -> DataFrame:
        days = F.explode(F.sequence(F.greatest(first_day, F.to_date(F.lit(start))), last))
        spread_rows = rows.where(first_day <= last).select(
            *keys, days.alias("_d"),
            (sign * F.col("impressions")).alias(sums[0]), (sign * F.col("clicks")).alias(sums[1]),
        )  # fmt: skip
        return spread_rows.withColumn("dt", F.date_format("_d", "yyyy-MM-dd")).drop("_d")

    if since is None:  # start's window rebuilt: only rows that entered can leave
        entered_after = leave_after = day_offset(start, -w)
        parts = []
    else:
        entered_after, leave_after = since, day_offset(since, -w)
        carried = (
            tables.read(spark, tables.SILVER_USER_CATEGORY_STATE, settings)
            .where(F.col("dt") == since)
            .select(*keys, F.col(sums[0]).alias("impressions"), F.col(sums[1]).alias("clicks"))
        )
        parts = [spread(carried, F.to_date(F.lit(start)), 1)]
    in_range = exposure.where((F.col("dt") > entered_after) & (F.col("dt") <= end))
    leaving = exposure.where((F.col("dt") > leave_after) & (F.col("dt") <= day_offset(end, -w)))
    parts.append(spread(in_range, F.to_date("dt"), 1))
    parts.append(spread(leaving, F.date_add(F.to_date("dt"), w), -1))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return (
        union.groupBy(*keys, "dt")
        .agg(*(F.sum(c).cast("long").alias(c) for c in sums))
        .where((F.col(sums[0]) > 0) | (F.col(sums[1]) > 0))
    )


def build_user_category_state(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> int:
    """silver.user_category_state of each day of [start, end], carried from a state before
    start, never from one of the range's own days: a rerun starts from the inputs the first
    run had.

    The states from start on are dropped in the same commit (with the days past retention,
    counted from end): they were carried from the old sums, and a sum carried from a wrong
    one stays wrong for good (the corrected day is subtracted when it leaves the window). So
    a range leaves the table as the same days run one by one would."""
    end = end or start
    oldest = day_offset(end, -settings.features.state_retention_days)
    sums = category_window_sums_by_day(spark, settings, start, end).where(F.col("dt") >= oldest)
    table = tables.SILVER_USER_CATEGORY_STATE
    stale = (F.col("dt") >= start) | (F.col("dt") < oldest)
    tables.replace_partition(sums, table, settings, stale)
    return tables.read(spark, table, settings).where(tables.day_range(start, end)).count()


def user_category_rates_before(spark: SparkSession, settings: Settings, dt: str) -> DataFrame:
    """user_id, item_top_category and two levels from the 30 days before dt (see
    user_category_rates_by_day)."""
    day_before = day_offset(dt, -1)
    return user_category_rates_by_day(spark, settings, day_before, day_before).drop("dt")


def user_category_rates_by_day(
    spark: SparkSession, settings: Settings, first: str, last: str
) -> DataFrame:
    """user_id, item_top_category, dt and two levels from the 30 days ending with each day dt
    of [first, last]: how often the user clicked the category when shown it, against
    everyone's rate on that category (user_category_ctr_level), and how often they were shown
    it (user_category_impressions_level).

    The user's rate is shrunk towards the category's: (clicks + k * base) / (impressions + k)."""
    ddl = (
        "user_id string, item_top_category string, user_category_ctr_level int, "
        "user_category_impressions_level int, dt string"
    )
    if not tables.exists(spark, tables.SILVER_USER_CATEGORY_EXPOSURE, settings):
        return spark.createDataFrame([], ddl)
    w = CATEGORY_RATE_WINDOW_DAYS
    sums = category_window_sums_by_day(spark, settings, first, last)
    # The category's rate over a window on the pairs (not a self-join): the 30-day roll-up
    # is computed once. One click and two impressions of smoothing keep it above 0.
    category = Window.partitionBy("top_category", "dt")
    base = (F.sum(f"clicks_{w}d").over(category) + 1) / (
        F.sum(f"impressions_{w}d").over(category) + 2
    )
    k = CATEGORY_RATE_PRIOR_IMPRESSIONS
    rate = (F.col(f"clicks_{w}d") + k * F.col("_base")) / (F.col(f"impressions_{w}d") + k)
    return sums.withColumn("_base", base).select(
        "user_id",
        F.col("top_category").alias("item_top_category"),
        lift_level(rate, F.col("_base")).alias("user_category_ctr_level"),
        level(F.col(f"impressions_{w}d")).alias("user_category_impressions_level"),
        "dt",
    )
