"""Raw logs -> bronze tables, typed by the schemas/ contracts, with quarantine.

Every raw line ends in exactly one place: the bronze table, bronze.quarantine (with the raw
record, the rule it broke and the run), or the count of duplicates. The run checks
`raw = bronze + quarantined + duplicates` and records it in bronze.ingest_runs.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.contracts import Contract, load_contract
from choirflow.logs import step_log

# Far-past and future bounds for event times, relative to the partition's day.
MAX_EVENT_AGE_DAYS = 30
MAX_CLOCK_SKEW_MINUTES = 10
DEDUP_LOOKBACK_DAYS = 3


@dataclass
class IngestCounts:
    source: str
    dt: str
    run_id: str
    raw_rows: int
    bronze_rows: int
    quarantined_rows: int
    duplicate_rows: int

    @property
    def reconciles(self) -> bool:
        return self.raw_rows == self.bronze_rows + self.quarantined_rows + self.duplicate_rows

    def line(self) -> str:
        mark = "ok" if self.reconciles else "MISMATCH"
        return (
            f"{self.source}: raw={self.raw_rows} = bronze={self.bronze_rows}"
            f" + quarantined={self.quarantined_rows} + duplicates={self.duplicate_rows} ({mark})"
        )


class ReconciliationError(RuntimeError):
    pass


def raw_partition(settings: Settings, source: str, dt: str) -> str:
    return f"{settings.raw_dir.rstrip('/')}/{source}/dt={dt}"


def _read_lines(spark: SparkSession, path: str) -> DataFrame:
    """Raw lines as text; a missing folder is an empty day, not an error."""
    if "://" not in path and not Path(path).exists():
        return spark.createDataFrame([], "value string")
    # Invalid UTF-8 is replaced, not dropped: the row still reaches a rule below.
    return spark.read.option("wholetext", "false").text(path)


def _rule_checks(contract: Contract, typed: SparkColumn, fields: SparkColumn) -> list[SparkColumn]:
    """One `when(broken, rule name)` per contract check, in the order they are reported."""
    checks = []
    known = contract.column_names
    checks.append(F.when(fields.isNull(), F.lit("malformed_json")))
    for col in contract.columns:
        value = typed[col.name]
        raw = fields[col.name]
        present = raw.isNotNull() & (F.lower(raw) != "null")
        if not col.nullable:
            checks.append(F.when(~present, F.lit(f"missing:{col.name}")))
        checks.append(F.when(present & value.isNull(), F.lit(f"wrong_type:{col.name}")))
        if col.allowed is not None:
            allowed = [str(a) for a in col.allowed]
            checks.append(
                F.when(
                    value.isNotNull() & ~value.cast("string").isin(allowed),
                    F.lit(f"not_allowed:{col.name}"),
                )
            )
        if col.min is not None:
            checks.append(F.when(value < F.lit(col.min), F.lit(f"below_min:{col.name}")))
        if col.max is not None:
            checks.append(F.when(value > F.lit(col.max), F.lit(f"above_max:{col.name}")))
        if col.max_length is not None:
            checks.append(F.when(F.length(value) > col.max_length, F.lit(f"too_long:{col.name}")))
        if col.max_items is not None:
            checks.append(
                F.when(F.size(value) > col.max_items, F.lit(f"too_many_items:{col.name}"))
            )
        if col.width is not None:
            checks.append(
                F.when(
                    value.isNotNull() & (F.size(value) != col.width),
                    F.lit(f"wrong_width:{col.name}"),
                )
            )
            checks.append(
                F.when(
                    value.isNotNull()
                    & F.exists(value, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) > 1e6)),
                    F.lit(f"non_finite:{col.name}"),
                )
            )
    checks.append(
        F.when(
            F.size(F.filter(F.map_keys(fields), lambda k: ~k.isin(known))) > 0,
            F.lit("unexpected_column"),
        )
    )
    return checks


def _event_time_checks(typed: SparkColumn, dt: str) -> list[SparkColumn]:
    day_start = F.to_timestamp(F.lit(dt))
    oldest = day_start - F.expr(f"INTERVAL {MAX_EVENT_AGE_DAYS} DAYS")
    skew = F.expr(f"INTERVAL {MAX_CLOCK_SKEW_MINUTES} MINUTES")
    return [
        F.when(typed["event_time"] > typed["ingestion_time"] + skew, F.lit("event_time_in_future")),
        F.when(typed["event_time"] < oldest, F.lit("event_time_too_old")),
    ]


def validate(
    spark: SparkSession, lines: DataFrame, contract: Contract, dt: str, extra_checks: bool
) -> DataFrame:
    """Parse raw lines and attach `rules` (all broken rules) and `reason` (the first)."""
    fields = F.from_json("value", "map<string,string>")
    parsed = lines.select(
        F.col("value").alias("raw_record"),
        fields.alias("fields"),
        F.from_json(
            "value", contract.spark_schema(), {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss[.SSS]XXX"}
        ).alias("typed"),
    )
    checks = _rule_checks(contract, F.col("typed"), F.col("fields"))
    # A line with bytes that are not UTF-8 is not trusted, whatever else parses in it.
    checks.insert(0, F.when(~F.expr("is_valid_utf8(raw_record)"), F.lit("invalid_utf8")))
    if extra_checks:
        checks += _event_time_checks(F.col("typed"), dt)
    rules = F.filter(F.array(*checks), lambda r: r.isNotNull())
    return parsed.withColumn("rules", rules).withColumn(
        "reason", F.try_element_at("rules", F.lit(1))
    )


def _quarantine_rows(bad: DataFrame, source: str, dt: str, run_id: str) -> DataFrame:
    return bad.select(
        F.lit(source).alias("source_table"),
        F.expr("make_valid_utf8(raw_record)").alias("raw_record"),
        "reason",
        F.array_join("rules", ";").alias("rules"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
        F.lit(dt).alias("dt"),
    )


def ingest_events(
    spark: SparkSession, settings: Settings, dt: str, run_id: str | None = None
) -> IngestCounts:
    """Raw events of one arrival day -> bronze.events partition dt (replaced: reruns are safe)."""
    run_id = run_id or uuid.uuid4().hex[:12]
    contract = load_contract("raw_events")
    lines = _read_lines(spark, raw_partition(settings, "events", dt))
    checked = validate(spark, lines, contract, dt, extra_checks=True).cache()
    raw_rows = checked.count()
    good = checked.where(F.size("rules") == 0).select("typed.*", "raw_record")
    bad = checked.where(F.size("rules") > 0)

    # Duplicates: the same event id twice in this delivery, or already in a recent partition.
    first = Window.partitionBy("event_id").orderBy("ingestion_time", "event_time")
    good = good.withColumn("_n", F.row_number().over(first)).cache()
    good_rows = good.count()
    unique = good.where("_n = 1").drop("_n")
    if tables.exists(spark, tables.BRONZE_EVENTS, settings):
        lo = (date.fromisoformat(dt) - timedelta(days=DEDUP_LOOKBACK_DAYS)).isoformat()
        seen = (
            tables.read(spark, tables.BRONZE_EVENTS, settings)
            .where((F.col("dt") >= lo) & (F.col("dt") < dt))
            .select("event_id")
        )
        unique = unique.join(seen, "event_id", "left_anti")
    unique = unique.cache()
    duplicate_rows = good_rows - unique.count()
    unique, orphans = _split_orphans(spark, settings, unique, dt)
    bad = bad.unionByName(orphans, allowMissingColumns=True)
    bronze = unique.select(
        *contract.column_names,
        F.current_timestamp().alias("ingested_at"),
        F.lit(run_id).alias("run_id"),
        F.lit(dt).alias("dt"),
    )
    tables.replace_partition(bronze, tables.BRONZE_EVENTS, settings, tables.partition(dt))
    _write_quarantine(
        spark, settings, _quarantine_rows(bad, "raw_events", dt, run_id), "raw_events", dt
    )
    # Counted back from the tables as written, so the identity below is a real check.
    bronze_rows = (
        tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == dt).count()
    )
    counts = IngestCounts(
        "raw_events",
        dt,
        run_id,
        raw_rows,
        bronze_rows,
        _quarantined_count(spark, settings, "raw_events", dt),
        duplicate_rows,
    )
    for frame in (checked, good, unique):
        frame.unpersist()
    _record_run(spark, settings, counts)
    return counts


def _split_orphans(
    spark: SparkSession, settings: Settings, events: DataFrame, dt: str
) -> tuple[DataFrame, DataFrame]:
    """(kept, orphans): a click needs an impression of the same request and item, a
    conversion a click, in this delivery or a recent partition; orphans get a reason."""
    keys = ["user_id", "item_id", "request_id"]
    known = events.select(*keys, "event_type")
    if tables.exists(spark, tables.BRONZE_EVENTS, settings):
        lo = (date.fromisoformat(dt) - timedelta(days=DEDUP_LOOKBACK_DAYS)).isoformat()
        earlier = (
            tables.read(spark, tables.BRONZE_EVENTS, settings)
            .where((F.col("dt") >= lo) & (F.col("dt") < dt) & (F.col("event_type") != "conversion"))
            .select(*keys, "event_type")
        )
        known = known.unionByName(earlier)
    marked = events
    for parent in ("impression", "click"):
        have = known.where(F.col("event_type") == parent).select(*keys).distinct()
        have = have.withColumn(f"_has_{parent}", F.lit(True))
        marked = marked.join(have, keys, "left")
    orphan_reason = F.when(
        (F.col("event_type") == "click") & F.col("_has_impression").isNull(), "orphan_click"
    ).when(
        (F.col("event_type") == "conversion") & F.col("_has_click").isNull(), "orphan_conversion"
    )
    marked = (
        marked.withColumn("reason", orphan_reason).drop("_has_impression", "_has_click").cache()
    )
    kept = marked.where(F.col("reason").isNull()).drop("reason")
    orphans = marked.where(F.col("reason").isNotNull()).select(
        "raw_record", "reason", F.array("reason").alias("rules")
    )
    return kept, orphans


def ingest_dimension(
    spark: SparkSession, settings: Settings, source: str, dt: str, run_id: str | None = None
) -> IngestCounts:
    """Raw items or users delivered on day dt -> partition dt of bronze.item_history /
    bronze.user_history, and a MERGE into the current bronze.items / bronze.users.

    Builds read the history as of their own day (tables.read_as_of), so a backfill run after
    the catalogue has moved on builds what the daily run built; the current table answers
    "what is the catalogue now" (a newer stored updated_at wins)."""
    run_id = run_id or uuid.uuid4().hex[:12]
    contract = load_contract(f"raw_{source}")
    current, history = {
        "items": (tables.BRONZE_ITEMS, tables.BRONZE_ITEM_HISTORY),
        "users": (tables.BRONZE_USERS, tables.BRONZE_USER_HISTORY),
    }[source]
    lines = _read_lines(spark, raw_partition(settings, source, dt))
    checked = validate(spark, lines, contract, dt, extra_checks=False).cache()
    raw_rows = checked.count()
    good = checked.where(F.size("rules") == 0).select("typed.*")
    bad = checked.where(F.size("rules") > 0)
    key = contract.key[0]
    latest = Window.partitionBy(key).orderBy(F.col("updated_at").desc())
    unique = good.withColumn("_n", F.row_number().over(latest)).where("_n = 1").drop("_n")
    good = good.cache()
    upsert = unique.select(
        *contract.column_names, F.lit(dt).alias("dt"), F.lit(run_id).alias("run_id")
    ).cache()
    kept = upsert.count()
    tables.replace_partition(upsert, history, settings, tables.partition(dt))
    if kept:
        tables.merge_upsert(spark, upsert, current, settings, newer_than="updated_at")
    source_name = f"raw_{source}"
    _write_quarantine(
        spark, settings, _quarantine_rows(bad, source_name, dt, run_id), source_name, dt
    )
    # bronze rows: this delivery's rows, one per key (the newest updated_at of the delivery)
    counts = IngestCounts(
        source_name,
        dt,
        run_id,
        raw_rows,
        kept,
        _quarantined_count(spark, settings, source_name, dt),
        good.count() - kept,
    )
    good.unpersist()
    checked.unpersist()
    upsert.unpersist()
    _record_run(spark, settings, counts)
    return counts


def _write_quarantine(
    spark: SparkSession, settings: Settings, rows: DataFrame, source: str, dt: str
) -> None:
    """Replace this source's quarantine rows for dt, so a rerun does not double them."""
    predicate = tables.partition(dt, source_table=source)
    if not tables.exists(spark, tables.BRONZE_QUARANTINE, settings):
        rows.write.format("delta").partitionBy("dt").save(tables.BRONZE_QUARANTINE.path(settings))
        return
    tables.replace_partition(rows, tables.BRONZE_QUARANTINE, settings, predicate)


