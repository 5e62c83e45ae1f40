"""`airflow backfill create` on choirflow_daily, carried out by a real scheduler.

The other DAG tests use `dag.test()`, which runs tasks in the test process. Here the parts of
a deployment run as their own processes (API server, scheduler with the LocalExecutor, DAG
processor) on the test's SQLite metadata DB, and a backfill created from the CLI must be
picked up, scheduled and finished by them.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

AIRFLOW = str(Path(sys.executable).parent / "airflow")
FINISHED = ("success", "failed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deployment_env() -> dict[str, str]:
    port = _free_port()
    return os.environ | {
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        # Only the backfill's runs: no run for "yesterday" of the wall clock.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    }


def _backfill_run_state(dag_id: str) -> str | None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = (
            session.query(DagRun)
            .filter(DagRun.dag_id == dag_id, DagRun.run_type == "backfill")
            .order_by(DagRun.id.desc())
            .first()
        )
        return None if run is None else str(getattr(run.state, "value", run.state))


def test_backfill_create_is_run_by_the_scheduler(built, spark, settings, days, airflow_db):
    from pyspark.sql import functions as F

    from choirflow import tables

    day = days[3]
    env = _deployment_env()
    logs = airflow_db / "deployment-logs"
    logs.mkdir(exist_ok=True)
    procs = []
    try:
        for part in ("api-server", "dag-processor", "scheduler"):
            out = (logs / f"{part}.log").open("w")
            procs.append(
                subprocess.Popen([AIRFLOW, part], env=env, stdout=out, stderr=subprocess.STDOUT)
            )
        # backfill create needs the DAG in the DB; the scheduler starts no run of a paused DAG
        # (new DAGs start paused), and no scheduled run here (USE_JOB_SCHEDULE is off).
        for command in (["dags", "reserialize"], ["dags", "unpause", "choirflow_daily"]):
            subprocess.run([AIRFLOW, *command], env=env, capture_output=True, check=True)
        created = subprocess.run(
            [AIRFLOW, "backfill", "create", "--dag-id", "choirflow_daily", "--from-date", day,
             "--to-date", day, "--reprocess-behavior", "completed"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
        state, deadline = None, time.monotonic() + 1200
        while time.monotonic() < deadline and state not in FINISHED:
            time.sleep(10)
            state = _backfill_run_state("choirflow_daily")
            assert all(p.poll() is None for p in procs), "a deployment process exited"
        tails = {p.name: p.read_text()[-1500:] for p in logs.glob("*.log")}
        assert state == "success", tails
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    metrics = tables.read(spark, tables.GOLD_METRICS, settings).where(F.col("dt") == day)
    assert metrics.where("metric = 'auc' AND slice = 'all'").count() >= 1
