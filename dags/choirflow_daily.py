"""choirflow_daily: one run per UTC day; each task calls choirflow.pipeline (no logic here).

The data interval [start, end) is the day being processed, so the run for 2026-11-01 starts
after that day has ended.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

DEFAULT_ARGS = {
    "owner": "choirflow",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "execution_timeout": timedelta(hours=2),
}


def _day() -> str:
    """The partition date of this run: the `day` param if given, else its data interval start.

    A manual run with logical date D covers the interval that ends at D, i.e. the day before.
    """
    context = get_current_context()
    return context["params"].get("day") or context["data_interval_start"].strftime("%Y-%m-%d")


@dag(
    dag_id="choirflow_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["choirflow", "daily"],
    doc_md=__doc__,
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
    @task
    def ingest() -> dict:
        from choirflow import pipeline

        return pipeline.ingest(_day())

    @task
    def build_features() -> dict:
        from choirflow import pipeline

        return pipeline.build_features(_day())

    @task
    def train_and_evaluate() -> dict:
        from choirflow import pipeline

        return pipeline.train_and_evaluate(_day())

    ingest() >> build_features() >> train_and_evaluate()


choirflow_daily()
