"""Clicks and conversions that arrive before their parent: what the old rule lost and what
waiting saves.

Method. A synthetic world (`--preset`, default the demo's) is written as raw logs and its
days ingested in one range. Every click or conversion that finds no parent on arrival
(same day or the 3 days before) is what the rule before ingest.pending sent to quarantine
as orphan_click / orphan_conversion; now it waits. Counted from bronze.ingest_runs and
bronze.quarantine: how many waited, were released into bronze when the parent came, expired
(their window closed first) or still wait at the end of the range; and, against the world's
oracle, how many of the world's clicks bronze holds.

    .venv/bin/python benchmarks/pending_release.py --root /tmp/pending-bench [--preset demo]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pending_release.json"


def _measure(root: Path, preset_name: str) -> dict:
    os.environ.update({
        "CHOIRFLOW__PATHS__RAW": str(root / "raw"),
        "CHOIRFLOW__PATHS__WAREHOUSE": str(root / "warehouse"),
    })  # fmt: skip
    from pyspark.sql import functions as F

    from choirflow import tables
    from choirflow.config import load_settings
    from choirflow.ingest.raw import ingest_days
    from choirflow.spark import get_spark
    from choirflow.synth.world import generate_world, preset, write_world

    world = generate_world(preset(preset_name))
    write_world(world, root)
    start = world.config.start
    days = [str(start.fromordinal(start.toordinal() + d)) for d in range(world.config.days)]
    settings = load_settings()
    spark = get_spark(settings)
    t0 = time.perf_counter()
    ingest_days(spark, settings, days[0], days[-1])
    seconds = time.perf_counter() - t0
    runs = tables.read(spark, tables.BRONZE_INGEST_RUNS, settings)
    runs = runs.where(F.col("source") == "raw_events").toPandas()
    q = tables.read(spark, tables.BRONZE_QUARANTINE, settings).groupBy("reason").count()
    reasons = {r.reason: r["count"] for r in q.collect()}
    state = tables.read(spark, tables.BRONZE_PENDING_EVENTS, settings)
    still = state.where(F.col("dt") == days[-1]).count()
    events = tables.read(spark, tables.BRONZE_EVENTS, settings)
    clicks = events.where(F.col("event_type") == "click").count()
    oracle = world.oracle_impressions
    arrived = oracle["click_arrival_dt"].astype(object).fillna("9999-12-31") <= days[-1]
    return {
        "preset": preset_name,
        "days": len(days),
        "raw_events": int(runs.raw_rows.sum()),
        "waited_old_rule_quarantined": int(runs.pending_rows.sum()),
        "released_into_bronze": int(runs.released_rows.sum()),
        "expired_to_quarantine": int(runs.expired_rows.sum()),
        "still_waiting_at_end": still,
        "quarantine_reasons": reasons,
        "oracle_clicks_arrived": int(arrived.sum()),
        "clicks_in_bronze": clicks,
        "reconciles": bool(
            (
                runs.raw_rows + runs.released_rows + runs.expired_rows
                == runs.bronze_rows + runs.quarantined_rows + runs.duplicate_rows
                + runs.pending_rows
            ).all()
        ),
        "ingest_seconds": round(seconds, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="an empty folder for raw logs and tables")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    os.environ.update({
        "CHOIRFLOW__PATHS__JARS": str(ROOT / ".cache" / "jars"),
        "CHOIRFLOW__SPARK__MASTER": "local[2]", "TQDM_DISABLE": "1",
    })  # fmt: skip
    result = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "command": "python benchmarks/pending_release.py " + " ".join(sys.argv[1:]),
        **_measure(Path(args.root), args.preset),
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
