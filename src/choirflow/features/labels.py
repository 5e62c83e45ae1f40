"""Labels across days: clicks and conversions that arrive after their impression's day.

An impression delivered on day d is labelled by the clicks and conversions of its (user,
item, request) that bronze holds on days d .. d + horizon_days, up to the last day
ingested when the labels are worked out (their "as of" day): a click counts when it happens
at most `features.attribution_hours` after the impression, a conversion when it happens
within that window after the first click that counts. Nothing arriving later can reach day d:
a click finds its impression within `features.parent_lookback_days` of its own arrival (or
waits for it in bronze.pending_events and enters bronze on the impression's day), and a
conversion its click the same way, so a conversion is in bronze at most twice the look-back
after d: the horizon.

Two writers keep gold.samples' labels right without touching a feature:
- the samples step labels its days as of the last ingested day (each day capped by the
  horizon), so a range over old days writes mature labels at once;
- the correct_labels step, after ingest, relabels the past days the newly ingested events
  reach: a MERGE of the two label columns keyed by event id, whose condition names the days
  that changed, so Delta rewrites only their files. The changed days are found by joining
  the new events' (user, item, request) with the samples of the horizon's days, not from
  event times (a late event's time says nothing of when its impression arrived).

gold.label_status records, per day, the day its labels are as of, how mature they are
(hours from the day's end to the end of that day) and how many labels late data changed.
"""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset, days_between

KEY = ["user_id", "item_id", "request_id"]
LABELS = ["click", "conversion"]


def known_through(spark: SparkSession, settings: Settings, end: str) -> str:
    """The last day whose events bronze has ingested (at least `end`): labels are as of it."""
    if not tables.exists(spark, tables.BRONZE_INGEST_RUNS, settings):
        return end
    runs = tables.read(spark, tables.BRONZE_INGEST_RUNS, settings)
    last = runs.where(F.col("source") == "raw_events").agg(F.max("dt")).first()[0]
    return max(end, last or end)


def horizon_days(settings: Settings) -> int:
    """How many days after its own a day's labels can still change."""
    return 2 * settings.features.parent_lookback_days


def as_of(day: str, known: str, horizon: int) -> str:
    """The day the labels of `day` are as of when bronze is ingested through `known`."""
    return min(day_offset(day, horizon), known)


def label_events(spark: SparkSession, settings: Settings, start: str, end: str) -> DataFrame:
    """Clicks and conversions that arrived on the days [start, end]."""
    events = tables.read(spark, tables.BRONZE_EVENTS, settings)
    return events.where(
        tables.day_range(start, end) & F.col("event_type").isin("click", "conversion")
    ).select(*KEY, "event_type", "event_time", "dt")


def labelled(
    impressions: DataFrame, events: DataFrame, attribution_hours: float, known: str, horizon: int
) -> DataFrame:
    """`impressions` (with event_id, the key, event_time and dt) plus click and conversion,
    each impression seeing the `events` of its own day through as_of(dt, known, horizon).

    The clicks and conversions (a few percent of the events) are broadcast to the
    impressions, and only the impressions they reach are grouped, so the impressions are
    neither shuffled nor sorted for their labels."""
    window = F.expr(f"INTERVAL {int(attribution_hours * 3600)} SECONDS")
    shown = impressions.select(
        "event_id", *KEY, F.col("event_time").alias("_shown"), F.col("dt").alias("_day")
    )
    last_day = F.least(
        F.date_format(F.date_add(F.to_date("_day"), horizon), "yyyy-MM-dd"),
        F.lit(known),
    )
    events = events.select(*KEY, "event_type", "event_time", "dt")
    reached = (
        shown.join(F.broadcast(events), KEY)
        .where((F.col("dt") >= F.col("_day")) & (F.col("dt") <= last_day))
        .localCheckpoint()  # small: the impressions some click or conversion reached
    )
    is_type = lambda name: F.col("event_type") == name  # noqa: E731
    clicks = (
        reached.where(is_type("click") & (F.col("event_time") <= F.col("_shown") + window))
        .groupBy("event_id")
        .agg(F.min("event_time").alias("_click_time"))
    )
    conversions = reached.where(is_type("conversion")).select(
        "event_id", F.col("event_time").alias("_conversion_time")
    )
    attributed = (F.col("_conversion_time") >= F.col("_click_time")) & (
        F.col("_conversion_time") <= F.col("_click_time") + window
    )
    labels = (
        clicks.join(conversions, "event_id", "left")
        .groupBy("event_id")
        .agg(F.max(F.coalesce(attributed, F.lit(False)).cast("int")).alias("conversion"))
        .withColumn("click", F.lit(1))
    )
    return (
        impressions.join(F.broadcast(labels), "event_id", "left")
        .withColumn("click", F.coalesce("click", F.lit(0)))
        .withColumn("conversion", F.coalesce("conversion", F.lit(0)))
    )


def label_impressions(
    spark: SparkSession, settings: Settings, impressions: DataFrame, start: str, end: str
) -> DataFrame:
    """The impressions of the days [start, end] labelled as of the last ingested day."""
    known, horizon = known_through(spark, settings, end), horizon_days(settings)
    events = label_events(spark, settings, start, as_of(end, known, horizon))
    return labelled(impressions, events, settings.features.attribution_hours, known, horizon)


