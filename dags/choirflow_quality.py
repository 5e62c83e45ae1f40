"""choirflow_quality: freshness, volume and distribution drift across the warehouse tables,
once a day after choirflow_daily's usual finish; results in quality.monitoring and the report."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import CronDataIntervalTimetable, dag, task

DEFAULT_ARGS = {
    "owner": "choirflow",
    "retries": 1,
    "retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(minutes=30),
}


@dag(
    dag_id="choirflow_quality",
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["choirflow", "quality"],
    doc_md=__doc__,
)
def choirflow_quality():
    @task
    def monitor(data_interval_start=None) -> int:
        from choirflow import pipeline

        results = pipeline.monitor(data_interval_start.strftime("%Y-%m-%d"))
        return sum(r["status"] == "warn" for r in results)

    @task
    def refresh_report(warnings: int, data_interval_start=None) -> str:
        from choirflow import pipeline

        return pipeline.report(data_interval_start.strftime("%Y-%m-%d"))

    refresh_report(monitor())


choirflow_quality()
