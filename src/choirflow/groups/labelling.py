"""The labelling job: profile inputs -> silver.user_profiles, within an LLM-call budget.

A profile is cached by (input fingerprint, prompt version, model): a rerun with unchanged
inputs makes no call. Users beyond the budget, and users whose call failed, get a template
profile written from the same inputs; the `source` column says which, and a failure is kept
(`llm_error`, `llm_failures`) so the next run tries again. Calls run on Spark executors, one
backend (one loaded model) per executor process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset, days_between
from choirflow.groups.backends import backend_for, ensure_gguf, model_id
from choirflow.groups.inputs import build_profile_inputs, profiles_as_of
from choirflow.groups.profile import PROMPT_VERSION, fingerprint, template_profile
from choirflow.logs import step_log
from choirflow.spark import map_batches

# The labelling output: silver.user_profiles' columns but its partition column.
PROFILE_SCHEMA_DDL = ", ".join(
    f"{f.name} {f.dataType.simpleString()}"
    for f in tables.SILVER_USER_PROFILES.schema
    if f.name != "dt"
)


def _label_partition(settings: Settings):
    """mapInPandas body: rows flagged `call` go to the LLM, every row gets a profile, written
    for the row's day `dt`."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            inputs = [json.loads(s) for s in batch["input_json"]]
            calls = batch["call"].to_numpy(dtype=bool)
            outcomes: dict[int, Any] = {}
            if calls.any():
                backend = backend_for(settings)
                picked = [i for i in range(len(batch)) if calls[i]]
                for i, outcome in zip(
                    picked, backend.label([inputs[i] for i in picked]), strict=True
                ):
                    outcomes[i] = outcome
            rows = []
            for i, row in enumerate(batch.itertuples(index=False)):
                outcome = outcomes.get(i)
                ok = outcome is not None and outcome.profile is not None
                profile = outcome.profile if ok else template_profile(inputs[i])
                failed = outcome is not None and not ok
                rows.append(
                    {
                        "user_id": row.user_id,
                        "input_fingerprint": row.input_fingerprint,
                        "input_json": row.input_json,
                        "prompt_version": PROMPT_VERSION,
                        "model": row.model,
                        "source": "llm" if ok else "template",
                        "profile_json": profile.model_dump_json(),
                        "profile_text": profile.text(),
                        "llm_fingerprint": row.input_fingerprint if ok else None,
                        "llm_error": outcome.error if failed else None,
                        "llm_failures": int(row.llm_failures) + (1 if failed else 0),
                        "completion_tokens": outcome.completion_tokens if outcome else 0,
                        "llm_seconds": float(outcome.seconds) if outcome else 0.0,
                        "updated_dt": row.dt,
                    }
                )
            yield pd.DataFrame(rows)

    return run


def _fingerprinted(inputs: DataFrame) -> DataFrame:
    @F.udf("string")
    def fp(input_json: str) -> str:
        return fingerprint(json.loads(input_json))

    return inputs.withColumn("input_fingerprint", fp("input_json"))


