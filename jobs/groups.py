"""spark-submit entry point: semantic user groups of one day (ChoirRec).

spark-submit --jars <delta jars> jobs/groups.py --dt 2026-11-01 [--refit] [--relabel-all]

Daily: budgeted LLM labelling of users whose inputs changed, codes for changed profiles,
group priors. Weekly (choirflow_groups_refresh): --relabel-all rebuilds every user's inputs,
--refit fits a new codebook version.
"""

import argparse
import json

from choirflow import pipeline

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dt", required=True, help="UTC day, YYYY-MM-DD")
    parser.add_argument("--refit", action="store_true", help="fit a new codebook version first")
    parser.add_argument("--relabel-all", action="store_true", help="rebuild every user's inputs")
    args = parser.parse_args()
    print(
        json.dumps(pipeline.build_groups(args.dt, refit=args.refit, relabel_all=args.relabel_all))
    )
