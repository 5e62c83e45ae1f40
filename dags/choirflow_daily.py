"""choirflow_daily: one run per UTC day. Wiring only: Spark steps are spark-submit jobs in
jobs/, light steps call choirflow.pipeline; no logic and no I/O at import.

The data interval [start, end) is the day being processed, so the run for 2026-11-01 starts
after that day has ended. A failing hard quality check stops the run before training.
Spark's master comes from the `spark_default` connection (AIRFLOW_CONN_SPARK_DEFAULT; the
Makefile sets local[*]); training runs on its own queue and pool so a GPU worker can take it.
The steps that write the warehouse share choirflow.pools.WAREHOUSE_POOL (one slot) with the
backfill and group-refresh DAGs, so no two of them overlap.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

# choirflow.pools.WAREHOUSE_POOL (one slot): warehouse writers never overlap.
WAREHOUSE_POOL = "choirflow_warehouse"

JOBS = Path(__file__).resolve().parents[1] / "jobs"
DAY = "{{ params.day or data_interval_start.strftime('%Y-%m-%d') }}"
TRAIN_QUEUE = os.environ.get("CHOIRFLOW_TRAIN_QUEUE", "default")
TRAIN_POOL = os.environ.get("CHOIRFLOW_TRAIN_POOL", "default_pool")


# One Asset per warehouse table (tests check this list against choirflow.tables.ALL_TABLES);
# each daily run's event carries the table's Delta version and row count.
TABLES = (
    "bronze.events", "bronze.items", "bronze.users", "bronze.item_history", "bronze.user_history",
    "bronze.quarantine", "bronze.ingest_runs",
    "silver.behaviors", "silver.user_daily_activity", "silver.item_daily_stats",
    "silver.user_category_exposure", "silver.user_category_state", "silver.sequence_state",
    "silver.user_features", "silver.item_embeddings",
    "silver.item_embedding_projections", "silver.user_category_daily", "silver.user_profiles",
    "silver.profile_runs", "silver.group_codebooks", "silver.user_groups", "silver.group_priors",
    "gold.samples", "gold.metrics", "gold.promotions", "quality.results", "quality.monitoring",
)  # fmt: skip
ASSETS = {
    name: Asset(name=f"choirflow.{name}", uri=f"choirflow://warehouse/{name.replace('.', '/')}")
    for name in TABLES
}


def _delta_jars() -> str:
    """Rendered when a task runs, not when the file is parsed."""
    from choirflow.spark import delta_jars

    return ",".join(delta_jars(_settings()))


def _settings():
    from choirflow.config import load_settings

    return load_settings()


def _day(params, data_interval_start) -> str:
    return params.get("day") or data_interval_start.strftime("%Y-%m-%d")


def _say_what_failed(context) -> None:
    """Failure callback: one line that names the DAG, task, day and error."""
    from choirflow.alerts import report_failure

    report_failure(context)


def _spark_step(task_id: str, job: str, *args: str) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(JOBS / job),
        application_args=["--dt", DAY, *args],
        conn_id="spark_default",
        jars="{{ choirflow_delta_jars() }}",
        name=f"choirflow-{task_id}",
        env_vars={"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable},
        verbose=False,
        pool=WAREHOUSE_POOL,
    )


DEFAULT_ARGS = {
    "owner": "choirflow",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "execution_timeout": timedelta(hours=2),
    "on_failure_callback": _say_what_failed,
}


@dag(
    dag_id="choirflow_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["choirflow", "daily"],
    doc_md=__doc__,
    user_defined_macros={"choirflow_delta_jars": _delta_jars},
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
    ingest = _spark_step("ingest", "ingest.py")
    bronze_gate = _spark_step("bronze_quality_gate", "quality_gate.py", "--stage", "bronze")
    behaviors = _spark_step("behaviors", "features.py", "--steps", "behaviors")
    item_embeddings = _spark_step("item_embeddings", "features.py", "--steps", "item_embeddings")
    user_features = _spark_step("user_features", "features.py", "--steps", "user_features")
    samples = _spark_step("samples", "features.py", "--steps", "samples")
    # Budgeted LLM labelling of changed users, RQ-KMeans codes, group priors; the samples of
    # a day read the groups as of the day before (point in time).
    user_groups = _spark_step("user_groups", "groups.py")
    gold_gate = _spark_step("gold_quality_gate", "quality_gate.py", "--stage", "gold")

    @task(queue=TRAIN_QUEUE, pool=TRAIN_POOL)
    def train_and_evaluate(params=None, data_interval_start=None) -> dict:
        from choirflow import pipeline

        return pipeline.train_and_evaluate(_day(params, data_interval_start))

    @task(pool=WAREHOUSE_POOL)
    def promote(challenger: dict, params=None, data_interval_start=None) -> dict:
        from choirflow import pipeline

        return pipeline.promote(_day(params, data_interval_start), challenger)

    @task
    def report(decision: dict, params=None, data_interval_start=None) -> str:
        from choirflow import pipeline

        return pipeline.report(_day(params, data_interval_start))

    @task(outlets=list(ASSETS.values()))
    def publish_assets(report_path: str, params=None, data_interval_start=None, outlet_events=None):
        """An asset event per table: its Delta version and row count, for lineage and for DAGs
        scheduled on the tables."""
        from choirflow import pipeline

        snapshots = pipeline.table_snapshots(_day(params, data_interval_start))
        for name, asset in ASSETS.items():
            if name in snapshots:
                outlet_events[asset].extra = snapshots[name]
        return {name: s["delta_version"] for name, s in snapshots.items()}

    trained = train_and_evaluate()
    (
        ingest
        >> bronze_gate
        >> behaviors
        >> [item_embeddings, user_features]
        >> user_groups
        >> samples
        >> gold_gate
        >> trained
    )
    publish_assets(report(promote(trained)))


choirflow_daily()
