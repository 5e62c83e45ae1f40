"""Feature pipeline benchmark: samples per second, history-length cost, peak memory.

Method. One synthetic world (fixed users, items and daily volume) is generated with
7 + 1 and 60 + 1 days. The history days' silver tables (behaviours, daily activity, item
stats, user x category exposure, the carried sequence and user x category states, user
features) are written in bulk from the world's own events; then the last day runs for real:
ingest of its raw JSON lines, then every feature step (behaviours, daily activity, exposure
and its state, user features, item embeddings for new items, samples + sequence state).
The ratio of the two last-day times is the history cost; the goal is at most 1.3.
The throughput figure is impressions per second of the sample-building step alone
(`build_samples`: labels, PIT sequences from the carried state, joins, write), on local[2].

    .venv/bin/python benchmarks/features.py [--users 20000 --items 4000 --sessions 0.35]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "features.json"


class PeakMemory:
    """Peak resident memory of this process and its children (the Spark JVM), sampled."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                rss = me.memory_info().rss + sum(
                    c.memory_info().rss for c in me.children(recursive=True)
                )
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def seed_history(spark, settings, world, history_days: list[str]) -> None:
    """Write the history days' silver tables in bulk from the world's events."""
    import pandas as pd
    from pyspark.sql import functions as F

    from choirflow import tables
    from choirflow.features.activity import build_user_category_state, build_user_features
    from choirflow.features.sequences import state_from_clicks
    from choirflow.ingest.raw import ingest_dimension

    ev = world.events[world.events["dt"].isin(history_days)].copy()
    items = world.items[["item_id", "category_path"]]
    for day in history_days[:1]:
        ingest_dimension(spark, settings, "users", day)
    for day in history_days:
        ingest_dimension(spark, settings, "items", day)
    beh = ev[ev["event_type"] != "impression"].merge(items, on="item_id", how="left")
    beh = pd.DataFrame(
        {
            "event_id": beh["event_id"],
            "user_id": beh["user_id"],
            "item_id": beh["item_id"],
            "category": beh["category_path"].fillna("unknown"),
            "behavior_type": beh["event_type"],
            "request_id": beh["request_id"],
            "event_time": beh["event_time"].dt.tz_localize(None),
            "ingestion_time": beh["ingestion_time"].dt.tz_localize(None),
            "dt": beh["dt"],
        }
    )
    behaviors = spark.createDataFrame(beh)
    behaviors.write.format("delta").partitionBy("dt").mode("overwrite").save(
        tables.SILVER_BEHAVIORS.path(settings)
    )
    for key, table in (
        ("user_id", tables.SILVER_USER_DAILY),
        ("item_id", tables.SILVER_ITEM_DAILY),
    ):
        daily = (
            ev.assign(
                impressions=(ev.event_type == "impression").astype("int64"),
                clicks=(ev.event_type == "click").astype("int64"),
                conversions=(ev.event_type == "conversion").astype("int64"),
            )
            .groupby([key, "dt"], as_index=False)[["impressions", "clicks", "conversions"]]
            .sum()
        )
        spark.createDataFrame(daily).write.format("delta").partitionBy("dt").mode("overwrite").save(
            table.path(settings)
        )
    shown = ev[ev["event_type"] != "conversion"].merge(items, on="item_id", how="left")
    exposure = (
        shown.assign(
            top_category=shown["category_path"].str.split("/").str[0].fillna("unknown"),
            impressions=(shown.event_type == "impression").astype("int64"),
            clicks=(shown.event_type == "click").astype("int64"),
        )
        .groupby(["user_id", "top_category", "dt"], as_index=False)[["impressions", "clicks"]]
        .sum()
    )
    spark.createDataFrame(exposure).write.format("delta").partitionBy("dt").mode("overwrite").save(
        tables.SILVER_USER_CATEGORY_EXPOSURE.path(settings)
    )
    last = history_days[-1]
    build_user_category_state(spark, settings, last)  # from scratch: the state daily runs carry
    clicks = behaviors.where(F.col("behavior_type") == "click")
    state = state_from_clicks(clicks, settings.features.max_seq_len).withColumn("dt", F.lit(last))
    state.write.format("delta").partitionBy("dt").mode("overwrite").save(
        tables.SILVER_SEQUENCE_STATE.path(settings)
    )
    build_user_features(spark, settings, last)


