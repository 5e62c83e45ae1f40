"""spark-submit entry point: raw logs of one day -> bronze tables (with quarantine).

spark-submit --jars <delta jars> jobs/ingest.py --dt 2026-11-01
"""

import argparse
import json

from choirflow import pipeline

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dt", required=True, help="UTC arrival day, YYYY-MM-DD")
    args = parser.parse_args()
    print(json.dumps(pipeline.ingest(args.dt)))