def _quarantined_count(spark: SparkSession, settings: Settings, source: str, dt: str) -> int:
    if not tables.exists(spark, tables.BRONZE_QUARANTINE, settings):
        return 0
    q = tables.read(spark, tables.BRONZE_QUARANTINE, settings)
    return q.where((F.col("dt") == dt) & (F.col("source_table") == source)).count()


def _record_run(spark: SparkSession, settings: Settings, counts: IngestCounts) -> None:
    df = tables.BRONZE_INGEST_RUNS.frame(spark, [asdict(counts)])
    predicate = tables.partition(counts.dt, source=counts.source)
    if not tables.exists(spark, tables.BRONZE_INGEST_RUNS, settings):
        df.write.format("delta").partitionBy("dt").save(tables.BRONZE_INGEST_RUNS.path(settings))
    else:
        tables.replace_partition(df, tables.BRONZE_INGEST_RUNS, settings, predicate)


def ingest_day(spark: SparkSession, settings: Settings, dt: str) -> list[IngestCounts]:
    """Users, items, then events of one day; raises if any source fails to reconcile."""
    run_id = uuid.uuid4().hex[:12]
    results = [
        ingest_dimension(spark, settings, "users", dt, run_id),
        ingest_dimension(spark, settings, "items", dt, run_id),
        ingest_events(spark, settings, dt, run_id),
    ]
    for counts in results:
        step_log(__name__, "ingest", dt).info("%s", counts.line())
        if not counts.reconciles or counts.duplicate_rows < 0:
            raise ReconciliationError(counts.line())
    return results