def run_case(history: int, args) -> dict:
    from choirflow.config import load_settings
    from choirflow.features.activity import (
        build_daily_activity,
        build_user_category_exposure,
        build_user_category_state,
        build_user_features,
    )
    from choirflow.features.item_embeddings import build_item_embeddings
    from choirflow.features.samples import build_behaviors
    from choirflow.ingest.raw import ingest_events
    from choirflow.spark import get_spark
    from choirflow.steps import samples as samples_step
    from choirflow.synth.world import WorldConfig, generate_world, write_world

    work = Path(tempfile.mkdtemp(prefix=f"choirflow-bench-{history}-"))
    os.environ["CHOIRFLOW__PATHS__RAW"] = str(work / "raw")
    os.environ["CHOIRFLOW__PATHS__WAREHOUSE"] = str(work / "warehouse")
    settings = load_settings()
    spark = get_spark(settings)
    cfg = WorldConfig(
        users=args.users,
        items=args.items,
        days=history + 1,
        sessions_median=args.sessions,
        new_item_share=0.0,
        late_event_rate=0.0,
        seed=11,
    )
    t0 = time.perf_counter()
    world = generate_world(cfg)
    days = [str(cfg.start + timedelta(days=d)) for d in range(cfg.days)]
    write_world(world, work, event_days={days[-1]})
    print(
        f"[bench] history={history}: world generated in {time.perf_counter() - t0:.0f}s", flush=True
    )
    t0 = time.perf_counter()
    seed_history(spark, settings, world, days[:-1])
    print(f"[bench] history={history}: seeded in {time.perf_counter() - t0:.0f}s", flush=True)
    # Embed the catalogue during seeding: the measured day embeds only new items (none here).
    build_item_embeddings(spark, settings, days[-2])
    del world  # the measured day reads only the warehouse and its raw files
    gc.collect()

    day = days[-1]
    timings = {}
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        ingest_events(spark, settings, day)
        timings["ingest_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        build_behaviors(spark, settings, day)
        build_daily_activity(spark, settings, day)
        build_user_category_exposure(spark, settings, day)
        build_user_category_state(spark, settings, day)
        build_user_features(spark, settings, day)
        build_item_embeddings(spark, settings, day)
        timings["silver_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        rows = samples_step(spark, settings, day, day, {})["gold.samples"]
        timings["samples_s"] = time.perf_counter() - t2
        timings["day_total_s"] = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    return {
        "history_days": history,
        "impressions_on_day": rows,
        **{k: round(v, 2) for k, v in timings.items()},
        "impressions_per_s": round(rows / timings["samples_s"]),
        "peak_rss_gib": round(memory.peak / 2**30, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=12000)
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--sessions", type=float, default=0.35, help="median sessions/user/day")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per case (min kept)")
    parser.add_argument("--output", default=str(RESULTS), help="results JSON ('' to skip)")
    parser.add_argument("--histories", default="7,60", help="history lengths to compare")
    args = parser.parse_args()
    os.environ.setdefault("CHOIRFLOW__SPARK__MASTER", "local[2]")
    os.environ.setdefault("CHOIRFLOW__SPARK__SHUFFLE_PARTITIONS", "4")
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.path.insert(0, str(ROOT / "src"))
    cases = {}
    histories = [int(h) for h in args.histories.split(",")]
    for history in histories:
        runs = [run_case(history, args) for _ in range(args.repeats)]
        cases[history] = min(runs, key=lambda r: r["day_total_s"])
        print(json.dumps(cases[history]), flush=True)
    result = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "spark_master": os.environ["CHOIRFLOW__SPARK__MASTER"],
        "command": "python benchmarks/features.py " + " ".join(sys.argv[1:]),
        "impressions_per_s": cases[7]["impressions_per_s"],
        "history_cost_ratio_60_vs_7": (
            round(cases[60]["day_total_s"] / cases[7]["day_total_s"], 3)
            if {7, 60} <= set(cases)
            else None
        ),
        "peak_rss_gib": max(c["peak_rss_gib"] for c in cases.values()),
        "cases": cases,
    }
    if args.output:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
