"""The table registry: where each warehouse table lives, how it is partitioned and keyed.

Tables are plain Delta tables at <warehouse>/<layer>/<name>, so any Delta reader opens them.
Daily jobs replace exactly their partition (replaceWhere), upserting tables use MERGE: both
make retries and backfills idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from choirflow.config import Settings


@dataclass(frozen=True)
class Table:
    layer: str
    name: str
    partition_by: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    description: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.layer}.{self.name}"

    def path(self, settings: Settings) -> str:
        return f"{settings.warehouse_dir.rstrip('/')}/{self.layer}/{self.name}"


BRONZE_EVENTS = Table("bronze", "events", ("dt",), ("event_id",), "typed, deduplicated events")
BRONZE_ITEMS = Table("bronze", "items", (), ("item_id",), "current item catalogue, upserted")
BRONZE_USERS = Table("bronze", "users", (), ("user_id",), "current user attributes, upserted")
BRONZE_ITEM_HISTORY = Table(
    "bronze", "item_history", ("dt",), ("item_id", "dt"), "every item delivery, read as of a day"
)
BRONZE_USER_HISTORY = Table(
    "bronze", "user_history", ("dt",), ("user_id", "dt"), "every user delivery, read as of a day"
)
BRONZE_QUARANTINE = Table(
    "bronze", "quarantine", ("dt",), (), "rejected raw rows with the rule they broke"
)
BRONZE_INGEST_RUNS = Table("bronze", "ingest_runs", ("dt",), ("source",), "per-run row accounting")
SILVER_BEHAVIORS = Table("silver", "behaviors", ("dt",), ("event_id",), "clicks and conversions")
SILVER_USER_DAILY = Table(
    "silver", "user_daily_activity", ("dt",), ("user_id",), "per-user counts of one day"
)
SILVER_ITEM_DAILY = Table("silver", "item_daily_stats", ("dt",), ("item_id",), "per-item counts")
SILVER_USER_CATEGORY_EXPOSURE = Table(
    "silver", "user_category_exposure", ("dt",), ("user_id", "top_category"),
    "per-user impressions and clicks per top category of one day",
)  # fmt: skip
SILVER_USER_CATEGORY_STATE = Table(
    "silver", "user_category_state", ("dt",), ("user_id", "top_category"),
    "per-user impressions and clicks per top category over the 30 days ending with dt",
)  # fmt: skip
SILVER_SEQUENCE_STATE = Table(
    "silver", "sequence_state", ("dt",), ("user_id",), "last L clicks per user at the end of dt"
)
SILVER_ITEM_EMBEDDINGS = Table(
    "silver", "item_embeddings", (), ("item_id",), "frozen multimodal vectors per encoder version"
)
SILVER_ITEM_PROJECTIONS = Table(
    "silver", "item_embedding_projections", (), ("encoder_version",), "PCA fitted once per version"
)
SILVER_USER_FEATURES = Table(
    "silver", "user_features", ("dt",), ("user_id",), "attributes, 7/30/365-day activity, bucket"
)
SILVER_USER_CATEGORY_DAILY = Table(
    "silver", "user_category_daily", ("dt",), ("user_id", "category"),
    "per-user clicks, purchases and price percentile per category of one day",
)  # fmt: skip
SILVER_USER_PROFILES = Table(
    "silver", "user_profiles", ("dt",), ("user_id", "dt"),
    "semantic profiles (LLM or template) written on dt, read as of a day; cached by input "
    "fingerprint, prompt version, model",
)  # fmt: skip
SILVER_PROFILE_RUNS = Table(
    "silver", "profile_runs", ("dt",), (), "per-run LLM accounting: calls, hits, failures, tokens"
)
SILVER_GROUP_CODEBOOKS = Table(
    "silver", "group_codebooks", (), ("codebook_version", "stage", "code"),
    "RQ-KMeans centroids, one set per codebook version",
)  # fmt: skip
SILVER_USER_GROUPS = Table(
    "silver", "user_groups", ("dt",), ("user_id",), "RQ-KMeans codes (c1, c2, c3) at the end of dt"
)
SILVER_GROUP_PRIORS = Table(
    "silver", "group_priors", ("dt",), ("group_id",),
    "per group: voted attributes and the group behaviour sequence, as of dt",
)  # fmt: skip
GOLD_SAMPLES = Table("gold", "samples", ("dt",), ("event_id",), "one row per impression")
GOLD_PROMOTIONS = Table("gold", "promotions", ("dt",), (), "champion/challenger decisions")
QUALITY_RESULTS = Table("quality", "results", ("dt",), (), "every GX check of every gate run")
QUALITY_MONITORING = Table(
    "quality", "monitoring", ("dt",), (), "freshness, volume and drift across tables"
)
GOLD_METRICS = Table("gold", "metrics", ("dt",), (), "evaluation results, one row per metric")

ALL_TABLES = [
    BRONZE_EVENTS,
    BRONZE_ITEMS,
    BRONZE_USERS,
    BRONZE_ITEM_HISTORY,
    BRONZE_USER_HISTORY,
    BRONZE_QUARANTINE,
    BRONZE_INGEST_RUNS,
    SILVER_BEHAVIORS,
    SILVER_USER_DAILY,
    SILVER_ITEM_DAILY,
    SILVER_USER_CATEGORY_EXPOSURE,
    SILVER_USER_CATEGORY_STATE,
    SILVER_SEQUENCE_STATE,
    SILVER_USER_FEATURES,
    SILVER_ITEM_EMBEDDINGS,
    SILVER_ITEM_PROJECTIONS,
    SILVER_USER_CATEGORY_DAILY,
    SILVER_USER_PROFILES,
    SILVER_PROFILE_RUNS,
    SILVER_GROUP_CODEBOOKS,
    SILVER_USER_GROUPS,
    SILVER_GROUP_PRIORS,
    GOLD_SAMPLES,
    GOLD_METRICS,
    GOLD_PROMOTIONS,
    QUALITY_RESULTS,
    QUALITY_MONITORING,
]


def exists(spark: SparkSession, table: Table, settings: Settings) -> bool:
    return DeltaTable.isDeltaTable(spark, table.path(settings))


def read(
    spark: SparkSession, table: Table, settings: Settings, version: int | None = None
) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(table.path(settings))


def read_as_of(
    spark: SparkSession,
    table: Table,
    settings: Settings,
    dt: str,
    newest_by: tuple[str, ...] = ("updated_at",),
) -> DataFrame:
    """A change-log table as it stood at the end of day dt: each key's newest row (by
    `newest_by`, then by day) written on or before dt. A build of day dt never sees a later
    delivery, so a backfill run after the data has moved on builds what the daily run built."""
    key = [k for k in table.keys if k != "dt"]
    newest = Window.partitionBy(*key).orderBy(*[F.desc(c) for c in (*newest_by, "dt")])
    rows = read(spark, table, settings).where(F.col("dt") <= dt)
    return (
        rows.withColumn("_newest", F.row_number().over(newest)).where("_newest = 1").drop("_newest")
    )


def version(spark: SparkSession, table: Table, settings: Settings) -> int | None:
    """The table's current Delta version (for lineage), or None when it does not exist."""
    if not exists(spark, table, settings):
        return None
    history = DeltaTable.forPath(spark, table.path(settings)).history(1)
    return int(history.select("version").first()[0])


def replace_partition(df: DataFrame, table: Table, settings: Settings, predicate: str) -> None:
    """Atomically replace the rows matching `predicate` (e.g. "dt = '2026-11-01'") with df."""
    writer = df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    writer.save(table.path(settings))


def merge_upsert(
    spark: SparkSession,
    df: DataFrame,
    table: Table,
    settings: Settings,
    newer_than: str | None = None,
) -> None:
    """Insert new keys, update existing ones (only when the incoming `newer_than` column is not
    older than the stored one, when given: a backfill of an old day never undoes a newer row)."""
    path = table.path(settings)
    if not DeltaTable.isDeltaTable(spark, path):
        writer = df.write.format("delta").mode("overwrite")
        if table.partition_by:
            writer = writer.partitionBy(*table.partition_by)
        writer.save(path)
        return
    condition = " AND ".join(f"t.{k} = s.{k}" for k in table.keys)
    update_when = f"s.{newer_than} >= t.{newer_than}" if newer_than else None
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(df.alias("s"), condition)
        .whenMatchedUpdateAll(condition=update_when)
        .whenNotMatchedInsertAll()
        .execute()
    )
