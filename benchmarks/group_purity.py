"""How much do the semantic user groups say about the world's hidden interest groups?

ChoirRec's group channel can only help a low-activity user as far as their semantic group
(silver.user_groups, RQ-KMeans over profiles) tells which hidden fine group they are in, the
group that sets the world's group x category affinity. For the groups at the end of the
world's last day and for the coarse attributes every model reads, this prints the majority
purity (share of users whose group's most common hidden group is their own) and the
normalized mutual information with the hidden group.

    .venv/bin/python benchmarks/group_purity.py --work /tmp/quality-world
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ATTRIBUTES = ["age_band", "gender", "city_tier"]


def purity(hidden: pd.Series, grouping: pd.Series) -> dict:
    from sklearn.metrics import normalized_mutual_info_score

    majority = hidden.groupby(grouping).agg(lambda x: x.value_counts().iloc[0]).sum()
    return {
        "groups": int(grouping.nunique()),
        "majority_purity": round(float(majority / len(hidden)), 3),
        "nmi": round(float(normalized_mutual_info_score(hidden, grouping)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a world folder of quality_world.py")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/group_purity.json"))
    args = parser.parse_args()
    work = Path(args.work)
    os.environ["CHOIRFLOW__PATHS__RAW"] = str(work / "raw")
    os.environ["CHOIRFLOW__PATHS__WAREHOUSE"] = str(work / "warehouse")
    sys.path.insert(0, str(ROOT / "src"))
    from choirflow import tables
    from choirflow.config import load_settings
    from choirflow.spark import get_spark

    settings = load_settings()
    spark = get_spark(settings)
    groups = tables.read(spark, tables.SILVER_USER_GROUPS, settings).toPandas()
    groups = groups[groups["dt"] == groups["dt"].max()]
    users = tables.read(spark, tables.BRONZE_USERS, settings).toPandas()  # one row per user
    hidden = pd.read_parquet(work / "oracle" / "users.parquet")[["user_id", "fine_group"]]
    frame = groups.merge(hidden, on="user_id").merge(users[["user_id", *ATTRIBUTES]], on="user_id")
    attributes = frame[ATTRIBUTES].astype(str).agg("|".join, axis=1)
    rows = {
        "leaf_group": purity(frame["fine_group"], frame["leaf_group"]),
        "prior_group": purity(frame["fine_group"], frame["prior_group"]),
        "c1": purity(frame["fine_group"], frame["c1"]),
        "attributes": purity(frame["fine_group"], attributes),
    }
    result = {"day": str(groups["dt"].max()), "users": len(frame), "against_fine_group": rows}
    print(json.dumps(result, indent=2))
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    spark.stop()


if __name__ == "__main__":
    main()
