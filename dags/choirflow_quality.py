"""choirflow_quality: freshness, volume and distribution drift across the warehouse tables,
once a day after choirflow_daily's usual finish; results in quality.monitoring and the report.
The steps are choirflow.steps.QUALITY_STEPS."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import CronDataIntervalTimetable, dag, task
from choirflow_dag_common import default_args


def _run(step: str, data_interval_start):
    from choirflow.config import load_settings
    from choirflow.logs import configure
    from choirflow.steps import run_step

    configure()
    return run_step(step, data_interval_start.strftime("%Y-%m-%d"), load_settings())


@dag(
    dag_id="choirflow_quality",
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    default_args=default_args(1, timedelta(minutes=5), timedelta(minutes=30)),
    tags=["choirflow", "quality"],
    doc_md=__doc__,
)
def choirflow_quality():
    @task
    def monitor(data_interval_start=None) -> int:
        results = _run("monitor", data_interval_start)
        return sum(r["status"] == "warn" for r in results)

    @task
    def refresh_report(warnings: int, data_interval_start=None) -> str:
        return _run("refresh_report", data_interval_start)

    refresh_report(monitor())


choirflow_quality()