def label_profiles(
    spark: SparkSession, settings: Settings, dt: str, everyone: bool = False
) -> dict[str, Any]:
    """Write silver.user_profiles for users whose inputs changed (all users with `everyone`).

    Returns the run's accounting, also stored in silver.profile_runs[dt]."""
    start = time.perf_counter()
    cfg = settings.groups
    model = model_id(settings)
    inputs = _fingerprinted(build_profile_inputs(spark, settings, dt, everyone=everyone))
    if tables.exists(spark, tables.SILVER_USER_PROFILES, settings):
        previous = profiles_as_of(spark, settings, dt).select(
            "user_id",
            F.col("input_fingerprint").alias("prev_fingerprint"),
            F.col("llm_fingerprint").alias("prev_llm_fingerprint"),
            F.col("prompt_version").alias("prev_prompt_version"),
            F.col("model").alias("prev_model"),
            F.col("source").alias("prev_source"),
            "llm_failures",
        )
    else:
        previous = spark.createDataFrame(
            [],
            "user_id string, prev_fingerprint string, prev_llm_fingerprint string, "
            "prev_prompt_version string, prev_model string, prev_source string, llm_failures int",
        )
    joined = inputs.join(previous, "user_id", "left").withColumn(
        "llm_failures", F.coalesce("llm_failures", F.lit(0))
    )
    cached_llm = (
        (F.col("prev_source") == "llm")
        & (F.col("prev_llm_fingerprint") == F.col("input_fingerprint"))
        & (F.col("prev_prompt_version") == PROMPT_VERSION)
        & (F.col("prev_model") == model)
    )
    unchanged_template = (
        (F.col("prev_source") == "template")
        & (F.col("prev_fingerprint") == F.col("input_fingerprint"))
        & (F.col("prev_prompt_version") == PROMPT_VERSION)
    )
    # Materialised now: the MERGE below changes what these rows were computed from, and an
    # LLM call must never run twice because Spark recomputed a lost partition.
    classified = joined.withColumn(
        "state",
        F.when(cached_llm, "cache_hit")
        .when(unchanged_template, "template_current")
        .otherwise("new"),
    ).localCheckpoint(eager=True)
    counts = {r["state"]: r["count"] for r in classified.groupBy("state").count().collect()}
    # The budget goes to users with no LLM profile for their current inputs: fewest failures
    # first, then the most active (their profiles carry the most signal into the groups).
    wanting = classified.where(F.col("state") != "cache_hit")
    budget = cfg.llm_budget if cfg.backend != "template" else 0
    chosen = (
        wanting.orderBy(F.asc("llm_failures"), F.desc("activity_30d"), F.asc("user_id"))
        .limit(budget)
        .select("user_id", F.lit(True).alias("call"))
    )
    current_chosen = classified.where(F.col("state") == "template_current").join(
        chosen, "user_id", "left_semi"
    )
    work = (
        classified.where(F.col("state") == "new")
        .unionByName(current_chosen)
        .join(chosen, "user_id", "left")
        .withColumn("call", F.coalesce("call", F.lit(False)))
        .withColumn("model", F.when(F.col("call"), F.lit(model)).otherwise(F.lit("template")))
        .select("user_id", "dt", "input_fingerprint", "input_json", "model", "llm_failures",
                "call")
    )  # fmt: skip
    n_calls = work.where("call").count()
    if n_calls and cfg.backend == "llama_cpp":  # assemble the model once, before the executors
        ensure_gguf(settings.resolve(cfg.llama_model_path))
    partitions = max(1, min(n_calls, spark.sparkContext.defaultParallelism))
    labelled = (
        work.repartition(partitions, "user_id")
        .mapInPandas(_label_partition(settings), PROFILE_SCHEMA_DDL)
        .localCheckpoint(eager=True)
    )
    written = labelled.count()
    if written:
        # MERGE, not a partition replace: a rerun of dt writes only what changed since its
        # first run (cache hits are not rewritten) and keeps the rest of the day's rows.
        tables.merge_upsert(
            spark, labelled.withColumn("dt", F.lit(dt)), tables.SILVER_USER_PROFILES, settings
        )
    stats_row = labelled.agg(
        F.sum(F.when(F.col("model") != "template", 1).otherwise(0)).alias("calls"),
        F.sum(F.when(F.col("source") == "llm", 1).otherwise(0)).alias("llm_profiles"),
        F.sum(F.when(F.col("llm_error").isNotNull(), 1).otherwise(0)).alias("failures"),
        F.sum("completion_tokens").alias("completion_tokens"),
        F.sum("llm_seconds").alias("llm_seconds"),
    ).first()
    calls = int(stats_row["calls"] or 0)
    llm_seconds = float(stats_row["llm_seconds"] or 0.0)
    tokens = int(stats_row["completion_tokens"] or 0)
    stats = {
        "dt": dt,
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "users_considered": int(sum(counts.values())),
        "cache_hits": int(counts.get("cache_hit", 0)),
        "calls": calls,
        "llm_profiles": int(stats_row["llm_profiles"] or 0),
        "failures": int(stats_row["failures"] or 0),
        "template_profiles": int(written - (stats_row["llm_profiles"] or 0)),
        "completion_tokens": tokens,
        "tokens_per_second": round(tokens / llm_seconds, 2) if llm_seconds else 0.0,
        "users_per_second": round(calls / llm_seconds, 3) if llm_seconds else 0.0,
        "seconds": round(time.perf_counter() - start, 2),
    }  # fmt: skip
    tables.replace_partition(
        tables.SILVER_PROFILE_RUNS.frame(spark, [stats]),
        tables.SILVER_PROFILE_RUNS,
        settings,
        tables.partition(dt),
    )
    shown = ("users_considered", "cache_hits", "calls", "failures", "template_profiles")
    step_log(__name__, "profiles", dt).info(" ".join(f"{k}={stats[k]}" for k in shown))
    return stats


