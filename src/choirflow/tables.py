"""The table registry: where each warehouse table lives, how it is partitioned and keyed, and
its columns.

Tables are plain Delta tables at <warehouse>/<layer>/<name>, so any Delta reader opens them.
Daily jobs replace exactly their partition (replaceWhere), upserting tables use MERGE: both
make retries and backfills idempotent. Each table declares its columns once, as Spark DDL
(`Table.schema`); writers that build rows in Python take their schema from here
(`Table.frame`), and a test checks every table a pipeline day writes against it.
gold.samples' columns are its fields in fields.py, each with the role it plays in training
(`SampleField`); the trainer's field lists and ChoirRec's group fields derive from them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from choirflow.config import Settings
from choirflow.fields import SAMPLE_FIELDS

_SIMPLE_TYPES = {
    "string": T.StringType(), "int": T.IntegerType(), "bigint": T.LongType(),
    "double": T.DoubleType(), "float": T.FloatType(), "boolean": T.BooleanType(),
    "timestamp": T.TimestampType(), "date": T.DateType(),
}  # fmt: skip


def _split_top(text: str) -> list[str]:
    """Split on commas outside <...>."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def parse_type(text: str) -> T.DataType:
    """A Spark SQL type as `simpleString()` writes it: string, bigint, array<float>,
    map<string,string>, struct<a:timestamp,b:string>, ..."""
    text = text.strip()
    if text in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[text]
    match = re.fullmatch(r"(array|map|struct)<(.*)>", text)
    if not match:
        raise ValueError(f"unknown column type {text!r}")
    kind, inner = match.groups()
    if kind == "array":
        return T.ArrayType(parse_type(inner))
    if kind == "map":
        key, value = _split_top(inner)
        return T.MapType(parse_type(key), parse_type(value))
    fields = [part.split(":", 1) for part in _split_top(inner)]
    return T.StructType([T.StructField(n.strip(), parse_type(t)) for n, t in fields])


def parse_columns(ddl: str) -> T.StructType:
    """`name type, name type, ...` -> StructType (every column nullable)."""
    fields = []
    for part in _split_top(ddl):
        name, kind = part.split(None, 1)
        fields.append(T.StructField(name, parse_type(kind)))
    return T.StructType(fields)


@dataclass(frozen=True)
class Table:
    layer: str
    name: str
    partition_by: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    description: str = ""
    # Spark DDL of every column (Delta matches columns by name; the order is not checked).
    columns: str = ""
    # A column the writer stamps with the write time (not part of Python-built rows).
    written_at: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def schema(self) -> T.StructType:
        return parse_columns(self.columns)

    def path(self, settings: Settings) -> str:
        return f"{settings.warehouse_dir.rstrip('/')}/{self.layer}/{self.name}"

    def frame(self, spark: SparkSession, rows: list[dict]) -> DataFrame:
        """Rows (dicts keyed by column; a missing column is null) as a DataFrame of the
        declared schema, the write time stamped into `written_at`."""
        fields = [f for f in self.schema.fields if f.name != self.written_at]
        schema = T.StructType(fields)
        values = [tuple(_coerce(r.get(f.name), f.dataType) for f in fields) for r in rows]
        df = spark.createDataFrame(values, schema)
        if self.written_at:
            df = df.withColumn(self.written_at, F.current_timestamp())
        return df


def _coerce(value, kind: T.DataType):
    if value is None:
        return None
    if isinstance(kind, T.DoubleType | T.FloatType):
        return float(value)
    if isinstance(kind, T.LongType | T.IntegerType):
        return int(value)
    return value


def _ddl(fields) -> str:
    return ", ".join(f"{f.name} {f.type}" for f in fields)


_ITEM_COLUMNS = (
    "item_id string, title string, category_path string, tags array<string>, brand string, "
    "price double, image_vector array<float>, updated_at timestamp, dt string, run_id string"
)
_USER_COLUMNS = (
    "user_id string, age_band string, gender string, city_tier string, signup_date date, "
    "updated_at timestamp, dt string, run_id string"
)

