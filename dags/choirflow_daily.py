"""choirflow_daily: one run per UTC day. Wiring only: Spark steps are spark-submit jobs in
jobs/, light steps call choirflow.pipeline; no logic and no I/O at import.

The data interval [start, end) is the day being processed, so the run for 2026-11-01 starts
after that day has ended. A failing hard quality check stops the run before training.
Spark's master comes from the `spark_default` connection (AIRFLOW_CONN_SPARK_DEFAULT; the
Makefile sets local[*]); training runs on its own queue and pool so a GPU worker can take it.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

JOBS = Path(__file__).resolve().parents[1] / "jobs"
DAY = "{{ params.day or data_interval_start.strftime('%Y-%m-%d') }}"
TRAIN_QUEUE = os.environ.get("CHOIRFLOW_TRAIN_QUEUE", "default")
TRAIN_POOL = os.environ.get("CHOIRFLOW_TRAIN_POOL", "default_pool")


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
    # Budgeted LLM labelling of changed users, RQ-KMeans codes, group priors (read by the
    # next day's samples, so training does not wait for it).
    user_groups = _spark_step("user_groups", "groups.py")
    gold_gate = _spark_step("gold_quality_gate", "quality_gate.py", "--stage", "gold")

    @task(queue=TRAIN_QUEUE, pool=TRAIN_POOL)
    def train_and_evaluate(params=None, data_interval_start=None) -> dict:
        from choirflow import pipeline

        return pipeline.train_and_evaluate(_day(params, data_interval_start))

    @task
    def promote(challenger: dict, params=None, data_interval_start=None) -> dict:
        from choirflow import pipeline

        return pipeline.promote(_day(params, data_interval_start), challenger)

    @task
    def report(decision: dict, params=None, data_interval_start=None) -> str:
        from choirflow import pipeline

        return pipeline.report(_day(params, data_interval_start))

    trained = train_and_evaluate()
    (
        ingest
        >> bronze_gate
        >> behaviors
        >> [item_embeddings, user_features]
        >> samples
        >> gold_gate
        >> trained
    )
    samples >> user_groups
    report(promote(trained))


choirflow_daily()