def _stored_entries(spark: SparkSession, settings: Settings, start: str, end: str):
    """The profiles a daily run of the range could meet (kind 0): each user's newest
    before the range and every one written in it (by an earlier run); None before any."""
    if not tables.exists(spark, tables.SILVER_USER_PROFILES, settings):
        return None
    return (
        tables.read(spark, tables.SILVER_USER_PROFILES, settings)
        .where(tables.day_range(start, end))
        .unionByName(profiles_as_of(spark, settings, day_offset(start, -1)))
        .select(
            "user_id", "dt", F.lit(0).alias("kind"), "input_fingerprint",
            "source", "llm_fingerprint", "prompt_version", "model", "llm_failures",
        )
    )  # fmt: skip


def _profile_chain(spark: SparkSession, settings: Settings, inputs: DataFrame, start: str,
                   end: str) -> DataFrame:  # fmt: skip
    """Each target (user, day) of the range beside what the daily run would have found in
    silver.user_profiles on that day, with `written` (a new template profile) and
    `cache_hit` (an LLM profile for these inputs stands).

    Without LLM calls a day's decision depends only on the entry just before it, per user:
    a stored profile (written before the range, or in it by an earlier run: kept or not by
    the daily cache rule), or the target of an earlier day (which either wrote a profile of
    its fingerprint or kept one that matched it): no day-by-day loop is needed."""
    model = model_id(settings)
    stored = _stored_entries(spark, settings, start, end)
    targets = inputs.select(
        "user_id", "dt", F.lit(1).alias("kind"), "input_fingerprint",
        *[F.lit(None).cast(t).alias(c) for c, t in (("source", "string"), (
            "llm_fingerprint", "string"), ("prompt_version", "string"), ("model", "string"),
            ("llm_failures", "int"))],
    )  # fmt: skip
    entries = targets if stored is None else targets.unionByName(stored)
    order = Window.partitionBy("user_id").orderBy("dt", "kind")
    seen = ("kind", "input_fingerprint", "source", "llm_fingerprint", "prompt_version", "model")
    before = {c: F.lag(c).over(order) for c in seen}
    fp = F.col("input_fingerprint")
    kept_stored = (
        (before["source"] == "llm") & (before["llm_fingerprint"] == fp)
        & (before["prompt_version"] == PROMPT_VERSION) & (before["model"] == model)
    ) | (
        (before["source"] == "template") & (before["input_fingerprint"] == fp)
        & (before["prompt_version"] == PROMPT_VERSION)
    )  # fmt: skip
    written = (
        F.when(before["kind"].isNull(), True)
        .when(before["kind"] == 1, before["input_fingerprint"] != fp)
        .otherwise(~F.coalesce(kept_stored, F.lit(False)))
    )
    segment = F.sum(1 - F.col("kind")).over(order.rowsBetween(Window.unboundedPreceding, 0))
    chained = entries.withColumn("written", written).withColumn("_segment", segment)
    in_segment = Window.partitionBy("user_id", "_segment").orderBy("dt", "kind")
    stored_first = in_segment.rowsBetween(Window.unboundedPreceding, 0)
    earlier = in_segment.rowsBetween(Window.unboundedPreceding, -1)
    writes_before = F.sum(F.when((F.col("kind") == 1) & F.col("written"), 1).otherwise(0))
    return (
        chained.withColumn("_from_llm", F.first("source").over(stored_first) == "llm")
        .withColumn("_failures", F.first("llm_failures").over(stored_first))
        .withColumn("_writes_before", F.coalesce(writes_before.over(earlier), F.lit(0)))
        .where(F.col("kind") == 1)
        .select(
            "user_id", "dt", "written",
            (~F.col("written") & F.coalesce(F.col("_from_llm"), F.lit(False))
             & (F.col("_writes_before") == 0)).alias("cache_hit"),
            F.coalesce(F.col("_failures"), F.lit(0)).alias("llm_failures"),
        )
    )  # fmt: skip