def maturity(spark: SparkSession, settings: Settings, days: list[str]) -> dict[str, int]:
    """maturity_hours of the days gold.label_status holds (days without a row, imported data
    sets or warehouses written before the table, have final labels: not in the result)."""
    if not days or not tables.exists(spark, tables.LABEL_STATUS, settings):
        return {}
    status = tables.read(spark, tables.LABEL_STATUS, settings).where(F.col("dt").isin(days))
    return {r.dt: r.maturity_hours for r in status.select("dt", "maturity_hours").collect()}


def mature_days(spark: SparkSession, settings: Settings, days: list[str], hours: int) -> list[str]:
    """The days whose labels are at least `hours` mature (or final)."""
    young = {d for d, h in maturity(spark, settings, days).items() if h < hours}
    return [d for d in days if d not in young]


def status_rows(
    spark: SparkSession, days: list[str], known: str, horizon: int, corrected: dict[str, int]
) -> DataFrame:
    """gold.label_status rows of `days`: as of which day, how mature, how many changed."""
    rows = []
    for day in days:
        until = as_of(day, known, horizon)
        hours = 24 * len(days_between(day, until)) - 24
        rows.append((day, until, hours, int(corrected.get(day, 0))))
    return spark.createDataFrame(
        rows, "dt string, labels_as_of string, maturity_hours int, corrected_labels bigint"
    ).withColumn("updated_at", F.current_timestamp())


def record_status(
    spark: SparkSession, settings: Settings, days: list[str], known: str,
    corrected: dict[str, int], add: bool,
) -> None:  # fmt: skip
    """Write the status of `days`; `add` adds the corrections to those already recorded
    (a correction), else the days start over (the samples step rebuilt them)."""
    if not days:
        return
    rows = status_rows(spark, days, known, horizon_days(settings), corrected)
    table = tables.LABEL_STATUS
    if add and tables.exists(spark, table, settings):
        before = tables.read(spark, table, settings).select(
            "dt", F.col("corrected_labels").alias("_before")
        )
        rows = rows.join(before, "dt", "left").select(
            "dt", "labels_as_of", "maturity_hours",
            (F.col("corrected_labels") + F.coalesce("_before", F.lit(0))).alias(
                "corrected_labels"
            ),
            "updated_at",
        )  # fmt: skip
    tables.merge_upsert(spark, rows, table, settings)


def correct_labels(spark: SparkSession, settings: Settings, start: str, end: str) -> dict:
    """Relabel the gold.samples days before `start` that the events ingested for [start, end]
    reach; returns the rows changed per day. Only click and conversion change; the changed
    days then pass the relabelled gate (quality.checks)."""
    from choirflow.quality.checks import relabelled_gate

    if not tables.exists(spark, tables.GOLD_SAMPLES, settings):
        return {}
    horizon = horizon_days(settings)
    first, last = day_offset(start, -horizon), day_offset(start, -1)
    known = known_through(spark, settings, end)
    past = tables.read(spark, tables.GOLD_SAMPLES, settings).where(tables.day_range(first, last))
    arrived = label_events(spark, settings, start, end).select(*KEY).distinct()
    reached = past.join(F.broadcast(arrived), KEY, "left_semi").select(
        "event_id", *KEY, "event_time", "dt", *[F.col(c).alias(f"_old_{c}") for c in LABELS]
    )
    events = label_events(spark, settings, first, as_of(last, known, horizon))
    fresh = labelled(reached, events, settings.features.attribution_hours, known, horizon)
    differs = (F.col("click") != F.col("_old_click")) | (
        F.col("conversion") != F.col("_old_conversion")
    )
    changed = fresh.where(differs).select("event_id", "dt", *LABELS).localCheckpoint()
    counts = {r.dt: r["count"] for r in changed.groupBy("dt").count().collect()}
    if counts:
        _merge_labels(spark, settings, changed, sorted(counts))
        relabelled_gate(spark, settings, changed, sorted(counts))  # QualityGateError if hard
    record_status(spark, settings, _recorded(spark, settings, first, last), known, counts, True)
    return counts


def _recorded(spark: SparkSession, settings: Settings, first: str, last: str) -> list[str]:
    """The days of [first, last] the samples step built (with or without impressions)."""
    if not tables.exists(spark, tables.LABEL_STATUS, settings):
        return []
    status = tables.read(spark, tables.LABEL_STATUS, settings)
    return sorted(r.dt for r in status.where(tables.day_range(first, last)).collect())


def _merge_labels(
    spark: SparkSession, settings: Settings, changed: DataFrame, days: list[str]
) -> None:
    """MERGE the label columns of `changed` into gold.samples, the condition naming the days
    so that only their files are read and rewritten."""
    target, source = (lambda c: F.col(f"t.{c}")), (lambda c: F.col(f"s.{c}"))  # noqa: E731
    on = target("dt").isin(days) & (target("dt") == source("dt"))
    (
        DeltaTable.forPath(spark, tables.GOLD_SAMPLES.path(settings))
        .alias("t")
        .merge(changed.alias("s"), on & (target("event_id") == source("event_id")))
        .whenMatchedUpdate(set={c: f"s.{c}" for c in LABELS})
        .execute()
    )
