"""Raw logs -> bronze tables, typed by the schemas/ contracts, with quarantine.

Every raw line ends in exactly one place: the bronze table, bronze.quarantine (with the raw
record, the rule it broke and the run), or the count of duplicates. The run checks
`raw = bronze + quarantined + duplicates` and records it in bronze.ingest_runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import reduce
from pathlib import Path

import pandas as pd
from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.contracts import Column as ContractColumn
from choirflow.contracts import Contract, load_contract
from choirflow.dates import day_offset, days_between
from choirflow.ingest.judge import (
    SPARK_TIME_FORMAT,
    WHOLE_LINE_RULES,
    contract_types,
    judge_series,
)
from choirflow.logs import step_log

# Far-past and future bounds for event times, relative to the partition's day.
MAX_EVENT_AGE_DAYS = 30
MAX_CLOCK_SKEW_MINUTES = 10
DEDUP_LOOKBACK_DAYS = 3
# Empty or whitespace only, Unicode spaces included (Java regex, UNICODE_CHARACTER_CLASS).
BLANK = r"(?U)^\s*$"
SPACE_OR_CONTROL = r"(?U)[\s\p{Cntrl}]"  # never inside an id


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


def _read_days(
    spark: SparkSession, settings: Settings, source: str, start: str, end: str
) -> DataFrame:
    """Raw lines of every arrival day in [start, end] as text with their `dt`, in one scan; a
    missing folder is an empty day, not an error."""
    paths = [raw_partition(settings, source, dt) for dt in days_between(start, end)]
    paths = [p for p in paths if "://" in p or Path(p).exists()]
    if not paths:
        return spark.createDataFrame([], "value string, dt string")
    # Invalid UTF-8 is replaced, not dropped: the row still reaches a rule below.
    lines = spark.read.option("wholetext", "false").text(paths)
    day = F.regexp_extract(F.col("_metadata.file_path"), r"dt=(\d{4}-\d{2}-\d{2})", 1)
    return lines.select("value", day.alias("dt"))


def _blank(text: SparkColumn) -> SparkColumn:
    """Empty or whitespace only (Unicode whitespace included)."""
    return text.rlike(BLANK)


def _string_checks(col: ContractColumn, raw: SparkColumn, present: SparkColumn) -> list:
    """A required string may not be blank; an id may not hold whitespace or control
    characters anywhere (a blank optional string was read as null before the checks)."""
    checks = []
    if not col.nullable:
        checks.append(F.when(present & _blank(raw), F.lit(f"blank:{col.name}")))
    if col.identifier:
        odd = present & ~_blank(raw) & raw.rlike(SPACE_OR_CONTROL)
        checks.append(F.when(odd, F.lit(f"bad_characters:{col.name}")))
    return checks


def blank_strings_to_null(contract: Contract, typed: SparkColumn) -> SparkColumn:
    """The contract's rule for optional strings: blank means absent."""
    for col in contract.columns:
        if col.type == "string" and col.nullable:
            value = typed[col.name]
            typed = typed.withField(col.name, F.when(~_blank(value), value))
    return typed


def _rule_checks(contract: Contract, typed: SparkColumn, fields: SparkColumn) -> list[SparkColumn]:
    """One `when(broken, rule name)` per contract check, in the order they are reported. JSON
    types and time formats were judged before (judge.py); what remains is values."""
    checks = []
    known = contract.column_names
    for col in contract.columns:
        value = typed[col.name]
        raw = fields[col.name]
        present = raw.isNotNull() & (F.lower(raw) != "null")
        if not col.nullable:
            checks.append(F.when(~present, F.lit(f"missing:{col.name}")))
        if col.type == "string":
            checks += _string_checks(col, raw, present)
            present = present & ~_blank(raw)  # blank: judged above, or read as null
        if col.type not in ("timestamp", "date"):  # a time that does not parse: bad_time
            checks.append(F.when(present & value.isNull(), F.lit(f"type:{col.name}")))
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
        if col.max_item_length is not None:
            longest = F.array_max(F.transform(value, F.length)) > col.max_item_length
            checks.append(F.when(longest, F.lit(f"too_long:{col.name}")))
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


