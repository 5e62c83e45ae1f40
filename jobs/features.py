"""spark-submit entry point: silver tables and gold.samples of one day.

spark-submit --jars <delta jars> jobs/features.py --dt 2026-11-01 [--steps behaviors,samples]
"""

import argparse
import json

from choirflow import pipeline

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dt", required=True, help="UTC day, YYYY-MM-DD")
    parser.add_argument(
        "--steps",
        default=",".join(pipeline.FEATURE_STEPS),
        help=f"comma-separated, in order: {','.join(pipeline.FEATURE_STEPS)}",
    )
    args = parser.parse_args()
    steps = tuple(s for s in args.steps.split(",") if s)
    print(json.dumps(pipeline.build_features(args.dt, steps=steps)))
