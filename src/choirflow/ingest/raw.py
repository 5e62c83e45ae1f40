"""Raw logs -> bronze tables, typed by the schemas/ contracts, with quarantine.

Every raw line ends in exactly one place: the bronze table, bronze.quarantine (with the raw
record, the rule it broke and the run), the count of duplicates, or bronze.pending_events (a
click or conversion waiting for its parent: ingest.pending), from which it later moves into
bronze or quarantine. Each day the run checks
`raw + released + expired = bronze + quarantined + duplicates + pending` and records it in
bronze.ingest_runs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import reduce

import pandas as pd
from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.contracts import Column as ContractColumn
from choirflow.contracts import Contract, load_contract
from choirflow.dates import day_offset, days_between
from choirflow.ingest import pending
from choirflow.ingest.judge import (
    MAX_LINE_BYTES,
    SPARK_TIME_FORMAT,
    WHOLE_LINE_RULES,
    contract_types,
    judge_series,
)
from choirflow.logs import step_log

# Far-past and future bounds for event times, relative to the partition's day.
MAX_EVENT_AGE_DAYS = 30
MAX_CLOCK_SKEW_MINUTES = 10
# A click finds its impression (a conversion its click) delivered the same day or in the
# `features.parent_lookback_days` before, or waits as long for it (ingest.pending). Copies of
# an event are found over all of bronze, whatever day they arrived on.
# Empty or whitespace only, Unicode spaces included (Java regex, UNICODE_CHARACTER_CLASS).
BLANK = r"(?U)^\s*$"
SPACE_OR_CONTROL = r"(?U)[\s\p{Cntrl}]"  # never inside an id
# The files of a day's folder that are read (nested folders included): JSON Lines, plain or
# compressed (Spark picks the codec by the extension).
READ_FORMATS = (".jsonl", ".ndjson", ".json")
READ_COMPRESSIONS = ("", ".gz", ".bz2")
TEMPORARY_SUFFIXES = (".tmp", ".temp", ".inprogress", ".partial", ".swp", "~")
DAY_FOLDER = re.compile(r"dt=(\d{4}-\d{2}-\d{2})")


@dataclass
class IngestCounts:
    source: str
    dt: str
    run_id: str
    raw_rows: int
    bronze_rows: int
    quarantined_rows: int
    duplicate_rows: int
    # Clicks and conversions that began waiting for their parent (ingest.pending) on the
    # day, were freed into bronze on it, or expired into quarantine on it.
    pending_rows: int = 0
    released_rows: int = 0
    expired_rows: int = 0
    files_read: list[str] = field(default_factory=list)
    files_skipped: list[str] = field(default_factory=list)

    @property
    def reconciles(self) -> bool:
        arrived = self.raw_rows + self.released_rows + self.expired_rows
        placed = self.bronze_rows + self.quarantined_rows + self.duplicate_rows
        return arrived == placed + self.pending_rows

    def line(self) -> str:
        mark = "ok" if self.reconciles else "MISMATCH"
        waits = (
            f"raw={self.raw_rows} + released={self.released_rows} + expired={self.expired_rows}"
            if self.released_rows or self.expired_rows
            else f"raw={self.raw_rows}"
        )
        return (
            f"{self.source}: {waits} = bronze={self.bronze_rows}"
            f" + quarantined={self.quarantined_rows} + duplicates={self.duplicate_rows}"
            f" + pending={self.pending_rows} ({mark})"
            f"; {len(self.files_read)} files read, {len(self.files_skipped)} skipped"
        )


class ReconciliationError(RuntimeError):
    pass


def raw_source_dir(settings: Settings, source: str) -> str:
    """The folder of one raw source (events, items, users), holding its day folders."""
    return f"{settings.raw_dir.rstrip('/')}/{source}"


def skip_reason(relative: str) -> str | None:
    """Why a file under a day's folder (its path relative to that folder) is not read, or
    None when it is. Nested folders are read; hidden and temporary files are another tool's
    (Spark's _SUCCESS, a writer's .tmp) and a file of another format is not a raw log."""
    parts = relative.split("/")
    if any(part.startswith((".", "_")) for part in parts):
        return "hidden"
    name = parts[-1]
    if name.endswith(TEMPORARY_SUFFIXES):
        return "temporary"
    if not name.endswith(tuple(f + c for f in READ_FORMATS for c in READ_COMPRESSIONS)):
        return "unknown extension"
    return None


@dataclass
class RawFiles:
    """The files of a source over a range of days: read or skipped (with why), by day, as
    paths relative to the source's folder; and the entries of that folder that are no day."""

    read: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)

    def paths(self, root: str) -> list[str]:
        """Each file read, as Spark is to be given it: glob characters escaped (Spark reads a
        path as a pattern, so `part[1].jsonl` would name another file)."""
        return [_literal(f"{root}/{rel}") for files in self.read.values() for rel in files]


