"""The step registry: every daily step declared once, with the tables it reads and writes.

`choirflow_daily`'s task chain, `pipeline.run_day`, `pipeline.backfill`, the CLI and the
spark-submit jobs all follow `DAILY_STEPS` (tests compare the DAG with it). A step's name is
its Airflow task id; `after` names the steps it waits for. Each step is a function of one
day: `Step.run(dt, settings, done)`, where `done` holds the results of the steps before it
(promotion needs the day's challenger).

A `ranged` step computes a range of days in one pass: its run takes (start, end) and writes
every day's partitions in one commit, so a backfill chunk pays the step's fixed cost once;
its daily run is the range of one day (one code path). Other steps run day by day inside a
range. Steps only read what earlier steps (or their own earlier days) wrote, so a range may
run step by step, each over the whole range, and build what day-by-day runs build.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import days_between
from choirflow.lock import warehouse_lock
from choirflow.logs import step_log
from choirflow.spark import get_spark

Done = dict[str, Any]


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[SparkSession, Settings, str, Done], Any]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    after: tuple[str, ...] = ()
    # "data" steps build and check tables; "model" steps train, promote and report;
    # "airflow" steps exist only in the DAG (Asset events), in-process runs skip them.
    kind: str = "data"
    doc: str = ""
    ranged: bool = False  # run takes (start, end) instead of one day
    # Holds the warehouse alone (Airflow's warehouse pool; the writer lock outside it):
    # every step that rewrites tables others read. Training, reports, asset events and
    # monitoring only add their own rows and may run beside a writer.
    exclusive: bool = True

    def for_days(self, spark: SparkSession, settings: Settings, start: str, end: str,
                 done: Done) -> Any:  # fmt: skip
        """The step over [start, end]: in one pass when ranged, else day by day."""
        if self.ranged:
            return self.run(spark, settings, start, end, done)
        return {dt: self.run(spark, settings, dt, done) for dt in days_between(start, end)}

    def for_day(self, spark: SparkSession, settings: Settings, dt: str, done: Done) -> Any:
        if self.ranged:
            return self.run(spark, settings, dt, dt, done)
        return self.run(spark, settings, dt, done)


# ---- data steps -------------------------------------------------------------------------


def ingest(
    spark: SparkSession, settings: Settings, start: str, end: str, done: Done
) -> dict[str, int]:
    """Bronze rows per source over the range."""
    from choirflow.ingest.raw import ingest_days

    rows: dict[str, int] = {}
    for counts in ingest_days(spark, settings, start, end):
        rows[counts.source] = rows.get(counts.source, 0) + counts.bronze_rows
    return rows


def bronze_quality_gate(
    spark: SparkSession, settings: Settings, start: str, end: str, done: Done
) -> list:
    """Every day of the range checked (one read of the range), each day's results recorded."""
    from choirflow.quality.checks import bronze_gate

    return bronze_gate(spark, settings, start, end)  # QualityGateError on a hard failure


def correct_labels(
    spark: SparkSession, settings: Settings, start: str, end: str, done: Done
) -> dict[str, int]:
    """Rows whose labels changed, per past day the range's late events reached."""
    from choirflow.features.labels import correct_labels as relabel

    return relabel(spark, settings, start, end)


def behaviors(
    spark: SparkSession, settings: Settings, start: str, end: str, done: Done
) -> dict[str, int]:
    from choirflow.features.activity import (
        build_daily_activity,
        build_user_category_exposure,
        build_user_category_state,
    )
    from choirflow.features.samples import build_behaviors
    from choirflow.groups.inputs import build_user_category_daily

    out = {"silver.behaviors": build_behaviors(spark, settings, start, end)}
    build_daily_activity(spark, settings, start, end)
    out["silver.user_category_exposure"] = build_user_category_exposure(spark, settings, start, end)
    out["silver.user_category_state"] = build_user_category_state(spark, settings, start, end)
    out["silver.user_category_daily"] = build_user_category_daily(spark, settings, start, end)
    return out


def item_embeddings(
    spark: SparkSession, settings: Settings, start: str, end: str, done: Done
) -> dict:
    from choirflow.features.item_embeddings import build_item_embeddings

    embedded = build_item_embeddings(spark, settings, start, end)["embedded"]
    return {"silver.item_embeddings": embedded}


