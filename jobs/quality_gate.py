"""spark-submit entry point: the GX gate after bronze or after gold; exits non-zero on a hard
failure, with a message naming the table, the check, the failing count and examples.

    spark-submit --jars <delta jars> jobs/quality_gate.py --stage bronze --dt 2026-11-01
"""

import argparse
import json
import sys

from choirflow import pipeline
from choirflow.quality.gate import QualityGateError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["bronze", "gold"], required=True)
    parser.add_argument("--dt", required=True, help="UTC day, YYYY-MM-DD")
    args = parser.parse_args()
    try:
        print(json.dumps(pipeline.quality_gate(args.stage, args.dt)))
    except QualityGateError as failure:
        print(str(failure), file=sys.stderr)
        sys.exit(2)
