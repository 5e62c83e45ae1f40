"""Event identity over all of bronze: what the look-up of copies costs as history grows.

Method. A bronze.events table of `--history` days of `--per-day` impressions each is
written straight with Spark (ids `h<day>-<n>`), then one new arrival day of `--new`
impression lines is ingested for real: new events, plus `--replays` copies of events from
random days of the last 28 (older events are refused as too old whatever their id), the
same content with a new ingestion time (duplicates), and a tenth as many copies that say
something else (conflicting duplicates). The day is ingested twice and the second run
timed. Checked: no copy is in bronze twice. The peer is the ingest before this change
(54f17c1: copies looked up in the 3 days before only), run on the same warehouses
(`PYTHONPATH=<54f17c1 checkout>/src`, `--output` elsewhere): its time, and how many copies
it let into bronze again.

    .venv/bin/python benchmarks/dedup_lookup.py --root /tmp/dedup-bench [--history 7,90]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "dedup_lookup.json"
NEW_DAY = "2027-09-01"


def _line(event_id: str, day: str, n: int, device: str, arrival: str) -> str:
    return json.dumps({
        "event_id": event_id, "event_type": "impression", "user_id": f"u{n % 9000}",
        "item_id": f"i{n % 800}", "request_id": f"r-{event_id}", "position": n % 20,
        "event_time": f"{day}T{n % 24:02d}:00:00.000Z",
        "ingestion_time": f"{arrival}T{n % 24:02d}:00:01.000Z", "device": device,
        "surface": "home",
    })  # fmt: skip


def _history_days(history: int) -> list[str]:
    from datetime import date, timedelta

    last = date.fromisoformat(NEW_DAY)
    return [(last - timedelta(days=history - i)).isoformat() for i in range(history)]


def _build(spark, settings, history: int, per_day: int) -> None:
    """bronze.events with `history` days before NEW_DAY, written straight."""
    from pyspark.sql import functions as F

    from choirflow import tables

    days = _history_days(history)
    n = F.col("id") % per_day
    day = F.element_at(F.array(*map(F.lit, days)), (F.col("id") / per_day).cast("int") + 1)
    hour = F.lpad((n % 24).cast("string"), 2, "0")
    rows = spark.range(history * per_day).select(
        F.concat(F.lit("h"), day, F.lit("-"), n.cast("string")).alias("event_id"),
        F.lit("impression").alias("event_type"),
        F.concat(F.lit("u"), (n % 9000).cast("string")).alias("user_id"),
        F.concat(F.lit("i"), (n % 800).cast("string")).alias("item_id"),
        F.concat(F.lit("r-h"), day, F.lit("-"), n.cast("string")).alias("request_id"),
        (n % 20).cast("int").alias("position"),
        F.to_timestamp(F.concat(day, F.lit("T"), hour, F.lit(":00:00Z"))).alias("event_time"),
        F.to_timestamp(F.concat(day, F.lit("T"), hour, F.lit(":00:01Z"))).alias("ingestion_time"),
        F.lit("web").alias("device"),
        F.lit("home").alias("surface"),
        F.current_timestamp().alias("ingested_at"),
        F.lit("bench").alias("run_id"),
        day.alias("dt"),
    )
    rows.write.format("delta").partitionBy("dt").mode("overwrite").save(
        tables.BRONZE_EVENTS.path(settings)
    )


def _new_day_lines(history: int, per_day: int, new: int, replays: int) -> tuple[list, set]:
    rng = random.Random(5)
    days = _history_days(history)[-28:]  # older copies are refused as too old anyway
    lines = [_line(f"new-{i}", NEW_DAY, i, "web", NEW_DAY) for i in range(new)]
    copied = set()
    for i in range(replays + replays // 10):
        day, n = rng.choice(days), rng.randrange(per_day)
        event_id = f"h{day}-{n}"
        if event_id in copied:
            continue
        copied.add(event_id)
        device = "web" if i < replays else "ios"  # the last tenth says something else
        lines.append(_line(event_id, day, n, device, NEW_DAY))
    return lines, copied


def _measure(root: Path, history: int, args) -> dict:
    os.environ.update({
        "CHOIRFLOW__PATHS__RAW": str(root / f"raw_{history}"),
        "CHOIRFLOW__PATHS__WAREHOUSE": str(root / f"warehouse_{history}"),
    })  # fmt: skip
    from pyspark.sql import functions as F

    from choirflow import tables
    from choirflow.config import load_settings
    from choirflow.ingest.raw import ingest_events
    from choirflow.spark import get_spark

    settings = load_settings()
    spark = get_spark(settings)
    if not (root / f"warehouse_{history}").exists():
        _build(spark, settings, history, args.per_day)
    lines, copied = _new_day_lines(history, args.per_day, args.new, args.replays)
    folder = root / f"raw_{history}" / "events" / f"dt={NEW_DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-00000.jsonl").write_text("\n".join(lines) + "\n")
    ingest_events(spark, settings, NEW_DAY)
    t0 = time.perf_counter()
    counts = ingest_events(spark, settings, NEW_DAY)
    seconds = time.perf_counter() - t0
    again = (
        tables.read(spark, tables.BRONZE_EVENTS, settings)
        .where((F.col("dt") == NEW_DAY) & F.col("event_id").isin(list(copied)))
        .count()
    )
    return {
        "history_days": history, "bronze_rows_before": history * args.per_day,
        "new_lines": len(lines), "copies_of_history": len(copied),
        "copies_in_bronze_twice": again, "duplicate_rows": counts.duplicate_rows,
        "quarantined_rows": counts.quarantined_rows, "reconciles": counts.reconciles,
        "ingest_seconds": round(seconds, 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="where the warehouses are built/reused")
    parser.add_argument("--history", default="7,90")
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=20_000)
    parser.add_argument("--replays", type=int, default=200)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    root = Path(args.root)
    os.environ.update({
        "CHOIRFLOW__PATHS__JARS": str(ROOT / ".cache" / "jars"),
        "CHOIRFLOW__SPARK__MASTER": "local[2]", "TQDM_DISABLE": "1",
    })  # fmt: skip
    runs = [_measure(root, int(h), args) for h in args.history.split(",")]
    result = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "command": "python benchmarks/dedup_lookup.py " + " ".join(sys.argv[1:]),
        "runs": runs,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
