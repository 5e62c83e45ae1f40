"""choirflow_groups_refresh: weekly refit of the semantic user groups (ChoirRec).

Rebuilds every user's profile inputs, relabels them with the LLM within a larger weekly
budget (param `llm_budget`), fits a new RQ-KMeans codebook version and reassigns every user.
The daily run then assigns codes from the new version to new or changed users only.
Wiring only: the work is jobs/groups.py (choirflow.groups).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import CronDataIntervalTimetable, Param, dag

# choirflow.pools.WAREHOUSE_POOL (one slot): warehouse writers never overlap.
WAREHOUSE_POOL = "choirflow_warehouse"

JOBS = Path(__file__).resolve().parents[1] / "jobs"
# The last complete day of the weekly interval, unless a day is given.
DAY = "{{ params.day or (data_interval_end - macros.timedelta(days=1)).strftime('%Y-%m-%d') }}"


def _delta_jars() -> str:
    from choirflow.config import load_settings
    from choirflow.spark import delta_jars

    return ",".join(delta_jars(load_settings()))


def _say_what_failed(context) -> None:
    from choirflow.alerts import report_failure

    report_failure(context)


@dag(
    dag_id="choirflow_groups_refresh",
    schedule=CronDataIntervalTimetable("0 3 * * 0", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "choirflow",
        "retries": 1,
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=6),
        "on_failure_callback": _say_what_failed,
    },
    tags=["choirflow", "groups", "weekly"],
    doc_md=__doc__,
    user_defined_macros={"choirflow_delta_jars": _delta_jars},
    params={
        "day": Param(
            None, type=["null", "string"], format="date", description="Refit as of this UTC day."
        ),
        "llm_budget": Param(
            200, type="integer", minimum=0, description="LLM calls for this refresh."
        ),
    },
)
def choirflow_groups_refresh():
    SparkSubmitOperator(
        task_id="refit_and_relabel",
        application=str(JOBS / "groups.py"),
        application_args=["--dt", DAY, "--refit", "--relabel-all"],
        conn_id="spark_default",
        jars="{{ choirflow_delta_jars() }}",
        name="choirflow-groups-refresh",
        env_vars={
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "CHOIRFLOW__GROUPS__LLM_BUDGET": "{{ params.llm_budget }}",
        },
        verbose=False,
        pool=WAREHOUSE_POOL,
    )


choirflow_groups_refresh()