def _literal(path: str) -> str:
    return re.sub(r"([\\\[\]{}*?])", r"\\\1", path)


def _file_system(spark: SparkSession, folder: str) -> tuple:
    path = spark._jvm.org.apache.hadoop.fs.Path(folder)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    return path, fs


def list_raw_files(
    spark: SparkSession, settings: Settings, source: str, start: str, end: str
) -> RawFiles:
    """Every file under the day folders of [start, end], through Hadoop's file system API
    (local or remote alike); a missing day folder is an empty day."""
    root, fs = _file_system(spark, raw_source_dir(settings, source))
    files = RawFiles()
    if not fs.exists(root):
        return files
    prefix = fs.makeQualified(root).toString().rstrip("/") + "/"
    for entry in fs.listStatus(root):
        name = entry.getPath().getName()
        hidden = name.startswith((".", "_"))  # another tool's: .DS_Store, _SUCCESS
        if not hidden and (not _is_day_folder(name) or not entry.isDirectory()):
            files.strays.append(f"{name} (not a dt=YYYY-MM-DD folder)")
    for dt in days_between(start, end):
        folder = root.suffix(f"/dt={dt}")
        if not fs.exists(folder) or not fs.getFileStatus(folder).isDirectory():
            continue  # a file named like a day folder is a stray, reported above
        found = fs.listFiles(folder, True)
        while found.hasNext():
            relative = found.next().getPath().toString().removeprefix(prefix)
            why = skip_reason(relative.split("/", 1)[1])
            if why is None:
                files.read.setdefault(dt, []).append(relative)
            else:
                files.skipped.setdefault(dt, []).append(f"{relative} ({why})")
    return files


def _is_day_folder(name: str) -> bool:
    match = DAY_FOLDER.fullmatch(name)
    if match is None:
        return False
    try:
        date.fromisoformat(match.group(1))
    except ValueError:
        return False
    return True


def _read_days(
    spark: SparkSession, settings: Settings, source: str, start: str, end: str
) -> tuple[DataFrame, RawFiles]:
    """Raw lines of every arrival day in [start, end] as text with their `dt`, in one scan,
    and the account of the files: which were read, which skipped and why."""
    files = list_raw_files(spark, settings, source, start, end)
    for line in files.strays:
        step_log(__name__, "ingest", start).warning("raw %s: %s", source, line)
    paths = files.paths(raw_source_dir(settings, source))
    if not paths:
        return spark.createDataFrame([], "value string, dt string"), files
    # Invalid UTF-8 is replaced, not dropped: the row still reaches a rule below.
    lines = spark.read.option("wholetext", "false").text(paths)
    # The day folder right under the source's folder, wherever the raw root is.
    folder = rf"/{re.escape(source)}/dt=(\d{{4}}-\d{{2}}-\d{{2}})/"
    day = F.regexp_extract(F.col("_metadata.file_path"), folder, 1)
    return lines.select("value", day.alias("dt")), files


def _file_lists(files: RawFiles, dt: str) -> dict[str, list[str]]:
    """The files read and skipped on one day; folders that are no day are reported with
    every day."""
    return {
        "files_read": files.read.get(dt, []),
        "files_skipped": files.skipped.get(dt, []) + files.strays,
    }