def _event_time_checks(typed: SparkColumn, dt: SparkColumn) -> list[SparkColumn]:
    """Times judged against each other and against the day the line arrived: nothing can be
    logged after the end of its arrival day (plus the clock skew allowed)."""
    day_start = F.to_timestamp(dt)
    oldest = day_start - F.expr(f"INTERVAL {MAX_EVENT_AGE_DAYS} DAYS")
    skew = F.expr(f"INTERVAL {MAX_CLOCK_SKEW_MINUTES} MINUTES")
    day_end = day_start + F.expr("INTERVAL 1 DAY") + skew
    return [
        F.when(typed["event_time"] > typed["ingestion_time"] + skew, F.lit("event_time_in_future")),
        F.when(typed["event_time"] > day_end, F.lit("event_time_after_arrival_day")),
        F.when(typed["ingestion_time"] > day_end, F.lit("ingestion_time_after_arrival_day")),
        F.when(typed["event_time"] < oldest, F.lit("event_time_too_old")),
    ]


def _judge(contract: Contract) -> Callable[[SparkColumn], SparkColumn]:
    """judge.judge_line as a Spark pandas UDF: (rules, canonical line) per raw line."""
    types = contract_types(contract)

    @F.pandas_udf("rules array<string>, canonical string")
    def judged(lines: pd.Series) -> pd.DataFrame:
        return judge_series(lines, types)

    return judged


def validate(lines: DataFrame, contract: Contract, extra_checks: bool) -> DataFrame:
    """Judge raw lines (`value`, arrival day `dt`) strictly, parse their canonical form and
    attach `rules` (all broken rules) and `reason` (the first)."""
    judged = lines.select(
        "dt",
        F.col("value").alias("raw_record"),
        _judge(contract)(F.expr("make_valid_utf8(value)")).alias("judged"),
    )
    canonical = F.col("judged.canonical")
    typed = F.from_json(canonical, contract.spark_schema(), {"timestampFormat": SPARK_TIME_FORMAT})
    parsed = judged.select(
        "dt",
        "raw_record",
        F.col("judged.rules").alias("judged_rules"),
        F.from_json(canonical, "map<string,string>").alias("fields"),
        blank_strings_to_null(contract, typed).alias("typed"),
    )
    checks = _rule_checks(contract, F.col("typed"), F.col("fields"))
    if extra_checks:
        checks += _event_time_checks(F.col("typed"), F.col("dt"))
    value_rules = F.filter(F.array(*checks), lambda r: r.isNotNull())
    # A line that is not one object of the right size is judged whole: no rule inside it.
    whole_line = F.arrays_overlap("judged_rules", F.array(*map(F.lit, WHOLE_LINE_RULES)))
    # A line with bytes that are not UTF-8 is not trusted, whatever else parses in it.
    no_rule = F.array().cast("array<string>")
    utf8 = F.when(F.expr("is_valid_utf8(raw_record)"), no_rule).otherwise(
        F.array(F.lit("invalid_utf8"))
    )
    rules = F.array_distinct(F.concat(
        utf8,
        F.col("judged_rules"),
        F.when(whole_line, no_rule).otherwise(value_rules),
    ))  # fmt: skip
    return (
        parsed.withColumn("rules", rules)
        .withColumn("reason", F.try_element_at("rules", F.lit(1)))
        .drop("judged_rules")
    )


