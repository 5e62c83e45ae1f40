"""Runs of the registered steps (choirflow.steps) in this process: a day, a range, a
backfill. Ordering only: what each step does lives with its layer.

A range of days is cut into chunks of `backfill.chunk_days`; within a chunk each step runs
over the whole chunk before the next step starts (ranged steps in one pass, the others day
by day), which builds the same tables as running the days one after another, because no
step reads what a later step writes."""

from __future__ import annotations

import time
from typing import Any

from tqdm.auto import tqdm

from choirflow.config import Settings, load_settings
from choirflow.dates import chunks, days_between
from choirflow.lock import warehouse_lock
from choirflow.logs import step_log
from choirflow.spark import get_spark
from choirflow.steps import DAILY_STEPS, FEATURE_STEPS, Step, timed_run

# What a backfill rebuilds, by the names users give: each part brings its own gate, so a
# backfilled day is checked like a daily one.
BACKFILL_PARTS: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest", "bronze_quality_gate"),
    "features": ("correct_labels", "behaviors", "item_embeddings", "user_features",
                 "user_groups", "samples", "gold_quality_gate"),
    "train": ("train_and_evaluate",),
}  # fmt: skip
BACKFILL_STEPS = tuple(BACKFILL_PARTS)


def run_steps(
    dt: str, settings: Settings, steps: tuple[Step, ...], done: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run `steps` for day dt in registry order; returns each step's result and seconds."""
    spark = get_spark(settings)
    done = dict(done or {})
    seconds: dict[str, float] = {}
    with warehouse_lock(settings, f"day {dt}"):
        for step in steps:
            t0 = time.perf_counter()
            done[step.name] = timed_run(step, spark, settings, dt, done)
            seconds[step.name] = round(time.perf_counter() - t0, 1)
    return done, seconds


def run_chunks(
    start: str, end: str, settings: Settings, steps: tuple[Step, ...]
) -> list[dict[str, Any]]:
    """`steps` over [start, end], chunk by chunk; one result per chunk with each step's
    result and seconds. A step that raises stops the run: earlier chunks stay committed."""
    with warehouse_lock(settings, f"range {start}..{end}"):
        return _run_chunks(start, end, settings, steps)


def _run_chunks(
    start: str, end: str, settings: Settings, steps: tuple[Step, ...]
) -> list[dict[str, Any]]:
    spark = get_spark(settings)
    out = []
    parts = chunks(start, end, settings.backfill.chunk_days)
    bar = tqdm(total=len(parts) * len(steps), unit="step", desc=f"{start}..{end}")
    for first, last in parts:
        done: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        for step in steps:
            bar.set_description(f"{first}..{last} {step.name}")
            t1 = time.perf_counter()
            done[step.name] = step.for_days(spark, settings, first, last, done)
            seconds[step.name] = round(time.perf_counter() - t1, 1)
            step_log(__name__, step.name, f"{first}..{last}").info(
                "done in %.1fs", seconds[step.name]
            )
            bar.update()
        total = round(time.perf_counter() - t0, 1)
        events = _rows_of(done.get("ingest"), "raw_events")
        if events:  # bronze events kept per second of the chunk
            bar.set_postfix(events_per_s=f"{events / max(total, 1e-9):,.0f}")
        step_log(__name__, "chunk", f"{first}..{last}").info(
            "%s (%.1fs)", " ".join(f"{n}={s}s" for n, s in seconds.items()), total
        )
        out.append({"start": first, "end": last, **done, "step_seconds": seconds,
                    "seconds": total})  # fmt: skip
    bar.close()
    return out


def _rows_of(result: Any, table: str) -> int:
    """Rows a step reported for `table` (ranged steps report the chunk's)."""
    return int(result.get(table, 0)) if isinstance(result, dict) else 0


def build_features(
    dt: str, settings: Settings | None = None, steps: tuple[str, ...] = FEATURE_STEPS
) -> dict[str, Any]:
    """The feature steps of one day (behaviours to samples, no gates), in registry order;
    `steps` picks a subset."""
    unknown = set(steps) - set(FEATURE_STEPS)
    if unknown:
        raise ValueError(f"unknown feature steps {sorted(unknown)}; choose from {FEATURE_STEPS}")
    settings = settings or load_settings()
    done, _ = run_steps(dt, settings, tuple(s for s in DAILY_STEPS if s.name in steps))
    return done


def run_day(dt: str, settings: Settings | None = None, train: bool = True) -> dict[str, Any]:
    """Every daily step of one day in this process; `train=False` stops after the gold gate
    (a warm-up day whose model nobody would look at)."""
    settings = settings or load_settings()
    kinds = ("data", "model") if train else ("data",)
    steps = tuple(s for s in DAILY_STEPS if s.kind in kinds)
    done, seconds = run_steps(dt, settings, steps)
    step_log(__name__, "day", dt).info(" ".join(f"{name}={s}s" for name, s in seconds.items()))
    return {"dt": dt, **done, "step_seconds": seconds}


def run_range(
    start: str, end: str, settings: Settings | None = None, train_from: str | None = None
) -> list[dict[str, Any]]:
    """The daily steps over [start, end] in this process (development, warm-up days). Days
    before `train_from` only build and check tables, in chunks (run_chunks); the days from
    `train_from` on also train, promote and report, one day at a time."""
    settings = settings or load_settings()
    days = days_between(start, end)
    warm_up = [d for d in days if train_from is not None and d < train_from]
    out: list[dict[str, Any]] = []
    with warehouse_lock(settings, f"range {start}..{end}"):  # held between the days too
        if warm_up:
            data_steps = tuple(s for s in DAILY_STEPS if s.kind == "data")
            out += run_chunks(warm_up[0], warm_up[-1], settings, data_steps)
        for dt in days[len(warm_up) :]:
            t0 = time.perf_counter()
            result = run_day(dt, settings)
            result["seconds"] = round(time.perf_counter() - t0, 1)
            out.append(result)
    return out


def backfill(
    start: str,
    end: str,
    parts: tuple[str, ...] = ("ingest", "features"),
    settings: Settings | None = None,
    llm_budget: int = 0,
) -> list[dict[str, Any]]:
    """Rebuild a date range, gates included, in chunks (run_chunks). Each step replaces the
    partitions of its days, so this is idempotent, and the carried states are rebuilt from
    the state before the first day.

    Past days call no LLM unless `llm_budget` (calls per day) asks: each day keeps the
    profiles that stand for its inputs and gets template profiles for the rest (their
    `source` says so), and without calls the groups step runs each chunk in one pass."""
    unknown = set(parts) - set(BACKFILL_PARTS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from {BACKFILL_STEPS}")
    settings = settings or load_settings()
    groups = settings.groups.model_copy(update={"llm_budget": llm_budget})
    settings = settings.model_copy(update={"groups": groups})
    wanted = {name for part in parts for name in BACKFILL_PARTS[part]}
    steps = tuple(s for s in DAILY_STEPS if s.name in wanted)
    return run_chunks(start, end, settings, steps)
