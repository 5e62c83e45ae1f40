"""Runs of the registered steps (choirflow.steps) in this process: a day, a range, a
backfill. Ordering only: what each step does lives with its layer."""

from __future__ import annotations

import time
from typing import Any

from choirflow.config import Settings, load_settings
from choirflow.dates import days_between
from choirflow.logs import step_log
from choirflow.spark import get_spark
from choirflow.steps import DAILY_STEPS, FEATURE_STEPS, Step, timed_run

# What a backfill rebuilds, by the names users give: each part brings its own gate, so a
# backfilled day is checked like a daily one.
BACKFILL_PARTS: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest", "bronze_quality_gate"),
    "features": ("behaviors", "item_embeddings", "user_features", "user_groups", "samples",
                 "gold_quality_gate"),
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
    for step in steps:
        t0 = time.perf_counter()
        done[step.name] = timed_run(step, spark, settings, dt, done)
        seconds[step.name] = round(time.perf_counter() - t0, 1)
    return done, seconds


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
    """Run the daily steps in date order, in this process (development, warm-up days).
    Days before `train_from` build tables only (no training, promotion or report)."""
    settings = settings or load_settings()
    out = []
    for dt in days_between(start, end):
        t0 = time.perf_counter()
        result = run_day(dt, settings, train=train_from is None or dt >= train_from)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        out.append(result)
    return out


def backfill(
    start: str,
    end: str,
    parts: tuple[str, ...] = ("ingest", "features"),
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Rebuild a date range in order, gates included. Each step replaces its partitions, so
    this is idempotent, and the carried states are rebuilt day by day from the first day."""
    unknown = set(parts) - set(BACKFILL_PARTS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from {BACKFILL_STEPS}")
    settings = settings or load_settings()
    wanted = {name for part in parts for name in BACKFILL_PARTS[part]}
    steps = tuple(s for s in DAILY_STEPS if s.name in wanted)
    out = []
    for dt in days_between(start, end):
        t0 = time.perf_counter()
        done, _ = run_steps(dt, settings, steps)
        result: dict[str, Any] = {"dt": dt, **done}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        step_log(__name__, "backfill", dt).info("done in %.1fs", result["seconds"])
        out.append(result)
    return out