def user_features(
    spark: SparkSession, settings: Settings, start: str, end: str, done: Done
) -> dict:
    from choirflow.features.activity import build_user_features

    build_user_features(spark, settings, start, end)
    return {}


def user_groups(
    spark: SparkSession,
    settings: Settings,
    start: str,
    end: str,
    done: Done,
    refit: bool = False,
    relabel_all: bool = False,
) -> dict[str, Any]:
    """Profiles (LLM within the budget, else template), RQ-KMeans codes for changed
    profiles, group priors, then the groups gate. A range with no LLM calls to make (a
    backfill's default) runs in one pass; a day with a budget, or choirflow_groups_refresh's
    `refit` (a new codebook version) and `relabel_all` (every user's inputs rebuilt), runs
    day by day."""
    from choirflow.groups.assign import assign_groups, assign_groups_days
    from choirflow.groups.labelling import label_profiles, label_profiles_days
    from choirflow.quality.checks import groups_gate

    calls_budgeted = settings.groups.backend != "template" and settings.groups.llm_budget > 0
    if start != end and not (calls_budgeted or refit or relabel_all):
        runs = label_profiles_days(spark, settings, start, end)
        figures = assign_groups_days(spark, settings, start, end)
        groups_gate(spark, settings, start, end)  # QualityGateError on a hard failure
        return {
            "silver.user_profiles": sum(r["template_profiles"] for r in runs),
            "llm_calls": 0,
            "silver.user_groups": sum(f["users"] for f in figures.values()),
            "silver.group_priors": sum(f.get("priors", 0) for f in figures.values()),
        }
    out: dict[str, Any] = {}
    for dt in days_between(start, end):
        profiles = label_profiles(spark, settings, dt, everyone=relabel_all)
        groups = assign_groups(spark, settings, dt, refit=refit)
        groups_gate(spark, settings, dt)
        day = {
            "silver.user_profiles": profiles["users_considered"] - profiles["cache_hits"],
            "llm_calls": profiles["calls"],
            "silver.user_groups": groups["users"],
            "silver.group_priors": groups["priors"],
        }
        out = {k: out.get(k, 0) + v for k, v in day.items()}
    return out


def samples(
    spark: SparkSession, settings: Settings, start: str, end: str, done: Done
) -> dict[str, int]:
    """gold.samples of [start, end], then the sequence state at the end of each kept day
    (the next day's input)."""
    from choirflow.features.labels import known_through, record_status
    from choirflow.features.samples import build_samples
    from choirflow.features.sequences import write_states

    rows, states = build_samples(spark, settings, start, end)
    days = tables.day_range(start, end)
    tables.replace_partition(rows, tables.GOLD_SAMPLES, settings, days)
    write_states(settings, states, start, end)
    known = known_through(spark, settings, end)
    record_status(spark, settings, days_between(start, end), known, {}, add=False)
    spark.catalog.clearCache()  # the carried state and timelines build_samples cached
    count = tables.read(spark, tables.GOLD_SAMPLES, settings).where(days).count()
    return {"gold.samples": count}


def gold_quality_gate(
    spark: SparkSession, settings: Settings, start: str, end: str, done: Done
) -> list:
    from choirflow.quality.checks import gold_gate

    return gold_gate(spark, settings, start, end)  # QualityGateError on a hard failure


# ---- model steps ------------------------------------------------------------------------


def train_and_evaluate(spark: SparkSession, settings: Settings, dt: str, done: Done) -> dict:
    """Then scores earlier evaluations again once their days' labels have matured: a
    reading for the report, so its failure is logged and does not fail the day's model."""
    from choirflow.evaluate.challenger import train_and_evaluate as train_challenger
    from choirflow.evaluate.rescore import rescore_matured

    trained = train_challenger(spark, settings, dt)
    try:
        rescored: list | str = rescore_matured(spark, settings, dt)
    except Exception as error:  # noqa: BLE001 - reported, the challenger stands
        step_log(__name__, "rescore", dt).exception("earlier evaluations not re-scored")
        rescored = f"failed: {type(error).__name__}: {error}"
    return {**trained, "rescored": rescored}