class RawFileError(RuntimeError):
    """A file the ingest should read cannot be read (a truncated archive, a lost block)."""


def _checked(frame: DataFrame, source: str) -> DataFrame:
    """frame materialised (the raw files are read here), with an unreadable file named."""
    try:
        return frame.localCheckpoint()
    except Exception as error:  # py4j's or pyspark's wrapper of Spark's FAILED_READ_FILE
        text = str(error)
        found = re.search(r"reading file (\S+?)\.?\s", text)
        if found is None:
            raise
        cause = re.search(r"Caused by: ([^\n]+)", text)
        why = cause.group(1) if cause else text.splitlines()[0]
        raise RawFileError(f"{source}: cannot read raw file {found.group(1)}: {why}") from error


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
    # A line over the size limit is refused here, before it reaches Python (Arrow's batches
    # have a size limit too).
    too_long = F.octet_length("value") > MAX_LINE_BYTES
    text = F.when(~too_long, F.expr("make_valid_utf8(value)"))
    judged = lines.select(
        "dt",
        F.col("value").alias("raw_record"),
        F.when(too_long, F.struct(F.array(F.lit("line_too_long")).alias("rules"),
                                  F.lit(None).cast("string").alias("canonical")))
        .otherwise(_judge(contract)(text)).alias("judged"),
    )  # fmt: skip
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


def _rejected(frame: DataFrame, reason: SparkColumn) -> DataFrame:
    """Rows refused after validation (orphans, conflicting copies) in the shape of `bad`."""
    return frame.select("dt", "raw_record", reason.alias("reason"), F.array(reason).alias("rules"))


def _counts_by_day(frame: DataFrame) -> dict[str, int]:
    return {r.dt: r["count"] for r in frame.groupBy("dt").count().collect()}


def event_content(contract: Contract) -> SparkColumn:
    """A digest of what an event says (every contract column but when it was received): two
    copies with the same id and digest are one event delivered twice; with another digest,
    a conflict."""
    said = [c for c in contract.column_names if c != "ingestion_time"]
    exact = {"timestampFormat": SPARK_TIME_FORMAT}  # to the microsecond, as the judge reads
    return F.sha2(F.to_json(F.struct(*said), exact), 256)


def _first_deliveries(occurrences: DataFrame) -> DataFrame:
    """Status of each (event_id, dt) of a chunk: "kept", "pending" (no parent yet: it waits),
    "duplicate" (bronze, a waiting row or an earlier day of the chunk holds the same content),
    "conflict" (it holds other content under the id), read per event id with bronze's and
    the waiting state's own copies (`prior`, from outside the chunk) first, then the chunk's
    in day order. An id stays taken for good once kept, and through `until` while it waits
    (after that it expired). Exactly what day-by-day runs decide: a copy is measured against
    what bronze kept or what waits, never against what was quarantined."""
    start = F.struct(
        F.lit(None).cast("string").alias("content"),
        F.lit(None).cast("string").alias("until"),
        F.array().cast("array<struct<dt:string,status:string>>").alias("out"),
    )

    def step(acc: SparkColumn, x: SparkColumn) -> SparkColumn:
        live = acc["content"].isNotNull() & (acc["until"].isNull() | (x["dt"] <= acc["until"]))
        status = (
            F.when(x["prior"], F.lit("prior"))
            .when(live & (x["content"] == acc["content"]), F.lit("duplicate"))
            .when(live, F.lit("conflict"))
            .when(x["orphan"], F.lit("pending"))
            .otherwise(F.lit("kept"))
        )
        takes = status.isin("prior", "kept", "pending")
        entry = F.struct(x["dt"].alias("dt"), status.alias("status"))
        return F.struct(
            F.when(takes, x["content"]).otherwise(acc["content"]).alias("content"),
            F.when(takes, x["until"]).otherwise(acc["until"]).alias("until"),
            F.concat(acc["out"], F.array(entry)).alias("out"),
        )

    bronze_first = F.when(F.col("prior"), 0).otherwise(1).alias("rank")
    per_id = occurrences.groupBy("event_id").agg(
        F.array_sort(
            F.collect_list(F.struct(bronze_first, "dt", "prior", "orphan", "content", "until"))
        ).alias("days")
    )
    decided = per_id.select("event_id", F.aggregate("days", start, step)["out"].alias("out"))
    return (
        decided.select("event_id", F.explode("out").alias("o"))
        .select("event_id", "o.dt", "o.status")
        .where(F.col("status") != "prior")
    )