BRONZE_EVENTS = Table(
    "bronze", "events", ("dt",), ("event_id",), "typed, deduplicated events",
    "event_id string, event_type string, user_id string, item_id string, request_id string, "
    "position int, event_time timestamp, ingestion_time timestamp, device string, "
    "surface string, ingested_at timestamp, run_id string, dt string",
)  # fmt: skip
BRONZE_ITEMS = Table(
    "bronze", "items", (), ("item_id",), "current item catalogue, upserted", _ITEM_COLUMNS
)
BRONZE_USERS = Table(
    "bronze", "users", (), ("user_id",), "current user attributes, upserted", _USER_COLUMNS
)
BRONZE_ITEM_HISTORY = Table(
    "bronze", "item_history", ("dt",), ("item_id", "dt"), "every item delivery, read as of a day",
    _ITEM_COLUMNS,
)  # fmt: skip
BRONZE_USER_HISTORY = Table(
    "bronze", "user_history", ("dt",), ("user_id", "dt"), "every user delivery, read as of a day",
    _USER_COLUMNS,
)  # fmt: skip
BRONZE_QUARANTINE = Table(
    "bronze", "quarantine", ("dt",), (), "rejected raw rows with the rule they broke",
    "source_table string, raw_record string, reason string, rules string, run_id string, "
    "quarantined_at timestamp, dt string",
)  # fmt: skip
BRONZE_PENDING_EVENTS = Table(
    "bronze", "pending_events", ("dt",), ("event_id", "dt"),
    "clicks and conversions waiting for their parent, as they stand at the end of each day",
    "event_id string, event_type string, user_id string, item_id string, request_id string, "
    "position int, event_time timestamp, ingestion_time timestamp, device string, "
    "surface string, raw_record string, arrival_dt string, run_id string, dt string",
)  # fmt: skip
BRONZE_INGEST_RUNS = Table(
    "bronze", "ingest_runs", ("dt",), ("source",), "per-run row accounting",
    "source string, dt string, run_id string, raw_rows bigint, bronze_rows bigint, "
    "quarantined_rows bigint, duplicate_rows bigint, pending_rows bigint, released_rows bigint, "
    "expired_rows bigint, files_read array<string>, files_skipped array<string>, "
    "recorded_at timestamp",
    written_at="recorded_at",
)  # fmt: skip
SILVER_BEHAVIORS = Table(
    "silver", "behaviors", ("dt",), ("event_id",), "clicks and conversions",
    "event_id string, user_id string, item_id string, category string, behavior_type string, "
    "request_id string, event_time timestamp, ingestion_time timestamp, dt string",
)  # fmt: skip
_DAILY_COUNTS = "impressions bigint, clicks bigint, conversions bigint, dt string"
SILVER_USER_DAILY = Table(
    "silver", "user_daily_activity", ("dt",), ("user_id",), "per-user counts of one day",
    f"user_id string, {_DAILY_COUNTS}",
)  # fmt: skip
SILVER_ITEM_DAILY = Table(
    "silver", "item_daily_stats", ("dt",), ("item_id",), "per-item counts",
    f"item_id string, {_DAILY_COUNTS}",
)  # fmt: skip
SILVER_USER_CATEGORY_EXPOSURE = Table(
    "silver", "user_category_exposure", ("dt",), ("user_id", "top_category"),
    "per-user impressions and clicks per top category of one day",
    "user_id string, top_category string, impressions bigint, clicks bigint, dt string",
)  # fmt: skip
SILVER_USER_CATEGORY_STATE = Table(
    "silver", "user_category_state", ("dt",), ("user_id", "top_category"),
    "per-user impressions and clicks per top category over the 30 days ending with dt",
    "user_id string, top_category string, impressions_30d bigint, clicks_30d bigint, dt string",
)  # fmt: skip
SILVER_SEQUENCE_STATE = Table(
    "silver", "sequence_state", ("dt",), ("user_id",), "last L clicks per user at the end of dt",
    "user_id string, "
    "seq array<struct<ts:timestamp,event_id:string,item_id:string,category:string>>, dt string",
)  # fmt: skip
SILVER_ITEM_EMBEDDINGS = Table(
    "silver", "item_embeddings", (), ("item_id",), "frozen multimodal vectors per encoder version",
    "item_id string, content_hash string, has_image boolean, embedding array<float>, "
    "encoder_version string, updated_dt string",
)  # fmt: skip
SILVER_ITEM_PROJECTIONS = Table(
    "silver", "item_embedding_projections", (), ("encoder_version",),
    "PCA fitted once per version",
    "encoder_version string, mean array<float>, components array<array<float>>, "
    "fitted_on_items bigint, fitted_at timestamp",
    written_at="fitted_at",
)  # fmt: skip
_WINDOW_COUNTS = ", ".join(
    f"{kind}_{days}d bigint" for days in (7, 30, 365) for kind in ("clicks", "impressions",
                                                                    "conversions")
)  # fmt: skip
SILVER_USER_FEATURES = Table(
    "silver", "user_features", ("dt",), ("user_id",), "attributes, 7/30/365-day activity, bucket",
    "user_id string, age_band string, gender string, city_tier string, signup_date date, "
    f"{_WINDOW_COUNTS}, activity_bucket string, dt string",
)  # fmt: skip
SILVER_USER_CATEGORY_DAILY = Table(
    "silver", "user_category_daily", ("dt",), ("user_id", "category"),
    "per-user clicks, purchases and price percentile per category of one day",
    "user_id string, category string, clicks bigint, purchases bigint, price_sum double, "
    "priced bigint, dt string",
)  # fmt: skip
SILVER_USER_PROFILES = Table(
    "silver", "user_profiles", ("dt",), ("user_id", "dt"),
    "semantic profiles (LLM or template) written on dt, read as of a day; cached by input "
    "fingerprint, prompt version, model",
    "user_id string, input_fingerprint string, input_json string, prompt_version string, "
    "model string, source string, profile_json string, profile_text string, "
    "llm_fingerprint string, llm_error string, llm_failures int, completion_tokens int, "
    "llm_seconds double, updated_dt string, dt string",
)  # fmt: skip
SILVER_PROFILE_RUNS = Table(
    "silver", "profile_runs", ("dt",), ("dt",),
    "per-run LLM accounting: calls, hits, failures, tokens",
    "cache_hits bigint, calls bigint, completion_tokens bigint, dt string, failures bigint, "
    "llm_profiles bigint, model string, prompt_version string, seconds double, "
    "template_profiles bigint, tokens_per_second double, users_considered bigint, "
    "users_per_second double",
)  # fmt: skip
SILVER_GROUP_CODEBOOKS = Table(
    "silver", "group_codebooks", (), ("codebook_version", "stage", "code"),
    "RQ-KMeans centroids, one set per codebook version",
    "codebook_version string, stage int, code int, centroid array<float>, fitted_dt string, "
    "users_fitted bigint, created_at timestamp",
)  # fmt: skip
SILVER_USER_GROUPS = Table(
    "silver", "user_groups", ("dt",), ("user_id",), "RQ-KMeans codes (c1, c2, c3) at the end of dt",
    "user_id string, c1 int, c2 int, c3 int, codes array<int>, leaf_group string, "
    "prior_group string, codebook_version string, profile_fingerprint string, "
    "profile_source string, assigned_dt string, dt string",
)  # fmt: skip
SILVER_GROUP_PRIORS = Table(
    "silver", "group_priors", ("dt",), ("group_id",),
    "per group: voted attributes and the group behaviour sequence, as of dt",
    "group_id string, members bigint, voted_age_band string, voted_gender string, "
    "voted_city_tier string, group_hist_categories array<string>, "
    "group_hist_top_categories array<string>, dt string",
)  # fmt: skip
GOLD_SAMPLES = Table(
    "gold", "samples", ("dt",), ("event_id",), "one row per impression", _ddl(SAMPLE_FIELDS)
)
LABEL_STATUS = Table(
    "gold", "label_status", (), ("dt",), "per gold.samples day: labels as of, maturity",
    "dt string, labels_as_of string, maturity_hours int, corrected_labels bigint, "
    "updated_at timestamp",
    written_at="updated_at",
)  # fmt: skip
GOLD_MATURE_METRICS = Table(
    "gold", "mature_metrics", ("dt",), ("dt", "model", "run_id", "slice", "metric"),
    "evaluations scored again once their day's labels matured",
    "model string, run_id string, model_version string, slice string, metric string, "
    "value_as_scored double, value double, maturity_hours_as_scored int, maturity_hours int, "
    "labels_changed bigint, dt string, rescored_at timestamp",
    written_at="rescored_at",
)  # fmt: skip
GOLD_PROMOTIONS = Table(
    "gold", "promotions", ("dt",), ("dt", "challenger_model"), "champion/challenger decisions",
    "challenger_model string, challenger_version string, champion_version string, "
    "promoted boolean, gain double, ci_low double, ci_high double, reasons string, dt string, "
    "decided_at timestamp",
    written_at="decided_at",
)  # fmt: skip
QUALITY_RESULTS = Table(
    "quality", "results", ("dt",), ("dt", "table", "expectation", "column"),
    "every GX check of every gate run",
    "table string, expectation string, column string, severity string, success boolean, "
    "unexpected_count bigint, element_count bigint, observed string, examples array<string>, "
    "dt string, checked_at timestamp",
    written_at="checked_at",
)  # fmt: skip
QUALITY_MONITORING = Table(
    "quality", "monitoring", ("dt",), (), "freshness, volume and drift across tables",
    "check string, table string, column string, value double, threshold double, status string, "
    "detail string, dt string, checked_at timestamp",
    written_at="checked_at",
)  # fmt: skip
GOLD_METRICS = Table(
    "gold", "metrics", ("dt",), ("dt", "model", "run_id", "slice", "metric"),
    "evaluation results, one row per metric",
    "model string, run_id string, model_version string, slice string, metric string, "
    "value double, dt string, recorded_at timestamp",
    written_at="recorded_at",
)  # fmt: skip