def promote(spark: SparkSession, settings: Settings, dt: str, done: Done) -> dict:
    from choirflow.evaluate.champion import promote as promote_challenger

    return promote_challenger(spark, settings, dt, done.get("train_and_evaluate") or {})


def report(spark: SparkSession, settings: Settings, dt: str, done: Done) -> str:
    from choirflow.evaluate.report import build_report

    path = build_report(spark, settings, dt)
    step_log(__name__, "report", dt).info("%s", path)
    return str(path)


def publish_assets(spark: SparkSession, settings: Settings, dt: str, done: Done) -> dict:
    """Per warehouse table: its Delta version and row count (of partition dt where the table
    is partitioned by day): the extras of the Airflow Asset events choirflow_daily emits."""
    out: dict[str, dict[str, Any]] = {}
    for table in tables.ALL_TABLES:
        version = tables.version(spark, table, settings)
        if version is None:
            continue
        df = tables.read(spark, table, settings, version=version)
        by_day = "dt" in table.partition_by
        rows = (df.where(F.col("dt") == dt) if by_day else df).count()
        out[table.full_name] = {
            "delta_version": version,
            "rows": int(rows),
            "partition": f"dt={dt}" if by_day else "all",
            "path": table.path(settings),
        }
    return out


def monitor(spark: SparkSession, settings: Settings, dt: str, done: Done) -> list[dict]:
    """choirflow_quality: freshness, volume and drift across tables (quality.monitoring)."""
    from choirflow.quality.monitoring import monitor as run_monitor

    return run_monitor(spark, settings, dt).to_dict(orient="records")


# ---- the registry -----------------------------------------------------------------------

RAW = ("raw.events", "raw.items", "raw.users")
BRONZE_DIMENSIONS = ("bronze.item_history", "bronze.user_history")

DAILY_STEPS: tuple[Step, ...] = (
    Step(
        "ingest", ingest, reads=(*RAW, "bronze.events", "bronze.pending_events"),
        writes=("bronze.events", "bronze.items", "bronze.users", *BRONZE_DIMENSIONS,
                "bronze.quarantine", "bronze.pending_events", "bronze.ingest_runs"),
        ranged=True,
        doc="raw logs of the day -> typed, deduplicated bronze; rejects to quarantine; "
        "clicks and conversions ahead of their parent wait",
    ),
    Step(
        "bronze_quality_gate", bronze_quality_gate,
        reads=("bronze.events", "bronze.items", "bronze.users", "bronze.ingest_runs"),
        writes=("quality.results",), after=("ingest",), ranged=True,
        doc="GX checks of the day's bronze partitions; a hard failure stops the day",
    ),
    Step(
        "correct_labels", correct_labels,
        reads=("bronze.events", "bronze.ingest_runs", "gold.samples", "gold.label_status"),
        writes=("gold.samples", "gold.label_status"), after=("bronze_quality_gate",),
        ranged=True,
        doc="late clicks and conversions relabel the past days they reach (labels only)",
    ),
    Step(
        "behaviors", behaviors, reads=("bronze.events", *BRONZE_DIMENSIONS,
                                       "silver.user_category_state"),
        writes=("silver.behaviors", "silver.user_daily_activity", "silver.item_daily_stats",
                "silver.user_category_exposure", "silver.user_category_state",
                "silver.user_category_daily"),
        after=("correct_labels",), ranged=True,
        doc="clicks and conversions, per-day counts, the user x category sums",
    ),
    Step(
        "item_embeddings", item_embeddings,
        reads=("bronze.item_history", "silver.item_embeddings",
               "silver.item_embedding_projections"),
        writes=("silver.item_embeddings", "silver.item_embedding_projections"),
        after=("behaviors",), ranged=True, doc="frozen multimodal vectors of new or changed items",
    ),
    Step(
        "user_features", user_features,
        reads=("silver.user_daily_activity", "bronze.user_history"),
        writes=("silver.user_features",), after=("behaviors",), ranged=True,
        doc="attributes, 7/30/365-day activity and the activity bucket",
    ),
    Step(
        "user_groups", user_groups,
        reads=("silver.user_features", "silver.user_category_daily", "silver.behaviors",
               "bronze.user_history", "bronze.item_history", "silver.user_profiles",
               "silver.group_codebooks", "silver.user_groups"),
        writes=("silver.user_profiles", "silver.profile_runs", "silver.group_codebooks",
                "silver.user_groups", "silver.group_priors", "quality.results"),
        after=("item_embeddings", "user_features"), ranged=True,
        doc="LLM (budgeted) or template profiles, RQ-KMeans codes, group priors",
    ),
    Step(
        "samples", samples,
        reads=("bronze.events", "bronze.ingest_runs", *BRONZE_DIMENSIONS, "silver.behaviors",
               "silver.sequence_state", "silver.user_features", "silver.item_daily_stats",
               "silver.user_category_state", "silver.user_groups", "silver.group_priors"),
        writes=("gold.samples", "silver.sequence_state", "gold.label_status"),
        after=("user_groups",), ranged=True,
        doc="one point-in-time row per impression; the carried sequence state",
    ),
    Step(
        "gold_quality_gate", gold_quality_gate,
        reads=("gold.samples", "silver.item_embeddings"), writes=("quality.results",),
        after=("samples",), ranged=True,
        doc="GX checks of the day's samples and item vectors",
    ),
    Step(
        "train_and_evaluate", train_and_evaluate,
        reads=("gold.samples", "gold.label_status", "gold.metrics", "silver.item_embeddings"),
        writes=("gold.metrics", "gold.mature_metrics"), after=("gold_quality_gate",),
        kind="model", exclusive=False,
        doc="train on the days before, evaluate on the day, register a challenger; "
        "score earlier evaluations again on their matured labels",
    ),
    Step(
        "promote", promote, reads=("gold.samples", "silver.item_embeddings"),
        writes=("gold.promotions",), after=("train_and_evaluate",), kind="model",
        doc="champion against challenger on the same rows",
    ),
    Step(
        "report", report,
        reads=("gold.metrics", "gold.promotions", "bronze.ingest_runs", "quality.results",
               "quality.monitoring"),
        writes=(), after=("promote",), kind="model", exclusive=False,
        doc="the day's HTML report",
    ),
    Step(
        "publish_assets", publish_assets, reads=tuple(t.full_name for t in tables.ALL_TABLES),
        writes=(), after=("report",), kind="airflow", exclusive=False,
        doc="one Airflow Asset event per table with its Delta version and row count",
    ),
)  # fmt: skip

