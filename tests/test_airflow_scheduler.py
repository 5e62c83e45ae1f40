"""`airflow backfill create` on choirflow_daily, carried out by a real scheduler.

The other DAG tests use `dag.test()`, which runs tasks in the test process. Here the parts of
a deployment run as their own processes (API server, scheduler with the LocalExecutor, DAG
processor) on the test's SQLite metadata DB, and a backfill created from the CLI must be
picked up, scheduled and finished by them, beside a choirflow_backfill run of an earlier day:
the warehouse pool must keep the two from writing at the same time. This is the suite's one
run of the whole daily chain through Airflow: it also checks what the chain writes (metrics,
samples, groups) and the Asset event it emits per table.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
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
        # The DAGs are serialized before the deployment starts: parsing them again every
        # 30 s (the default) only takes CPU from the tasks on this 2-core machine.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
    }


def _last_run_state(dag_id: str, run_type: str) -> str | None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy.exc import OperationalError

    try:
        with create_session() as session:
            run = (
                session.query(DagRun)
                .filter(DagRun.dag_id == dag_id, DagRun.run_type == run_type)
                .order_by(DagRun.id.desc())
                .first()
            )
            return None if run is None else str(getattr(run.state, "value", run.state))
    except OperationalError as error:  # SQLite busy with the scheduler's writes: ask again later
        if "database is locked" not in str(error):
            raise
        return None


def _warehouse_pool_intervals(since: datetime) -> list[tuple[datetime, datetime, str, str]]:
    """Every try (earlier tries live in task_instance_history) started after `since`."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session

    from choirflow.pools import WAREHOUSE_POOL

    rows = []
    with create_session() as session:
        for ti in (TaskInstance, TaskInstanceHistory):
            rows += (
                session.query(ti.start_date, ti.end_date, ti.dag_id, ti.task_id)
                .filter(ti.pool == WAREHOUSE_POOL, ti.start_date >= since)
                .all()
            )
    return sorted(tuple(r) for r in rows)


def test_backfill_create_is_run_by_the_scheduler(built, spark, settings, days, airflow_db):
    from pyspark.sql import functions as F

    from choirflow import tables

    day = days[3]
    env = _deployment_env()
    logs = airflow_db / "deployment-logs"
    logs.mkdir(exist_ok=True)
    # The CLI writes its rows before the deployment starts: with the DAG processor and the
    # scheduler also writing at startup, SQLite's lock can outlast a CLI's 5 s busy timeout.
    # backfill create needs the DAG in the DB; the scheduler starts no run of a paused DAG
    # (new DAGs start paused), and no scheduled run here (USE_JOB_SCHEDULE is off).
    rebuild = {"start": days[2], "end": days[2], "tables": ["features"], "train": False}
    for command in (
        ["dags", "reserialize"],
        ["dags", "unpause", "choirflow_daily"],
        ["dags", "unpause", "choirflow_backfill"],
        ["backfill", "create", "--dag-id", "choirflow_daily", "--from-date", day,
         "--to-date", day, "--reprocess-behavior", "completed"],
        ["dags", "trigger", "choirflow_backfill", "--conf", json.dumps(rebuild)],
    ):  # fmt: skip
        done = subprocess.run([AIRFLOW, *command], env=env, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stdout[-2000:] + done.stderr[-2000:])
    runs = {("choirflow_daily", "backfill"), ("choirflow_backfill", "manual")}
    assert {_last_run_state(*run) for run in runs} == {"queued"}
    started = datetime.now(UTC)  # task instances of other tests' dag.test() runs are older
    procs = []
    try:
        for part in ("api-server", "dag-processor", "scheduler"):
            out = (logs / f"{part}.log").open("w")
            procs.append(
                subprocess.Popen([AIRFLOW, part], env=env, stdout=out, stderr=subprocess.STDOUT)
            )
        states, deadline = dict.fromkeys(runs), time.monotonic() + 1500
        while time.monotonic() < deadline and not set(states.values()) <= set(FINISHED):
            time.sleep(10)
            states = {run: _last_run_state(*run) for run in runs}
            assert all(p.poll() is None for p in procs), "a deployment process exited"
        if None in states.values():  # the last poll met a locked DB
            time.sleep(10)
            states = {run: _last_run_state(*run) for run in runs}
        tails = {p.name: p.read_text()[-1500:] for p in logs.glob("*.log")}
        assert set(states.values()) == {"success"}, (states, tails)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    intervals = _warehouse_pool_intervals(started)
    assert {row[2] for row in intervals} == {"choirflow_daily", "choirflow_backfill"}
    for earlier, later in zip(intervals, intervals[1:], strict=False):
        assert earlier[1] <= later[0], f"{earlier[2:]} overlaps {later[2:]}"
    metrics = tables.read(spark, tables.GOLD_METRICS, settings).where(F.col("dt") == day)
    assert metrics.where("metric = 'auc' AND slice = 'all' AND model = 'din'").count() == 1
    samples = tables.read(spark, tables.GOLD_SAMPLES, settings).where(F.col("dt") == day)
    assert samples.count() > 1000
    groups = tables.read(spark, tables.SILVER_USER_GROUPS, settings).where(F.col("dt") == day)
    users = tables.read_as_of(spark, tables.BRONZE_USER_HISTORY, settings, day)
    assert groups.count() == users.count()
    _assert_one_asset_event_per_table(spark, settings, samples.count())


def _assert_one_asset_event_per_table(spark, settings, day_samples: int) -> None:
    """The daily run's Asset events carry each table's Delta version and the day's rows."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from choirflow import tables

    with create_session() as session:
        run_id = (
            session.query(DagRun.run_id)
            .filter(DagRun.dag_id == "choirflow_daily", DagRun.run_type == "backfill")
            .order_by(DagRun.id.desc())
            .first()[0]
        )
        events = (
            session.query(AssetModel.uri, AssetEvent.extra)
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetEvent.source_run_id == run_id)
            .all()
        )
    # Airflow emits an event for every declared outlet; a table not created yet has no extra.
    extras = {uri: extra for uri, extra in events if extra}
    sample_event = extras["choirflow://warehouse/gold/samples"]
    assert sample_event["rows"] == day_samples
    assert sample_event["delta_version"] == tables.version(spark, tables.GOLD_SAMPLES, settings)
    existing = {
        f"choirflow://warehouse/{t.layer}/{t.name}"
        for t in tables.ALL_TABLES
        if tables.exists(spark, t, settings)
    }
    assert existing <= set(extras)
    assert all({"delta_version", "rows", "partition", "path"} <= set(e) for e in extras.values())