ALL_TABLES = [
    BRONZE_EVENTS,
    BRONZE_ITEMS,
    BRONZE_USERS,
    BRONZE_ITEM_HISTORY,
    BRONZE_USER_HISTORY,
    BRONZE_QUARANTINE,
    BRONZE_PENDING_EVENTS,
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
    LABEL_STATUS,
    GOLD_METRICS,
    GOLD_MATURE_METRICS,
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


def read_as_of_days(
    spark: SparkSession,
    table: Table,
    settings: Settings,
    start: str,
    end: str,
    newest_by: tuple[str, ...] = ("updated_at",),
) -> DataFrame:
    """read_as_of for every day of [start, end] at once, the day in column `as_of`: what a
    range step joins on (key, dt = as_of). Rows delivered before start enter as the one row
    each key had at start, so the expansion is (keys + deliveries in the range) x days."""
    key = [k for k in table.keys if k != "dt"]
    base = read_as_of(spark, table, settings, start, newest_by)
    later = read(spark, table, settings).where((F.col("dt") > start) & (F.col("dt") <= end))
    days = day_frame(spark, start, end).withColumnRenamed("day", "as_of")
    spread = base.unionByName(later).join(F.broadcast(days), F.col("dt") <= F.col("as_of"))
    newest = Window.partitionBy(*key, "as_of").orderBy(*[F.desc(c) for c in (*newest_by, "dt")])
    return (
        spread.withColumn("_newest", F.row_number().over(newest))
        .where("_newest = 1")
        .drop("_newest")
    )


def day_frame(spark: SparkSession, start: str, end: str) -> DataFrame:
    """One row per day of [start, end]: column `day`, an ISO string like `dt`."""
    span = F.sequence(F.to_date(F.lit(start)), F.to_date(F.lit(end)))
    days = spark.range(1).select(F.explode(span).alias("day"))
    return days.select(F.date_format("day", "yyyy-MM-dd").alias("day"))


def version(spark: SparkSession, table: Table, settings: Settings) -> int | None:
    """The table's current Delta version (for lineage), or None when it does not exist."""
    if not exists(spark, table, settings):
        return None
    history = DeltaTable.forPath(spark, table.path(settings)).history(1)
    return int(history.select("version").first()[0])


def sql_predicate(df: DataFrame, condition: Column) -> str:
    """A Column condition as the SQL text Delta's replaceWhere takes, resolved against the
    rows being written: Spark writes the literals, quoted and escaped, so no value is pasted
    into SQL by hand."""
    plan = df.where(condition)._jdf.queryExecution().analyzed()  # a Filter over df
    return plan.condition().sql()


def partition(dt: str, **equal: str) -> Column:
    """`dt = <dt> AND <column> = <value> ...`: the rows one run of a step owns."""
    condition = F.col("dt") == F.lit(dt)
    for column, value in equal.items():
        condition = condition & (F.col(column) == F.lit(value))
    return condition


def day_range(start: str, end: str) -> Column:
    """`dt BETWEEN start AND end`: the partitions one chunk of a range step owns."""
    return (F.col("dt") >= F.lit(start)) & (F.col("dt") <= F.lit(end))


def replace_partition(
    df: DataFrame, table: Table, settings: Settings, condition: Column, add_columns: bool = False
) -> None:
    """Atomically replace the rows matching `condition` (`partition(dt)`, or any Column
    condition over partition columns) with df; `add_columns` lets df bring new columns."""
    writer = df.write.format("delta").mode("overwrite")
    if add_columns:
        writer = writer.option("mergeSchema", "true")
    writer = writer.option("replaceWhere", sql_predicate(df, condition))
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
