"""Fuzzing the ingest: mutated raw lines through `ingest_events`, how fast, and whether every
one lands where its mutation says.

Method. `--lines` valid impression lines are made and each is mutated once by
`choirflow.synth.mutations.mutate` (a JSON type flipped, an id blanked, two lines joined on
one, a required field dropped: each with the rule it must break), beside `--valid` untouched
lines, into one arrival day's folder of a fresh raw tree. The day is ingested into a fresh
warehouse (local[2], small-data settings off); then every mutated line is looked up in
bronze.quarantine by its raw text. Reported: the share of mutated lines quarantined with the
expected rule and kept out of bronze (must be 100%), whether the counts reconcile, the
ingest's raw rows per second, the strict judge alone (judge_line in one Python process) in
lines per second, and, as the peer, Spark's own permissive JSON reader (`from_json` of the
same lines into the contract's schema, counted): the floor the old path paid for parsing.
The ingest is run twice and the second run timed (the first pays Python workers and JIT).
The peer run: the same lines (`--save-lines` here, then `--load-lines`) through another
checkout's ingest (`PYTHONPATH=<checkout>/src`; the lenient reader of 54f17c1, before the
strict judge): how many mutated lines it kept out of bronze, and how fast.

    .venv/bin/python benchmarks/fuzz_ingest.py [--lines 100000] [--valid 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fuzz_ingest.json"
DAY = "2027-06-01"


def _event(n: int, prefix: str) -> dict:
    return {
        "event_id": f"{prefix}-{n}", "event_type": "impression", "user_id": f"u{n % 5000}",
        "item_id": f"i{n % 700}", "request_id": f"r{n}", "position": n % 20,
        "event_time": f"{DAY}T{n % 24:02d}:00:00.000Z",
        "ingestion_time": f"{DAY}T{n % 24:02d}:00:01.000Z", "device": "web", "surface": "home",
    }  # fmt: skip


def _lines(count: int, valid: int, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    from choirflow.synth.mutations import mutate

    rng = random.Random(seed)
    mutated = [mutate(_event(i, "m"), rng, _event(i, "p")) for i in range(count)]
    return mutated, [json.dumps(_event(i, "v")) for i in range(valid)]


def _judge_seconds(text: list[str]) -> float | None:
    """The strict judge alone over the lines, in this process (None in a checkout without)."""
    try:
        from choirflow.contracts import load_contract
        from choirflow.ingest.judge import contract_types, judge_line
    except ImportError:
        return None
    types = contract_types(load_contract("raw_events"))
    t0 = time.perf_counter()
    for line in text:
        judge_line(line, types)
    return time.perf_counter() - t0


def _timed_runs(spark, settings, folder: Path) -> tuple[object, float, float]:
    """(counts, seconds of the second ingest of the day, seconds of Spark's own reader)."""
    from pyspark.sql import functions as F

    from choirflow.contracts import load_contract
    from choirflow.ingest.raw import ingest_events

    ingest_events(spark, settings, DAY)  # warm: Python workers, the JIT
    t0 = time.perf_counter()
    counts = ingest_events(spark, settings, DAY)
    ingest_s = time.perf_counter() - t0
    schema = load_contract("raw_events").spark_schema()
    t0 = time.perf_counter()
    parsed = spark.read.text(str(folder)).select(F.from_json("value", schema).alias("r"))
    parsed.where(F.col("r").isNotNull()).count()
    return counts, ingest_s, time.perf_counter() - t0


def _where_they_went(spark, settings, mutated: list[tuple[str, str]]) -> dict:
    """How many mutated lines landed in quarantine with their rule, and out of bronze."""
    from pyspark.sql import functions as F

    from choirflow import tables

    q = tables.read(spark, tables.BRONZE_QUARANTINE, settings).where(F.col("dt") == DAY)
    reasons = {r.raw_record: r.reason for r in q.select("raw_record", "reason").collect()}
    events = tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == DAY)
    kept = {r.event_id for r in events.select("event_id").collect()}
    out = [f"m-{i}" not in kept and f"p-{i}" not in kept for i in range(len(mutated))]
    landed = sum(
        reasons.get(line) == rule and o for (line, rule), o in zip(mutated, out, strict=True)
    )
    misses = [(line[:100], rule, reasons.get(line)) for line, rule in mutated
              if reasons.get(line) != rule][:5]  # fmt: skip
    return {
        "share_landed_as_expected": landed / len(mutated), "first_misses": misses,
        "share_kept_out_of_bronze": sum(out) / len(mutated),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--valid", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--save-lines", help="also write the lines made here to this file")
    parser.add_argument("--load-lines", help="ingest the lines saved by --save-lines")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="choirflow-fuzz-bench-"))
    os.environ.update({
        "CHOIRFLOW__PATHS__RAW": str(root / "raw"),
        "CHOIRFLOW__PATHS__WAREHOUSE": str(root / "warehouse"),
        "CHOIRFLOW__PATHS__JARS": str(ROOT / ".cache" / "jars"),
        "CHOIRFLOW__SPARK__MASTER": "local[2]",
        "TQDM_DISABLE": "1",
    })  # fmt: skip
    from choirflow.config import load_settings
    from choirflow.spark import get_spark

    if args.load_lines:
        saved = json.loads(Path(args.load_lines).read_text())
        mutated, valid = [tuple(pair) for pair in saved["mutated"]], saved["valid"]
    else:
        mutated, valid = _lines(args.lines, args.valid, args.seed)
    if args.save_lines:
        Path(args.save_lines).write_text(json.dumps({"mutated": mutated, "valid": valid}))
    folder = root / "raw" / "events" / f"dt={DAY}"
    folder.mkdir(parents=True)
    text = [line for line, _ in mutated] + valid
    (folder / "part-00000.jsonl").write_text("\n".join(text) + "\n")
    judge_s = _judge_seconds(text)
    settings = load_settings()
    spark = get_spark(settings)
    counts, ingest_s, peer_s = _timed_runs(spark, settings, folder)
    rules = Counter(rule.split(":")[0] for _, rule in mutated)
    result = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "command": "python benchmarks/fuzz_ingest.py " + " ".join(sys.argv[1:]),
        "mutated_lines": len(mutated), "valid_lines": len(valid), "rules_planted": rules,
        **_where_they_went(spark, settings, mutated),
        "reconciles": counts.reconciles, "counts": counts.line(),
        "bronze_rows": counts.bronze_rows, "ingest_seconds": round(ingest_s, 2),
        "ingest_rows_per_s": round(len(text) / ingest_s),
        "judge_alone_lines_per_s": round(len(text) / judge_s) if judge_s else None,
        "spark_from_json_seconds": round(peer_s, 2),
        "spark_from_json_rows_per_s": round(len(text) / peer_s),
        "ingest_over_spark_from_json_time": round(ingest_s / peer_s, 2),
    }  # fmt: skip
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    spark.stop()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
