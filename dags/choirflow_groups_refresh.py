"""choirflow_groups_refresh: weekly refit of the semantic user groups (ChoirRec).

Rebuilds every user's profile inputs, relabels them with the LLM within a larger weekly
budget (param `llm_budget`), fits a new RQ-KMeans codebook version and reassigns every user.
The daily run then assigns codes from the new version to new or changed users only.
Wiring only: the work is the `user_groups` step (jobs/step.py, choirflow.groups).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import CronDataIntervalTimetable, Param, dag
from choirflow_dag_common import USER_DEFINED_MACROS, default_args, spark_step

# The last complete day of the weekly interval, unless a day is given.
DAY = "{{ params.day or (data_interval_end - macros.timedelta(days=1)).strftime('%Y-%m-%d') }}"


@dag(
    dag_id="choirflow_groups_refresh",
    schedule=CronDataIntervalTimetable("0 3 * * 0", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(1, timedelta(minutes=10), timedelta(hours=6)),
    tags=["choirflow", "groups", "weekly"],
    doc_md=__doc__,
    user_defined_macros=USER_DEFINED_MACROS,
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
    spark_step(
        "refit_and_relabel", DAY, "--refit", "--relabel-all", step="user_groups",
        env={"CHOIRFLOW__GROUPS__LLM_BUDGET": "{{ params.llm_budget }}"},
    )  # fmt: skip


choirflow_groups_refresh()
