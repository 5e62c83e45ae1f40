"""Cold start of a small-day Spark step: a fresh process that starts a session and does what
every step does with Delta (write, read, window, replaceWhere, MERGE), with and without
`spark.small_data`'s quick-start JVM (the class-data-sharing archive written by `make setup`,
and C1 alone for a one-step JVM). Runs alternate, so both see the same machine.

    python benchmarks/jvm_start.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import sys, time
t0 = time.perf_counter()
from choirflow.config import load_settings
from choirflow.spark import _warm_up, get_spark
settings = load_settings()
get_spark(settings)
t1 = time.perf_counter()
_warm_up(settings)
print(f"{t1 - t0:.2f} {time.perf_counter() - t1:.2f}")
"""
INTERPRETED = json.dumps(
    {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
)
VARIANTS = {
    # interpreted queries in all three: only the JVM differs
    "plain JVM": {"CHOIRFLOW__SPARK__SMALL_DATA": "false", "CHOIRFLOW__SPARK__CONF": INTERPRETED},
    "class archive": {"CHOIRFLOW__SPARK__SMALL_DATA": "true"},
    "class archive + C1": {
        "CHOIRFLOW__SPARK__SMALL_DATA": "true",
        "CHOIRFLOW__SPARK__DRIVER_JAVA_OPTIONS": "-XX:TieredStopAtLevel=1",
    },
}


def run_once(extra: dict[str, str]) -> tuple[float, float, float]:
    env = os.environ | {"CHOIRFLOW_HOME": str(ROOT), "CHOIRFLOW__SPARK__MASTER": "local[2]",
                        "CHOIRFLOW__SPARK__SHUFFLE_PARTITIONS": "2"} | extra  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    total = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    session, work = map(float, done.stdout.split()[-2:])
    return session, work, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/jvm_start.json"))
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        for name, extra in VARIANTS.items():
            runs[name].append(run_once(extra))
            print(f"[{repeat + 1}/{args.repeats}] {name}: session, work, process "
                  f"{runs[name][-1]}", flush=True)  # fmt: skip
    out = {
        name: {
            "session_s": statistics.median(r[0] for r in rs),
            "work_s": statistics.median(r[1] for r in rs),
            "process_s": statistics.median(r[2] for r in rs),
        }
        for name, rs in runs.items()
    }
    base = out["plain JVM"]["process_s"]
    for figures in out.values():
        figures["ratio_to_plain"] = round(figures["process_s"] / base, 3)
    Path(args.output).write_text(json.dumps({"repeats": args.repeats, "variants": out}, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
