"""Build the quality world's samples bundle: the world that item 6's claims are measured on.

Why a second world. On the demo world no model can come within 0.01 of the oracle AUC:
each user's fine group and own interest vector are hidden, and a low-activity user's
behaviour does not reveal them (`oracle_bound.py`: the history bound sits 0.03 under the
oracle). A check of learning needs a world whose planted structure the data does determine.
The `quality` preset (src/choirflow/synth/world.py) is that world: users who stay close to
their group's interest, active enough to be read, and a strong sequence effect that decays
within hours, so only same-day clicks with their times carry it.

Method. The world is generated, then every day runs in this process through the daily
pipeline up to the gold gate (`pipeline.run_day(train=False)`: ingest, bronze gate, the
feature steps, the groups step with template profiles (no LLM call), the gold gate). The
bundle holds the last `--train-days` days before the evaluation day (the last of them
validates) and the evaluation day with the world's true click probabilities.

    .venv/bin/python benchmarks/quality_world.py --work /tmp/quality-world
    python benchmarks/quality.py --bundle benchmarks/data/quality.npz ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def build(
    work: Path,
    preset_name: str,
    run_one_day: Callable[[str, Any], Any] | None = None,
    **overrides: Any,
) -> list[str]:
    """Generate the world into work/ and run each of its days in this process: by default
    through the daily pipeline up to the gold gate (`run_day(train=False)`)."""
    os.environ["CHOIRFLOW__PATHS__RAW"] = str(work / "raw")
    os.environ["CHOIRFLOW__PATHS__WAREHOUSE"] = str(work / "warehouse")
    os.environ["CHOIRFLOW__GROUPS__BACKEND"] = "template"
    from choirflow import pipeline
    from choirflow.config import load_settings
    from choirflow.synth.world import generate_world, preset, write_world

    world = generate_world(preset(preset_name, **overrides))
    days = write_world(world, work)["days"]
    print(json.dumps(world.summary), flush=True)
    settings = load_settings()
    run_one_day = run_one_day or (lambda dt, s: pipeline.run_day(dt, s, train=False))
    for i, dt in enumerate(days, 1):
        t0 = time.perf_counter()
        run_one_day(dt, settings)
        seconds = time.perf_counter() - t0
        print(f"[world] day {i}/{len(days)} {dt}: {seconds:.0f}s", flush=True)
    return days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quality")
    parser.add_argument("--work", required=True, help="world folder (raw logs and warehouse)")
    parser.add_argument("--train-days", type=int, default=8, help="the last one validates")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "data" / "quality.npz"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    days = build(work, args.preset)
    # A fresh process (and JVM) for the export: after twelve days in this one, collecting the
    # training window ran the 4g driver out of heap.
    import subprocess

    env = {"CHOIRFLOW__SPARK__DRIVER_MEMORY": "8g", **os.environ}
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "samples_bundle.py"),
         "--warehouse", str(work / "warehouse"), "--raw", str(work / "raw"), "--day", days[-1],
         "--train-days", str(args.train_days), "--out", args.out],
        check=True, env=env,
    )  # fmt: skip
    print(f"[quality_world] bundle {args.out}", flush=True)


if __name__ == "__main__":
    main()