def _bronze_copies(
    spark: SparkSession, settings: Settings, delivered: DataFrame, span: tuple[str, str],
    cached: list,
) -> DataFrame:  # fmt: skip
    """(event_id, event_type, dt, content) of bronze's kept copies, on any day outside the
    span, of the ids delivered in the chunk. Cheap by the table's layout: the event_id
    column of every day is read alone (Parquet reads a column, not rows), and whole rows
    only of the days that hold a match."""
    empty = spark.createDataFrame([], "event_id string, event_type string, dt string, "
                                  "content string")  # fmt: skip
    if not tables.exists(spark, tables.BRONZE_EVENTS, settings):
        return empty
    outside = tables.read(spark, tables.BRONZE_EVENTS, settings).where(~tables.day_range(*span))
    ids = delivered.select("event_id").distinct()
    hits = outside.select("event_id", "dt").join(ids, "event_id", "left_semi").localCheckpoint()
    cached.append(hits)
    days = [r.dt for r in hits.select("dt").distinct().collect()]
    if not days:
        return empty
    rows = outside.where(F.col("dt").isin(days)).join(hits, ["event_id", "dt"], "left_semi")
    content = event_content(load_contract("raw_events")).alias("content")
    return rows.select("event_id", "event_type", "dt", content)


@dataclass
class _Decided:
    """What a chunk's events became: rows for bronze.events (released ones in the partition
    of the day they were freed), (dt) of duplicates, rows for quarantine (conflicts, and the
    waiting rows whose window closed), (dt) of rows that began, were freed from or expired
    out of waiting, and the waiting state of each day."""

    kept: list[DataFrame] = field(default_factory=list)
    duplicates: list[DataFrame] = field(default_factory=list)
    rejected: list[DataFrame] = field(default_factory=list)
    pending: list[DataFrame] = field(default_factory=list)
    released: list[DataFrame] = field(default_factory=list)
    expired: list[DataFrame] = field(default_factory=list)
    states: list[DataFrame] = field(default_factory=list)

    def union(self, name: str) -> DataFrame:
        return reduce(DataFrame.unionByName, getattr(self, name))


_PARENT_KEYS = ["user_id", "item_id", "request_id"]


def _resolve_events(
    spark: SparkSession, settings: Settings, delivered: DataFrame, span: tuple[str, str],
    cached: list,
) -> _Decided:  # fmt: skip
    """The chunk's events decided, each delivery already unique per event id. Impressions,
    then clicks, then conversions: a click needs a kept impression of the same request and
    item, a conversion a kept click, delivered the same day or in the lookback before it, or
    else it waits (ingest.pending) for one to be kept within the window; a copy of an event
    bronze kept, on any day, or of one that waits, is a duplicate, or a conflicting_duplicate
    when it says otherwise."""
    start = span[0]
    contract = load_contract("raw_events")
    parents = spark.createDataFrame([], "event_id string, user_id string, item_id string, "
                                    "request_id string, event_type string, dt string")  # fmt: skip
    if tables.exists(spark, tables.BRONZE_EVENTS, settings):
        lo = day_offset(start, -settings.features.parent_lookback_days)
        parents = (
            tables.read(spark, tables.BRONZE_EVENTS, settings)
            .where((F.col("dt") >= lo) & (F.col("dt") < start))
            .select("event_id", *_PARENT_KEYS, "event_type", "dt")
        )
    copies = _bronze_copies(spark, settings, delivered, span, cached)
    waiting = pending.carried(spark, settings, start, contract.column_names)
    # Read once (a few rows): each event type's job starts from it.
    waiting = waiting.withColumn("_content", event_content(contract)).localCheckpoint()
    cached.append(waiting)
    decided = _Decided()
    for kind, parent in (("impression", None), ("click", "impression"), ("conversion", "click")):
        these = delivered.where(F.col("event_type") == kind)
        # Identity is per event type: a daily run and a range cannot agree on an id that
        # another type used on another day (the range decides type by type).
        earlier = (
            copies.where(F.col("event_type") == kind)
            .join(these.select("event_id"), "event_id", "left_semi")
            .select("event_id", "dt", "content", F.lit(None).cast("string").alias("until"))
        )
        kind_parents = None if parent is None else parents.where(F.col("event_type") == parent)
        kept = _decide_kind(kind, these, waiting.where(F.col("event_type") == kind), earlier,
                            kind_parents, span, decided, cached,
                            settings.features.parent_lookback_days)  # fmt: skip
        parents = parents.unionByName(kept.select("event_id", *_PARENT_KEYS, "event_type", "dt"))
    return decided