def _quarantine_rows(bad: DataFrame, source: str, run_id: str) -> DataFrame:
    return bad.select(
        F.lit(source).alias("source_table"),
        F.expr("make_valid_utf8(raw_record)").alias("raw_record"),
        "reason",
        F.array_join("rules", ";").alias("rules"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
        "dt",
    )


def _counts_by_day(frame: DataFrame) -> dict[str, int]:
    return {r.dt: r["count"] for r in frame.groupBy("dt").count().collect()}


def _within_lookback(later: SparkColumn, earlier: SparkColumn) -> SparkColumn:
    """`earlier` is the day `later` or one of the DEDUP_LOOKBACK_DAYS days before it."""
    return (earlier <= later) & (earlier >= F.date_format(
        F.date_sub(F.to_date(later), DEDUP_LOOKBACK_DAYS), "yyyy-MM-dd"
    ))  # fmt: skip


def _first_deliveries(occurrences: DataFrame) -> DataFrame:
    """Status of each (event_id, dt) of a chunk: "kept", "duplicate" (an earlier day within
    the lookback kept it) or "orphan", read in day order per event id, where `prior` rows
    are bronze's own, kept before the chunk. Exactly what day-by-day runs decide: a copy is a
    duplicate of what bronze kept, never of what was quarantined."""
    start = F.struct(
        F.lit(None).cast("string").alias("last"),
        F.array().cast("array<struct<dt:string,status:string>>").alias("out"),
    )

    def step(acc: SparkColumn, x: SparkColumn) -> SparkColumn:
        seen = acc["last"].isNotNull() & (
            F.datediff(F.to_date(x["dt"]), F.to_date(acc["last"])) <= DEDUP_LOOKBACK_DAYS
        )
        status = (
            F.when(x["prior"], F.lit("prior"))
            .when(seen, F.lit("duplicate"))
            .when(x["orphan"], F.lit("orphan"))
            .otherwise(F.lit("kept"))
        )
        last = F.when(status.isin("prior", "kept"), x["dt"]).otherwise(acc["last"])
        entry = F.struct(x["dt"].alias("dt"), status.alias("status"))
        return F.struct(last.alias("last"), F.concat(acc["out"], F.array(entry)).alias("out"))

    per_id = occurrences.groupBy("event_id").agg(
        F.array_sort(F.collect_list(F.struct("dt", "prior", "orphan"))).alias("days")
    )
    decided = per_id.select("event_id", F.aggregate("days", start, step)["out"].alias("out"))
    return (
        decided.select("event_id", F.explode("out").alias("o"))
        .select("event_id", "o.dt", "o.status")
        .where(F.col("status") != "prior")
    )


def _resolve_events(
    spark: SparkSession, settings: Settings, delivered: DataFrame, start: str, cached: list
) -> tuple[DataFrame, ...]:
    """(kept, duplicates, orphans) of the chunk's events, each delivery already unique per
    event id. Impressions, then clicks, then conversions: a click needs a kept impression of
    the same request and item, a conversion a kept click, delivered the same day or in the
    lookback before it; a copy of an event bronze kept in the lookback is a duplicate."""
    keys = ["user_id", "item_id", "request_id"]
    prior = spark.createDataFrame([], "event_id string, user_id string, item_id string, "
                                  "request_id string, event_type string, dt string")  # fmt: skip
    if tables.exists(spark, tables.BRONZE_EVENTS, settings):
        lo = day_offset(start, -DEDUP_LOOKBACK_DAYS)
        prior = (
            tables.read(spark, tables.BRONZE_EVENTS, settings)
            .where((F.col("dt") >= lo) & (F.col("dt") < start))
            .select("event_id", *keys, "event_type", "dt")
        )
    kept_keys = prior
    kept, duplicates, orphans = [], [], []
    for kind, parent in (("impression", None), ("click", "impression"), ("conversion", "click")):
        these = delivered.where(F.col("event_type") == kind)
        flagged = these.withColumn("orphan", F.lit(False))
        if parent is not None:
            have = kept_keys.where(F.col("event_type") == parent).select(
                *[F.col(k).alias(f"_p_{k}") for k in keys], F.col("dt").alias("_p_dt")
            )
            match = [F.col(k) == F.col(f"_p_{k}") for k in keys]
            condition = (
                match[0] & match[1] & match[2] & _within_lookback(F.col("dt"), F.col("_p_dt"))
            )
            has_parent = these.join(have, condition, "left_semi").select("event_id", "dt")
            flagged = (
                these.join(has_parent.withColumn("_has", F.lit(True)), ["event_id", "dt"], "left")
                .withColumn("orphan", F.col("_has").isNull())
                .drop("_has")
            )
        occurrences = flagged.select("event_id", "dt", F.lit(False).alias("prior"), "orphan")
        earlier = prior.join(these.select("event_id"), "event_id", "left_semi")
        occurrences = occurrences.unionByName(
            earlier.select(
                "event_id", "dt", F.lit(True).alias("prior"), F.lit(False).alias("orphan")
            )
        )
        status = _first_deliveries(occurrences)
        decided = these.join(status, ["event_id", "dt"]).localCheckpoint()
        cached.append(decided)
        kept.append(decided.where(F.col("status") == "kept").drop("status"))
        duplicates.append(decided.where(F.col("status") == "duplicate").select("dt"))
        orphans.append(
            decided.where(F.col("status") == "orphan").select(
                "dt", "raw_record", F.lit(f"orphan_{kind}").alias("reason"),
                F.array(F.lit(f"orphan_{kind}")).alias("rules"),
            )
        )  # fmt: skip
        kept_keys = kept_keys.unionByName(kept[-1].select("event_id", *keys, "event_type", "dt"))
    return tuple(reduce(DataFrame.unionByName, frames) for frames in (kept, duplicates, orphans))


def ingest_events_days(
    spark: SparkSession, settings: Settings, start: str, end: str, run_id: str | None = None
) -> list[IngestCounts]:
    """Raw events of the arrival days [start, end] -> those partitions of bronze.events, in
    one pass and one commit per table (replaced: reruns are safe). A daily run is a range of
    one day."""
    run_id = run_id or uuid.uuid4().hex[:12]
    contract = load_contract("raw_events")
    lines = _read_days(spark, settings, "events", start, end)
    # Checkpointed, not cached: later plans start from the rows, not from ~100 parse checks.
    checked = validate(lines, contract, True).localCheckpoint()
    good = checked.where(F.size("rules") == 0).select("typed.*", "raw_record", "dt")
    bad = checked.where(F.size("rules") > 0)
    # The same event id twice in one delivery: the first ingested stays.
    first = Window.partitionBy("event_id", "dt").orderBy("ingestion_time", "event_time")
    good = good.withColumn("_n", F.row_number().over(first)).localCheckpoint()
    delivered = good.where("_n = 1").drop("_n")
    cached: list[DataFrame] = []  # the decisions of each event type, unpersisted at the end
    kept, duplicates, orphans = _resolve_events(spark, settings, delivered, start, cached)
    bronze = kept.select(
        *contract.column_names,
        F.current_timestamp().alias("ingested_at"),
        F.lit(run_id).alias("run_id"),
        "dt",
    )
    tables.replace_partition(bronze, tables.BRONZE_EVENTS, settings, tables.day_range(start, end))
    bad = bad.select("dt", "raw_record", "reason", "rules").unionByName(orphans)
    _write_quarantine(spark, settings, _quarantine_rows(bad, "raw_events", run_id), "raw_events",
                      start, end)  # fmt: skip
    raw = _counts_by_day(checked)
    repeats = _counts_by_day(good.where("_n > 1"))
    dups = _counts_by_day(duplicates)
    # Counted back from the tables as written, so the identity checked is a real one.
    written = tables.read(spark, tables.BRONZE_EVENTS, settings).where(tables.day_range(start, end))
    in_bronze = _counts_by_day(written)
    quarantined = _quarantined_by_day(spark, settings, "raw_events", start, end)
    counts = [
        IngestCounts("raw_events", dt, run_id, raw.get(dt, 0), in_bronze.get(dt, 0),
                     quarantined.get(dt, 0), repeats.get(dt, 0) + dups.get(dt, 0))
        for dt in days_between(start, end)
    ]  # fmt: skip
    for frame in (checked, good, *cached):
        frame.unpersist()
    _record_runs(spark, settings, counts, start, end)
    return counts


def ingest_events(
    spark: SparkSession, settings: Settings, dt: str, run_id: str | None = None
) -> IngestCounts:
    """Raw events of one arrival day -> bronze.events partition dt."""
    return ingest_events_days(spark, settings, dt, dt, run_id)[0]


def ingest_dimension_days(
    spark: SparkSession,
    settings: Settings,
    source: str,
    start: str,
    end: str,
    run_id: str | None = None,
) -> list[IngestCounts]:
    """Raw items or users delivered on the days [start, end] -> those partitions of
    bronze.item_history / bronze.user_history (a key's newest row of each delivery), and one
    MERGE into the current bronze.items / bronze.users of each key's newest row of the
    range (the latest delivery on a tie, as day-by-day MERGEs leave it).

    Builds read the history as of their own day (tables.read_as_of), so a backfill run after
    the catalogue has moved on builds what the daily run built; the current table answers
    "what is the catalogue now" (a newer stored updated_at wins)."""
    run_id = run_id or uuid.uuid4().hex[:12]
    contract = load_contract(f"raw_{source}")
    current, history = {
        "items": (tables.BRONZE_ITEMS, tables.BRONZE_ITEM_HISTORY),
        "users": (tables.BRONZE_USERS, tables.BRONZE_USER_HISTORY),
    }[source]
    lines = _read_days(spark, settings, source, start, end)
    checked = validate(lines, contract, extra_checks=False).cache()
    good = checked.where(F.size("rules") == 0).select("typed.*", "dt").cache()
    bad = checked.where(F.size("rules") > 0)
    key = contract.key[0]
    latest = Window.partitionBy(key, "dt").orderBy(F.col("updated_at").desc())
    upsert = (
        good.withColumn("_n", F.row_number().over(latest))
        .where("_n = 1")
        .select(*contract.column_names, "dt", F.lit(run_id).alias("run_id"))
        .cache()
    )
    kept = _counts_by_day(upsert)
    tables.replace_partition(upsert, history, settings, tables.day_range(start, end))
    if kept:
        newest = Window.partitionBy(key).orderBy(F.col("updated_at").desc(), F.col("dt").desc())
        final = upsert.withColumn("_n", F.row_number().over(newest)).where("_n = 1").drop("_n")
        tables.merge_upsert(spark, final, current, settings, newer_than="updated_at")
    source_name = f"raw_{source}"
    _write_quarantine(
        spark, settings, _quarantine_rows(bad, source_name, run_id), source_name, start, end
    )
    raw, delivered = _counts_by_day(checked), _counts_by_day(good)
    quarantined = _quarantined_by_day(spark, settings, source_name, start, end)
    # bronze rows: each delivery's rows, one per key (the newest updated_at of the delivery)
    counts = [
        IngestCounts(source_name, dt, run_id, raw.get(dt, 0), kept.get(dt, 0),
                     quarantined.get(dt, 0), delivered.get(dt, 0) - kept.get(dt, 0))
        for dt in days_between(start, end)
    ]  # fmt: skip
    for frame in (good, checked, upsert):
        frame.unpersist()
    _record_runs(spark, settings, counts, start, end)
    return counts


def ingest_dimension(
    spark: SparkSession, settings: Settings, source: str, dt: str, run_id: str | None = None
) -> IngestCounts:
    """Raw items or users delivered on day dt (a range of one day)."""
    return ingest_dimension_days(spark, settings, source, dt, dt, run_id)[0]


def _write_quarantine(
    spark: SparkSession, settings: Settings, rows: DataFrame, source: str, start: str, end: str
) -> None:
    """Replace this source's quarantine rows for [start, end], so a rerun does not double
    them."""
    if not tables.exists(spark, tables.BRONZE_QUARANTINE, settings):
        rows.write.format("delta").partitionBy("dt").save(tables.BRONZE_QUARANTINE.path(settings))
        return
    predicate = tables.day_range(start, end) & (F.col("source_table") == source)
    tables.replace_partition(rows, tables.BRONZE_QUARANTINE, settings, predicate)


def _quarantined_by_day(
    spark: SparkSession, settings: Settings, source: str, start: str, end: str
) -> dict[str, int]:
    if not tables.exists(spark, tables.BRONZE_QUARANTINE, settings):
        return {}
    q = tables.read(spark, tables.BRONZE_QUARANTINE, settings)
    return _counts_by_day(q.where(tables.day_range(start, end) & (F.col("source_table") == source)))


def _record_runs(
    spark: SparkSession, settings: Settings, counts: list[IngestCounts], start: str, end: str
) -> None:
    df = tables.BRONZE_INGEST_RUNS.frame(spark, [asdict(c) for c in counts])
    if not tables.exists(spark, tables.BRONZE_INGEST_RUNS, settings):
        df.write.format("delta").partitionBy("dt").save(tables.BRONZE_INGEST_RUNS.path(settings))
        return
    predicate = tables.day_range(start, end) & (F.col("source") == counts[0].source)
    tables.replace_partition(df, tables.BRONZE_INGEST_RUNS, settings, predicate)


def ingest_days(
    spark: SparkSession, settings: Settings, start: str, end: str
) -> list[IngestCounts]:
    """Users, items, then events of the days [start, end], each source in one pass; raises
    if any source of any day fails to reconcile."""
    run_id = uuid.uuid4().hex[:12]
    results = [
        *ingest_dimension_days(spark, settings, "users", start, end, run_id),
        *ingest_dimension_days(spark, settings, "items", start, end, run_id),
        *ingest_events_days(spark, settings, start, end, run_id),
    ]
    for counts in results:
        step_log(__name__, "ingest", counts.dt).info("%s", counts.line())
        if not counts.reconciles or counts.duplicate_rows < 0:
            raise ReconciliationError(f"{counts.dt} {counts.line()}")
    return results


def ingest_day(spark: SparkSession, settings: Settings, dt: str) -> list[IngestCounts]:
    """Users, items, then events of one day."""
    return ingest_days(spark, settings, dt, dt)
