"""What the choirflow DAG files share: constants, default arguments, the Spark step factory,
the Delta JARs macro and the failure callback.

Thin-DAG policy: like the DAG files, this module imports only Airflow and the standard library
at module level; choirflow is imported inside callables, when a task runs. It holds no DAG
(.airflowignore keeps the DAG processor from parsing it); the DAG files import it from the
DAG folder, which Airflow puts on sys.path.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

# choirflow.pools.WAREHOUSE_POOL (one slot): warehouse writers never overlap (a test checks
# that the two names agree).
WAREHOUSE_POOL = "choirflow_warehouse"
JOBS = Path(__file__).resolve().parents[1] / "jobs"
STEP_JOB = JOBS / "step.py"


def train_queue() -> str:
    """The Celery queue of the training task (a GPU worker listens on it); read when a DAG
    file is parsed, so each deployment sets it in its environment."""
    return os.environ.get("CHOIRFLOW_TRAIN_QUEUE", "default")


def train_pool() -> str:
    return os.environ.get("CHOIRFLOW_TRAIN_POOL", "default_pool")


# One Asset per warehouse table (tests check this list against choirflow.tables.ALL_TABLES).
TABLES = (
    "bronze.events", "bronze.items", "bronze.users", "bronze.item_history", "bronze.user_history",
    "bronze.quarantine", "bronze.pending_events", "bronze.ingest_runs",
    "silver.behaviors", "silver.user_daily_activity", "silver.item_daily_stats",
    "silver.user_category_exposure", "silver.user_category_state", "silver.sequence_state",
    "silver.user_features", "silver.item_embeddings",
    "silver.item_embedding_projections", "silver.user_category_daily", "silver.user_profiles",
    "silver.profile_runs", "silver.group_codebooks", "silver.user_groups", "silver.group_priors",
    "gold.samples", "gold.label_status", "gold.metrics", "gold.mature_metrics", "gold.promotions",
    "quality.results", "quality.monitoring",
)  # fmt: skip


def delta_jars() -> str:
    """The `choirflow_delta_jars()` macro: rendered when a task runs, not at parse time."""
    from choirflow.config import load_settings
    from choirflow.spark import delta_jars as jars

    return ",".join(jars(load_settings()))


def driver_java_options() -> str:
    """The `choirflow_driver_java_options()` macro: the options of a JVM that runs one step."""
    from choirflow.config import load_settings
    from choirflow.spark import driver_java_options as options

    return options(load_settings(), one_step=True)


def say_what_failed(context) -> None:
    """Failure callback: one line that names the DAG, task, day and error."""
    from choirflow.alerts import report_failure

    report_failure(context)


def default_args(retries: int, retry_delay: timedelta, execution_timeout: timedelta) -> dict:
    """Every choirflow task: owned by choirflow, retried, timed out, failures reported."""
    return {
        "owner": "choirflow",
        "retries": retries,
        "retry_delay": retry_delay,
        "execution_timeout": execution_timeout,
        "on_failure_callback": say_what_failed,
    }


USER_DEFINED_MACROS = {
    "choirflow_delta_jars": delta_jars,
    "choirflow_driver_java_options": driver_java_options,
}


def spark_step(
    task_id: str, day: str, *args: str, step: str | None = None, env: dict | None = None
) -> SparkSubmitOperator:
    """A registered step (choirflow.steps; the task id is the step's name unless `step` says
    otherwise) as a spark-submit of jobs/step.py, holding the warehouse pool. The DAG must
    declare `user_defined_macros=USER_DEFINED_MACROS` for the JARs and JVM options."""
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(STEP_JOB),
        application_args=["--step", step or task_id, "--dt", day, *args],
        conn_id="spark_default",
        jars="{{ choirflow_delta_jars() }}",
        conf={"spark.driver.extraJavaOptions": "{{ choirflow_driver_java_options() }}"},
        name=f"choirflow-{task_id}",
        env_vars={
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            **(env or {}),
        },
        verbose=False,
        pool=WAREHOUSE_POOL,
    )
