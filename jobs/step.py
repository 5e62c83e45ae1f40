"""spark-submit entry point: one registered daily step (choirflow.steps) for one day.

    spark-submit --jars <delta jars> jobs/step.py --step ingest --dt 2026-11-01
    spark-submit --jars <delta jars> jobs/step.py --step user_groups --dt 2026-11-01 --refit

Prints the step's result as JSON. A failing quality gate exits with 2 and a message naming
the table, the check, the failing count and examples.
"""

import argparse
import json
import sys

from choirflow.config import load_settings
from choirflow.lock import WarehouseBusy, warehouse_lock
from choirflow.logs import configure
from choirflow.quality.gate import QualityGateError
from choirflow.spark import get_spark
from choirflow.steps import STEPS_BY_NAME, run_step, user_groups

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", required=True, choices=sorted(STEPS_BY_NAME))
    parser.add_argument("--dt", required=True, help="UTC day, YYYY-MM-DD")
    parser.add_argument("--refit", action="store_true", help="user_groups: a new codebook first")
    parser.add_argument(
        "--relabel-all", action="store_true", help="user_groups: rebuild every user's inputs"
    )
    args = parser.parse_args()
    configure()
    settings = load_settings()
    try:
        if args.refit or args.relabel_all:
            if args.step != "user_groups":
                parser.error("--refit and --relabel-all apply to --step user_groups")
            with warehouse_lock(settings, f"step user_groups {args.dt} (refresh)"):
                result = user_groups(
                    get_spark(settings), settings, args.dt, args.dt, {},
                    refit=args.refit, relabel_all=args.relabel_all,
                )  # fmt: skip
        else:
            result = run_step(args.step, args.dt, settings)
    except (QualityGateError, WarehouseBusy) as failure:
        print(str(failure), file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result, default=str))