def label_profiles_days(
    spark: SparkSession, settings: Settings, start: str, end: str
) -> list[dict[str, Any]]:
    """label_profiles for every day of [start, end] in one pass, with no LLM call (a
    backfill's default): each day keeps the profiles that stand for its inputs (an LLM
    profile included) and writes template profiles for the rest, as the daily run with no
    budget does. Returns each day's accounting, also stored in silver.profile_runs."""
    t0 = time.perf_counter()
    model = model_id(settings)
    inputs = _fingerprinted(build_profile_inputs(spark, settings, start, end)).localCheckpoint(
        eager=True
    )
    chain = _profile_chain(spark, settings, inputs, start, end)
    decided = inputs.join(chain, ["user_id", "dt"]).localCheckpoint(eager=True)
    work = decided.where("written").select(
        "user_id", "dt", "input_fingerprint", "input_json",
        F.lit("template").alias("model"), "llm_failures", F.lit(False).alias("call"),
    )  # fmt: skip
    n_written = work.count()
    if n_written:
        labelled = map_batches(work, _label_partition(settings), PROFILE_SCHEMA_DDL, n_written,
                               settings)  # fmt: skip
        tables.merge_upsert(
            spark, labelled.withColumn("dt", F.col("updated_dt")), tables.SILVER_USER_PROFILES,
            settings,
        )  # fmt: skip
    counts = {
        r["dt"]: r
        for r in decided.groupBy("dt")
        .agg(
            F.count(F.lit(1)).alias("considered"),
            F.sum(F.col("cache_hit").cast("long")).alias("hits"),
            F.sum(F.col("written").cast("long")).alias("written"),
        )
        .collect()
    }
    days = days_between(start, end)
    seconds = round((time.perf_counter() - t0) / len(days), 2)
    runs = []
    for dt in days:
        row = counts.get(dt)
        runs.append({
            "dt": dt, "model": model, "prompt_version": PROMPT_VERSION,
            "users_considered": int(row["considered"]) if row else 0,
            "cache_hits": int(row["hits"]) if row else 0, "calls": 0, "llm_profiles": 0,
            "failures": 0, "template_profiles": int(row["written"]) if row else 0,
            "completion_tokens": 0, "tokens_per_second": 0.0, "users_per_second": 0.0,
            "seconds": seconds,
        })  # fmt: skip
    tables.replace_partition(
        tables.SILVER_PROFILE_RUNS.frame(spark, runs), tables.SILVER_PROFILE_RUNS, settings,
        tables.day_range(start, end),
    )  # fmt: skip
    shown = ("users_considered", "cache_hits", "template_profiles")
    step_log(__name__, "profiles", f"{start}..{end}").info(
        " ".join(f"{k}={sum(r[k] for r in runs)}" for k in shown)
    )
    return runs
