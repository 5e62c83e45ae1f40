"""The range engine against day-by-day runs, on MovieLens-100K's real days (215 calendar
days, 213 with ratings).

Method. The MovieLens-100K files (`choirflow datasets fetch movielens-100k`) are imported
into raw logs once. Range: `pipeline.backfill(first, last, ("ingest", "features"))` into a
fresh warehouse: every day ingest to gold, gates included, in chunks of
`backfill.chunk_days` (30), no LLM calls (template profiles). Day by day: the same data
steps as a daily run (`pipeline.run_day(train=False)`) over the first `--daily-days` days
into another fresh warehouse; a day's cost is nearly all fixed (Spark jobs, Delta commits,
gates), so `seconds_daily` is scaled to all days: the first day as measured (it loads the
encoders and embeds every item) plus the mean of the others times the remaining days (said
in `daily_scaled_from`). Both in one process, one after the other, on local[2] with the
small-data settings the demo uses. `impressions_per_s_range` is gold.samples rows over the
range's seconds.

    .venv/bin/python benchmarks/backfill.py [--daily-days 8] [--chunk-days 30] [--output F]

The synthetic 48k-user world's 60 days (the issue's second case) is not measured yet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "backfill.json"
sys.path.insert(0, str(ROOT / "benchmarks"))

from features import PeakMemory  # noqa: E402


def _settings(root: Path, warehouse: str, chunk_days: int):
    from choirflow.config import load_settings

    return load_settings(
        environ={
            "CHOIRFLOW__PATHS__RAW": str(root / "raw"),
            "CHOIRFLOW__PATHS__WAREHOUSE": str(root / warehouse),
            "CHOIRFLOW__PATHS__MODELS": str(root / "models"),
            "CHOIRFLOW__PATHS__REPORTS": str(root / "reports"),
            "CHOIRFLOW__PATHS__JARS": str(ROOT / ".cache" / "jars"),
            "CHOIRFLOW__GROUPS__BACKEND": "template",
            "CHOIRFLOW__BACKFILL__CHUNK_DAYS": str(chunk_days),
            "CHOIRFLOW__QUALITY__VOLUME_SEVERITY": "soft",
            "CHOIRFLOW__SPARK__SMALL_DATA": "true",
            "CHOIRFLOW__SPARK__MASTER": "local[2]",
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daily-days", type=int, default=8)
    parser.add_argument("--chunk-days", type=int, default=30)
    parser.add_argument("--output", default=str(RESULTS), help="results JSON")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    from choirflow import pipeline, tables
    from choirflow.datasets import default_cache, fetch
    from choirflow.dates import days_between
    from choirflow.importers.movielens import import_movielens
    from choirflow.spark import get_spark

    root = Path(tempfile.mkdtemp(prefix="choirflow-backfill-bench-"))
    counts = import_movielens(fetch("movielens-100k", default_cache(ROOT)), root / "raw")
    days = days_between(counts["first_day"], counts["last_day"])
    ranged = _settings(root, "range", args.chunk_days)
    spark = get_spark(ranged)

    with PeakMemory() as memory:
        t0 = time.perf_counter()
        chunks = pipeline.backfill(days[0], days[-1], ("ingest", "features"), ranged)
        seconds_range = time.perf_counter() - t0
    samples = tables.read(spark, tables.GOLD_SAMPLES, ranged).count()
    print(f"range: {len(days)} days in {seconds_range:.0f}s ({len(chunks)} chunks)", flush=True)

    daily = _settings(root, "daily", args.chunk_days)
    per_day = []
    for dt in days[: args.daily_days]:
        t0 = time.perf_counter()
        pipeline.run_day(dt, daily, train=False)
        per_day.append(time.perf_counter() - t0)
        print(f"daily {dt}: {per_day[-1]:.1f}s", flush=True)
    rest = sum(per_day[1:]) / max(len(per_day) - 1, 1)
    seconds_daily = per_day[0] + rest * (len(days) - 1)

    result = {
        "dataset": "movielens-100k",
        "days": len(days),
        "chunk_days": args.chunk_days,
        "chunks": len(chunks),
        "seconds_range": round(seconds_range, 1),
        "seconds_daily": round(seconds_daily, 1),
        "daily_scaled_from": f"days 1-{len(per_day)} measured "
        f"({', '.join(f'{s:.1f}' for s in per_day)} s); the first as is, "
        f"the mean of the others x {len(days) - 1}",
        "speedup": round(seconds_daily / seconds_range, 1),
        "samples": samples,
        "impressions_per_s_range": round(samples / seconds_range, 1),
        "peak_rss_gib": round(memory.peak / 2**30, 2),
        "step_seconds_by_chunk": [c["step_seconds"] for c in chunks],
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.processor() or ''}",
        "command": "benchmarks/backfill.py " + " ".join(sys.argv[1:]),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "step_seconds_by_chunk"}, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