def _decide_kind(
    kind: str, these: DataFrame, waiting: DataFrame, earlier: DataFrame,
    parents: DataFrame | None, span: tuple[str, str], decided: _Decided, cached: list,
    window_days: int,
) -> DataFrame:  # fmt: skip
    """One event type's rows of the chunk decided into `decided`, in one Spark job (the
    chunk's rows and the rows carried in waiting, each with the day a parent freed it);
    returns those kept (the next type's parents)."""
    start, end = span
    columns = these.columns
    rows = these.withColumn("_carried", F.lit(False))
    if parents is None:  # impressions need no parent
        no_day = F.lit(None).cast("string")
        settled = rows.select("*", F.lit(False).alias("orphan"), no_day.alias("released_dt"),
                              no_day.alias("until"))  # fmt: skip
    else:  # what waits: the chunk's rows without a parent, and the rows carried in
        rows = rows.unionByName(waiting.select(*columns, F.lit(True).alias("_carried")))
        settled = pending.parent_days(rows, parents, _PARENT_KEYS, window_days, span)
    occurrences = settled.select(
        "event_id", "dt", F.col("_carried").alias("prior"), "orphan",
        F.col("_content").alias("content"), "until",
    ).unionByName(earlier.select(
        "event_id", "dt", F.lit(True).alias("prior"), F.lit(False).alias("orphan"), "content",
        "until",
    ))  # fmt: skip
    # The rows carried in have no status of their own (they are the chunk's priors).
    statuses = settled.join(_first_deliveries(occurrences), ["event_id", "dt"], "left")
    statuses = statuses.localCheckpoint()
    cached.append(statuses)
    kept = statuses.where(F.col("status") == "kept").select(*columns)
    decided.duplicates.append(statuses.where(F.col("status") == "duplicate").select("dt"))
    decided.rejected.append(_rejected(statuses.where(F.col("status") == "conflict"),
                                      F.lit("conflicting_duplicate")))  # fmt: skip
    if parents is not None:
        waits = statuses.where(F.col("_carried") | (F.col("status") == "pending"))
        freed, closed = pending.released(waits), pending.expired(waits, end)
        kept = kept.unionByName(freed.select(*columns))
        decided.pending.append(statuses.where(F.col("status") == "pending").select("dt"))
        decided.released.append(freed.select("dt"))
        decided.expired.append(closed.select("dt"))
        decided.rejected.append(_rejected(closed, F.lit(f"orphan_{kind}")))
        said = load_contract("raw_events").column_names
        decided.states.append(pending.states(waits, said, start, end))
    decided.kept.append(kept)
    return kept


