"""Semantic user groups: how well the groups recover the world's planted latent groups, and
what the LLM labelling costs.

Method. A synthetic world runs through ingest and the feature steps for `--days` days. Then:
1. every user gets a template profile; profile text -> MiniLM -> RQ-KMeans (the configured
   centroids); NMI and purity of the first-stage code against the planted fine and coarse
   groups, for all users and for low-activity users alone;
2. `--llm-users` users (the most active first, as the daily budget picks them) are labelled
   by the configured LLM backend (in-process llama.cpp on Gemma 3 270M by default); on the
   same users, RQ-KMeans is fitted once on their LLM profiles and once on their template
   profiles, and both are scored the same way;
3. the labelling runs again with nothing changed: it must make zero calls.

    .venv/bin/python benchmarks/groups.py [--preset tiny --days 4 --llm-users 80]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "groups.json"


def purity(truth: np.ndarray, codes: np.ndarray) -> float:
    """Share of users whose code's majority planted group is their own."""
    total = 0
    for code in np.unique(codes):
        members = truth[codes == code]
        total += np.bincount(members).max()
    return total / len(truth)


def scores(truth_fine, truth_coarse, codes) -> dict[str, float]:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    return {
        "nmi_fine": round(float(nmi(truth_fine, codes)), 4),
        "nmi_coarse": round(float(nmi(truth_coarse, codes)), 4),
        "purity_fine": round(purity(truth_fine, codes), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--llm-users", type=int, default=80)
    parser.add_argument("--backend", default="llama_cpp")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="choirflow-bench-groups-"))
    os.environ.update(
        {
            "CHOIRFLOW__PATHS__RAW": str(work / "world" / "raw"),
            "CHOIRFLOW__PATHS__WAREHOUSE": str(work / "warehouse"),
            "CHOIRFLOW__PATHS__MODELS": str(work / "models"),
            "CHOIRFLOW__SPARK__MASTER": "local[2]",
            "CHOIRFLOW__SPARK__SHUFFLE_PARTITIONS": "4",
            "CHOIRFLOW__GROUPS__BACKEND": "template",
            "HF_HUB_OFFLINE": "1",
            "TQDM_DISABLE": "1",
            "PYSPARK_PYTHON": sys.executable,
        }
    )
    sys.path.insert(0, str(ROOT / "src"))
    from pyspark.sql import functions as F

    from choirflow import pipeline, tables
    from choirflow.config import load_settings
    from choirflow.groups import rqkmeans
    from choirflow.groups.assign import encode_profiles
    from choirflow.groups.inputs import profiles_as_of
    from choirflow.groups.labelling import label_profiles
    from choirflow.spark import get_spark
    from choirflow.steps import run_step
    from choirflow.synth.world import generate_world, preset, write_world

    world = generate_world(preset(args.preset, users=args.users, days=args.days))
    write_world(world, work / "world")
    oracle = world.oracle_users.set_index("user_id")
    settings = load_settings()
    spark = get_spark(settings)
    days = sorted(world.events["dt"].unique())[: args.days]
    t0 = time.perf_counter()
    for dt in days:
        run_step("ingest", dt, settings)
        pipeline.build_features(dt, settings, steps=("behaviors", "user_features", "samples"))
    pipeline_seconds = time.perf_counter() - t0
    last = days[-1]
    cfg = settings.groups
    centroids = tuple(cfg.centroids)

    def codes_for(texts: list[str]) -> np.ndarray:
        vectors = encode_profiles(texts, cfg.profile_dim)
        return rqkmeans.assign(vectors, rqkmeans.fit(vectors, centroids, seed=cfg.seed))[:, 0]

    # 1. Template profiles, every user.
    label_profiles(spark, settings, last, everyone=True)
    profiles = profiles_as_of(spark, settings, last).toPandas().set_index("user_id")
    features = (
        tables.read(spark, tables.SILVER_USER_FEATURES, settings)
        .where(F.col("dt") == last)
        .select("user_id", "activity_bucket")
        .toPandas()
        .set_index("user_id")
    )
    users = profiles.index.intersection(oracle.index)
    fine = oracle.loc[users, "fine_group"].to_numpy()
    coarse = oracle.loc[users, "coarse_group"].to_numpy()
    codes = codes_for(profiles.loc[users, "profile_text"].tolist())
    low = (features.reindex(users)["activity_bucket"].fillna("low") == "low").to_numpy()
    template_all = scores(fine, coarse, codes)
    template_low = scores(fine[low], coarse[low], codes[low])

    # 2. LLM profiles for a budget of users, compared with templates on the same users.
    llm_settings = settings.model_copy(
        update={
            "groups": cfg.model_copy(update={"backend": args.backend, "llm_budget": args.llm_users})
        }
    )
    t1 = time.perf_counter()
    run = label_profiles(spark, llm_settings, last, everyone=True)
    llm_wall = time.perf_counter() - t1
    labelled = profiles_as_of(spark, llm_settings, last).toPandas().set_index("user_id")
    llm_users = labelled.index[(labelled["source"] == "llm")].intersection(oracle.index)
    llm_codes = codes_for(labelled.loc[llm_users, "profile_text"].tolist())
    tpl_codes = codes_for(profiles.loc[llm_users, "profile_text"].tolist())
    f_sub = oracle.loc[llm_users, "fine_group"].to_numpy()
    c_sub = oracle.loc[llm_users, "coarse_group"].to_numpy()
    llm_scores = scores(f_sub, c_sub, llm_codes)
    tpl_scores = scores(f_sub, c_sub, tpl_codes)

    # 3. Nothing changed: zero calls.
    again = label_profiles(spark, llm_settings, last, everyone=True)
    spark.stop()

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python benchmarks/groups.py " + " ".join(sys.argv[1:]),
        "world": {"preset": args.preset, "users": len(users), "days": args.days},
        "centroids": list(centroids),
        "pipeline_seconds": round(pipeline_seconds, 1),
        "nmi_template_all_users": template_all["nmi_fine"],
        "template_all_users": template_all,
        "template_low_activity_users": {**template_low, "users": int(low.sum())},
        "llm_backend": run["model"],
        "llm_users": len(llm_users),
        "nmi_llm_profiles": llm_scores["nmi_fine"],
        "nmi_template_profiles": tpl_scores["nmi_fine"],
        "llm_profiles_scores": llm_scores,
        "template_profiles_same_users_scores": tpl_scores,
        "calls": run["calls"],
        "failures": run["failures"],
        "completion_tokens": run["completion_tokens"],
        "tokens_per_second": run["tokens_per_second"],
        "users_per_second_per_stream": run["users_per_second"],
        "labelling_wall_seconds": round(llm_wall, 1),
        "second_run_calls": again["calls"],
        "second_run_cache_hits": again["cache_hits"],
        "note": "NMI of the first-stage code against the planted fine groups unless named",
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
