"""spark-submit entry point: rebuild a date range in chunks, gates included (idempotent).

spark-submit --jars <delta jars> jobs/backfill.py --start 2026-11-01 --end 2026-11-07
"""

import argparse
import json

from choirflow import pipeline
from choirflow.logs import configure

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", required=True)
    parser.add_argument("--end", required=True)
    parser.add_argument(
        "--steps", default="ingest,features", help=",".join(pipeline.BACKFILL_STEPS)
    )
    parser.add_argument(
        "--llm-budget", type=int, default=0, help="LLM calls per past day (0: templates)"
    )
    args = parser.parse_args()
    configure()
    steps = tuple(s for s in args.steps.split(",") if s)
    print(
        json.dumps(
            pipeline.backfill(args.start, args.end, steps, llm_budget=args.llm_budget), default=str
        )
    )