def ingest_events_days(
    spark: SparkSession, settings: Settings, start: str, end: str, run_id: str | None = None
) -> list[IngestCounts]:
    """Raw events of the arrival days [start, end] -> those partitions of bronze.events, in
    one pass and one commit per table (replaced: reruns are safe). A daily run is a range of
    one day."""
    run_id = run_id or uuid.uuid4().hex[:12]
    contract = load_contract("raw_events")
    lines, files = _read_days(spark, settings, "events", start, end)
    # Checkpointed, not cached: later plans start from the rows, not from ~100 parse checks.
    checked = _checked(validate(lines, contract, True), "raw_events")
    good = checked.where(F.size("rules") == 0).select("typed.*", "raw_record", "dt")
    good = good.withColumn("_content", event_content(contract))
    bad = checked.where(F.size("rules") > 0)
    # The same event id twice in one delivery: the first ingested stays; a later copy is a
    # duplicate when it says the same, a conflicting_duplicate when it does not.
    delivery_order = Window.partitionBy("event_id", "dt").orderBy(
        "ingestion_time", "event_time", "_content", "raw_record"
    )
    good = (
        good.withColumn("_n", F.row_number().over(delivery_order))
        .withColumn("_same", F.col("_content") == F.first("_content").over(delivery_order))
        .localCheckpoint()
    )
    delivered = good.where("_n = 1").drop("_n", "_same")
    repeated = good.where("_n > 1")
    cached: list[DataFrame] = []  # the decisions of each event type, unpersisted at the end
    decided = _resolve_events(spark, settings, delivered, (start, end), cached)
    conflicts = _rejected(repeated.where(~F.col("_same")), F.lit("conflicting_duplicate"))
    bronze = decided.union("kept").select(
        *contract.column_names,
        F.current_timestamp().alias("ingested_at"),
        F.lit(run_id).alias("run_id"),
        "dt",
    )
    tables.replace_partition(bronze, tables.BRONZE_EVENTS, settings, tables.day_range(start, end))
    waiting = decided.union("states").withColumn("run_id", F.lit(run_id))
    tables.replace_partition(waiting, tables.BRONZE_PENDING_EVENTS, settings,
                             tables.day_range(start, end))  # fmt: skip
    bad = bad.select("dt", "raw_record", "reason", "rules").unionByName(decided.union("rejected"))
    bad = bad.unionByName(conflicts)
    _write_quarantine(spark, settings, _quarantine_rows(bad, "raw_events", run_id), "raw_events",
                      start, end)  # fmt: skip
    raw = _counts_by_day(checked)
    repeats = _counts_by_day(repeated.where("_same"))
    dups = _counts_by_day(decided.union("duplicates"))
    waits = [_counts_by_day(decided.union(n)) for n in ("pending", "released", "expired")]
    # Counted back from the tables as written, so the identity checked is a real one.
    written = tables.read(spark, tables.BRONZE_EVENTS, settings).where(tables.day_range(start, end))
    in_bronze = _counts_by_day(written)
    quarantined = _quarantined_by_day(spark, settings, "raw_events", start, end)
    counts = [
        IngestCounts("raw_events", dt, run_id, raw.get(dt, 0), in_bronze.get(dt, 0),
                     quarantined.get(dt, 0), repeats.get(dt, 0) + dups.get(dt, 0),
                     *(w.get(dt, 0) for w in waits), **_file_lists(files, dt))
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
    lines, files = _read_days(spark, settings, source, start, end)
    checked = _checked(validate(lines, contract, extra_checks=False), f"raw_{source}")
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
                     quarantined.get(dt, 0), delivered.get(dt, 0) - kept.get(dt, 0),
                     **_file_lists(files, dt))
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
    path = tables.BRONZE_INGEST_RUNS.path(settings)
    if not tables.exists(spark, tables.BRONZE_INGEST_RUNS, settings):
        df.write.format("delta").partitionBy("dt").save(path)
        return
    predicate = tables.day_range(start, end) & (F.col("source") == counts[0].source)
    # A warehouse written before the file lists were recorded gains their columns.
    tables.replace_partition(df, tables.BRONZE_INGEST_RUNS, settings, predicate, True)


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
        log = step_log(__name__, "ingest", counts.dt)
        log.info("%s", counts.line())
        for skipped in counts.files_skipped:
            log.warning("%s: not read: %s", counts.source, skipped)
        if not counts.reconciles or counts.duplicate_rows < 0:
            raise ReconciliationError(f"{counts.dt} {counts.line()}")
    return results


def ingest_day(spark: SparkSession, settings: Settings, dt: str) -> list[IngestCounts]:
    """Users, items, then events of one day."""
    return ingest_days(spark, settings, dt, dt)
