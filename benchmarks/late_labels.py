"""Delayed labels: what the same-day rule lost, against the world's true labels.

Method. The `delayed` world (conversions up to 4 days after their click, 5% of clicks and
conversions delivered 1-3 days late) is written as raw logs once and built twice from
ingest to gold.samples by `choirflow backfill` in one chunk, with the world's attribution
window (96 h): by this checkout (labels across days, look-back 7 days so that a conversion
4 days after its click and 3 days late still finds it) and by a peer checkout given as
`--peer` (a worktree of the commit before labels across days: labels from the impression's
own arrival day only, look-back fixed at 3 days). Each gold.samples is compared with the
world's oracle: an impression's true click and conversion, counted where the event arrived
within the range (what any pipeline could know at the end of it).

    git worktree add /tmp/peer-labels c3ee957
    .venv/bin/python benchmarks/late_labels.py --root /tmp/late-bench --peer /tmp/peer-labels
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "late_labels.json"
WINDOW_HOURS = 96


def _build(code: Path, root: Path, warehouse: str, days: list[str], extra: dict) -> float:
    """`pipeline.backfill` of ingest and features over the days, in a fresh process running
    the checkout at `code`; returns its seconds."""
    env = {
        **os.environ,
        "PYTHONPATH": str(code / "src"),
        "CHOIRFLOW_HOME": str(code),
        "CHOIRFLOW__PATHS__RAW": str(root / "raw"),
        "CHOIRFLOW__PATHS__WAREHOUSE": str(root / warehouse),
        "CHOIRFLOW__BACKFILL__CHUNK_DAYS": str(len(days)),
        "CHOIRFLOW__FEATURES__ATTRIBUTION_HOURS": str(WINDOW_HOURS),
        **extra,
    }
    script = (
        "from choirflow import pipeline; "
        f"pipeline.backfill({days[0]!r}, {days[-1]!r}, parts=('ingest', 'features'))"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    return round(time.perf_counter() - t0, 1)


def _truth(world, last: str):
    """Per impression event id: the world's click and conversion, where they arrived by
    `last`."""
    o = world.oracle_impressions
    arrived = lambda kind: o[f"{kind}_arrival_dt"].astype(object).fillna("9999") <= last  # noqa: E731
    click = o["clicked"].astype(bool) & arrived("click")
    conversion = click & o["converted"].astype(bool) & arrived("conversion")
    return o.assign(true_click=click.astype(int), true_conversion=conversion.astype(int))[
        ["event_id", "true_click", "true_conversion"]
    ]


def _score(spark, root: Path, warehouse: str, truth) -> dict:
    from choirflow import tables
    from choirflow.config import load_settings

    settings = load_settings(
        environ={**os.environ, "CHOIRFLOW__PATHS__WAREHOUSE": str(root / warehouse)}
    )
    got = tables.read(spark, tables.GOLD_SAMPLES, settings).select(
        "event_id", "click", "conversion"
    )
    both = got.toPandas().merge(truth, on="event_id")
    out = {"impressions": len(both)}
    for label in ("click", "conversion"):
        true, mine = both[f"true_{label}"], both[label]
        out[f"true_{label}s"] = int(true.sum())
        out[f"labelled_{label}s"] = int(mine.sum())
        out[f"{label}s_lost"] = int(((true == 1) & (mine == 0)).sum())
        out[f"{label}s_wrong"] = int(((true == 0) & (mine == 1)).sum())
        out[f"{label}_share_lost"] = round(out[f"{label}s_lost"] / max(int(true.sum()), 1), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="an empty folder for raw logs and tables")
    parser.add_argument("--peer", required=True, help="a checkout with the same-day rule")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    root, peer = Path(args.root), Path(args.peer)
    os.environ.update({
        "CHOIRFLOW__PATHS__JARS": str(ROOT / ".cache" / "jars"),
        "CHOIRFLOW__SPARK__MASTER": "local[2]", "TQDM_DISABLE": "1",
        "CHOIRFLOW__GROUPS__BACKEND": "template",
    })  # fmt: skip
    from choirflow.config import load_settings
    from choirflow.spark import get_spark
    from choirflow.synth.world import generate_world, preset, write_world

    world = generate_world(preset("delayed"))
    write_world(world, root)
    start = world.config.start
    days = [str(start.fromordinal(start.toordinal() + d)) for d in range(world.config.days)]
    seconds = {
        "across_days": _build(ROOT, root, "across", days,
                              {"CHOIRFLOW__FEATURES__PARENT_LOOKBACK_DAYS": "7"}),
        "same_day_peer": _build(peer, root, "same_day", days, {}),
    }  # fmt: skip
    spark = get_spark(load_settings())
    truth = _truth(world, days[-1])
    result = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "command": "python benchmarks/late_labels.py " + " ".join(sys.argv[1:]),
        "world": "delayed",
        "days": len(days),
        "attribution_hours": WINDOW_HOURS,
        "across_days": _score(spark, root, "across", truth),
        "same_day_peer": _score(spark, root, "same_day", truth),
        "build_seconds": seconds,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