# choirflow_quality, after the daily run: monitoring, then the report again with its results.
QUALITY_STEPS: tuple[Step, ...] = (
    Step(
        "monitor", monitor, reads=tuple(t.full_name for t in tables.ALL_TABLES),
        writes=("quality.monitoring",), exclusive=False,
        doc="freshness, volume and PSI drift across tables",
    ),
    Step(
        "refresh_report", report, reads=("quality.monitoring",), writes=(),
        after=("monitor",), kind="model", exclusive=False,
        doc="the day's report with the monitoring results",
    ),
)  # fmt: skip

STEPS_BY_NAME = {step.name: step for step in (*DAILY_STEPS, *QUALITY_STEPS)}
# The feature steps (behaviours to samples), in order: pipeline.build_features.
FEATURE_STEPS = (
    "correct_labels", "behaviors", "item_embeddings", "user_features", "user_groups", "samples",
)  # fmt: skip


def step(name: str) -> Step:
    try:
        return STEPS_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown step {name!r}; choose from {list(STEPS_BY_NAME)}") from None


def timed_run(step_: Step, spark: SparkSession, settings: Settings, dt: str, done: Done) -> Any:
    """Run a step and log how long it took: `[<step> dt=<day>] done in 12.3s`."""
    t0 = time.perf_counter()
    result = step_.for_day(spark, settings, dt, done)
    step_log(__name__, step_.name, dt).info("done in %.1fs", time.perf_counter() - t0)
    return result


def run_step(name: str, dt: str, settings: Settings, done: Done | None = None) -> Any:
    """Run one registered step for day dt (the entry point of jobs and DAG tasks), holding
    the warehouse's writer lock if the step is exclusive."""
    step_ = step(name)
    guard = warehouse_lock(settings, f"step {name} {dt}") if step_.exclusive else nullcontext()
    with guard:
        return timed_run(step_, get_spark(settings), settings, dt, done or {})
