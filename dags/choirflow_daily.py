"""choirflow_daily: one run per UTC day. Wiring only: the steps are choirflow.steps, Spark
steps run as spark-submit of jobs/step.py, light steps call choirflow.steps in the task; no
logic and no I/O at import. The chain below is the step registry's (a test compares them).

The data interval [start, end) is the day being processed, so the run for 2026-11-01 starts
after that day has ended. A failing hard quality check stops the run before training.
Spark's master comes from the `spark_default` connection (AIRFLOW_CONN_SPARK_DEFAULT; the
Makefile sets local[*]); training runs on its own queue and pool so a GPU worker can take it.
The steps that write the warehouse share the warehouse pool (one slot) with the backfill and
group-refresh DAGs, so no two of them overlap.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task
from choirflow_dag_common import (
    TABLES,
    USER_DEFINED_MACROS,
    WAREHOUSE_POOL,
    default_args,
    spark_step,
    train_pool,
    train_queue,
)

DAY = "{{ params.day or data_interval_start.strftime('%Y-%m-%d') }}"
ASSETS = {
    name: Asset(name=f"choirflow.{name}", uri=f"choirflow://warehouse/{name.replace('.', '/')}")
    for name in TABLES
}


def _day(params, data_interval_start) -> str:
    return params.get("day") or data_interval_start.strftime("%Y-%m-%d")


def _run(step: str, params, data_interval_start, done: dict | None = None):
    from choirflow.config import load_settings
    from choirflow.logs import configure
    from choirflow.steps import run_step

    configure()
    return run_step(step, _day(params, data_interval_start), load_settings(), done)


@dag(
    dag_id="choirflow_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(2, timedelta(minutes=2), timedelta(hours=2)),
    tags=["choirflow", "daily"],
    doc_md=__doc__,
    user_defined_macros=USER_DEFINED_MACROS,
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Process this UTC day instead of the run's data interval (YYYY-MM-DD).",
        )
    },
)
def choirflow_daily():
    @task(pool=WAREHOUSE_POOL, outlets=[ASSETS["gold.samples"]])
    def correct_labels(params=None, data_interval_start=None, outlet_events=None) -> dict:
        """Late clicks and conversions relabel the past days they reach: gold.samples' Asset
        event names those days and how many labels changed on each."""
        changed = _run("correct_labels", params, data_interval_start)
        outlet_events[ASSETS["gold.samples"]].extra = {"corrected_days": changed}
        return changed

    ingest = spark_step("ingest", DAY)
    bronze_gate = spark_step("bronze_quality_gate", DAY)
    corrections = correct_labels()
    behaviors = spark_step("behaviors", DAY)
    item_embeddings = spark_step("item_embeddings", DAY)
    user_features = spark_step("user_features", DAY)
    # Budgeted LLM labelling of changed users, RQ-KMeans codes, group priors; the samples of
    # a day read the groups as of the day before (point in time).
    user_groups = spark_step("user_groups", DAY)
    samples = spark_step("samples", DAY)
    gold_gate = spark_step("gold_quality_gate", DAY)

    @task(queue=train_queue(), pool=train_pool())
    def train_and_evaluate(params=None, data_interval_start=None) -> dict:
        return _run("train_and_evaluate", params, data_interval_start)

    @task(pool=WAREHOUSE_POOL)
    def promote(challenger: dict, params=None, data_interval_start=None) -> dict:
        done = {"train_and_evaluate": challenger}
        return _run("promote", params, data_interval_start, done)

    @task
    def report(decision: dict, params=None, data_interval_start=None) -> str:
        return _run("report", params, data_interval_start)

    @task(outlets=list(ASSETS.values()))
    def publish_assets(report_path: str, params=None, data_interval_start=None, outlet_events=None):
        """An asset event per table: its Delta version and row count, for lineage and for DAGs
        scheduled on the tables."""
        snapshots = _run("publish_assets", params, data_interval_start)
        for name, asset in ASSETS.items():
            if name in snapshots:
                outlet_events[asset].extra = snapshots[name]
        return {name: s["delta_version"] for name, s in snapshots.items()}

    trained = train_and_evaluate()
    (
        ingest
        >> bronze_gate
        >> corrections
        >> behaviors
        >> [item_embeddings, user_features]
        >> user_groups
        >> samples
        >> gold_gate
        >> trained
    )
    publish_assets(report(promote(trained)))


choirflow_daily()
