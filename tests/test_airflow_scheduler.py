"""`airflow backfill create` on choirflow_daily, carried out by a real scheduler.

The other DAG tests use `dag.test()`, which runs tasks in the test process. Here the parts of
a deployment run as their own processes (API server, scheduler with the LocalExecutor, DAG
processor), and a backfill created from the CLI must be picked up, scheduled and finished by
them, beside a choirflow_backfill run of an earlier day: the warehouse pool must keep the two
from writing at the same time. This is the suite's one run of the whole daily chain through
Airflow: it also checks what the chain writes (metrics, samples, groups) and the Asset event
it emits per table.

The deployment has its own metadata DB, warehouse and models (copies taken after the built
days), so it runs in the background while the rest of the suite runs: the first test here
starts it, the last (moved to the end of the run by the `run_last` marker) waits for it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
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


def _deployment_env(home: Path) -> dict[str, str]:
    """The deployment's own metadata DB, warehouse, models and reports under `home`."""
    port = _free_port()
    airflow_home = home / "airflow"
    return os.environ | {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "CHOIRFLOW__PATHS__WAREHOUSE": str(home / "warehouse"),
        "CHOIRFLOW__PATHS__MODELS": str(home / "models"),
        "CHOIRFLOW__PATHS__REPORTS": str(home / "reports"),
        # One core for the deployment's Spark: the rest of the suite runs beside it.
        "AIRFLOW_CONN_SPARK_DEFAULT": '{"conn_type": "spark", "host": "local[1]"}',
        "CHOIRFLOW__SPARK__MASTER": "local[1]",
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


def _query(db: Path, sql: str, *args) -> list[tuple]:
    """Rows of the deployment's metadata DB (SQLite, read-only beside the scheduler); [] while
    the scheduler holds a lock."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as error:
        if "locked" not in str(error):
            raise
        return []


def _last_run_state(db: Path, dag_id: str, run_type: str) -> str | None:
    rows = _query(
        db, "SELECT state FROM dag_run WHERE dag_id = ? AND run_type = ? ORDER BY id DESC LIMIT 1",
        dag_id, run_type,
    )  # fmt: skip
    return rows[0][0] if rows else None


def _warehouse_pool_intervals(db: Path, since: str) -> list[tuple[str, str, str, str]]:
    """Every try (earlier tries live in task_instance_history) started after `since`."""
    from choirflow.pools import WAREHOUSE_POOL

    rows = []
    for query in (
        "SELECT start_date, end_date, dag_id, task_id FROM task_instance "
        "WHERE pool = ? AND start_date >= ?",
        "SELECT start_date, end_date, dag_id, task_id FROM task_instance_history "
        "WHERE pool = ? AND start_date >= ?",
    ):
        rows += _query(db, query, WAREHOUSE_POOL, since)
    return sorted(rows)


@dataclass
class Deployment:
    home: Path
    db: Path
    started: str
    procs: list[subprocess.Popen]
    queued: set[str | None]
    runs: tuple[tuple[str, str], ...] = (
        ("choirflow_daily", "backfill"),
        ("choirflow_backfill", "manual"),
    )


@pytest.fixture(scope="session")
def deployment(built, settings, days, airflow_db, tmp_root):
    """A deployment of its own (copies of the migrated metadata DB with its pools, and of the
    warehouse and models of the built days), given work by the CLI and then started, so the
    rest of the suite runs while its tasks do."""
    home = tmp_root / "deployment"
    (home / "airflow" / "logs").mkdir(parents=True)
    db = home / "airflow" / "airflow.db"
    with sqlite3.connect(airflow_db / "airflow.db") as source, sqlite3.connect(db) as copy:
        source.backup(copy)
    shutil.copytree(settings.warehouse_dir, home / "warehouse")
    shutil.copytree(settings.models_dir, home / "models")
    env = _deployment_env(home)
    # The CLI writes its rows before the deployment starts: with the DAG processor and the
    # scheduler also writing at startup, SQLite's lock can outlast a CLI's 5 s busy timeout.
    # backfill create needs the DAG in the DB; the scheduler starts no run of a paused DAG
    # (new DAGs start paused), and no scheduled run here (USE_JOB_SCHEDULE is off).
    rebuild = {"start": days[2], "end": days[2], "tables": ["features"], "train": False}
    for command in (
        ["dags", "reserialize"],
        ["dags", "unpause", "choirflow_daily"],
        ["dags", "unpause", "choirflow_backfill"],
        ["backfill", "create", "--dag-id", "choirflow_daily", "--from-date", days[3],
         "--to-date", days[3], "--reprocess-behavior", "completed"],
        ["dags", "trigger", "choirflow_backfill", "--conf", json.dumps(rebuild)],
    ):  # fmt: skip
        done = subprocess.run([AIRFLOW, *command], env=env, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stdout[-2000:] + done.stderr[-2000:])
    queued = {_last_run_state(db, *run) for run in Deployment.runs}
    # task instances of the copied DB's dag.test() runs are older
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    procs = []
    for part in ("api-server", "dag-processor", "scheduler"):
        out = (home / f"{part}.log").open("w")
        process = subprocess.Popen([AIRFLOW, part], env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(process)
    yield Deployment(home, db, started, procs, queued)
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def test_backfill_create_queues_a_daily_run_for_the_deployment(deployment):
    """`airflow backfill create` and `dags trigger` queue one run each before the deployment
    starts; its processes come up. The runs are checked at the end of the suite."""
    assert deployment.queued == {"queued"}
    time.sleep(5)
    assert all(p.poll() is None for p in deployment.procs), "a deployment process exited"


@pytest.mark.run_last
def test_backfill_create_is_run_by_the_scheduler(deployment, spark, settings, days):
    from pyspark.sql import functions as F

    from choirflow import tables

    db, runs = deployment.db, deployment.runs
    states, deadline = dict.fromkeys(runs), time.monotonic() + 1800
    while time.monotonic() < deadline and not set(states.values()) <= set(FINISHED):
        states = {run: _last_run_state(db, *run) for run in runs}
        assert all(p.poll() is None for p in deployment.procs), "a deployment process exited"
        time.sleep(10)
    tails = {p.name: p.read_text()[-1500:] for p in deployment.home.glob("*.log")}
    assert set(states.values()) == {"success"}, (states, tails)
    intervals = _warehouse_pool_intervals(db, deployment.started)
    assert {row[2] for row in intervals} == {"choirflow_daily", "choirflow_backfill"}
    for earlier, later in zip(intervals, intervals[1:], strict=False):
        assert earlier[1] <= later[0], f"{earlier[2:]} overlaps {later[2:]}"
    local = settings.model_copy(
        update={"paths": settings.paths.model_copy(
            update={"warehouse": str(deployment.home / "warehouse")}
        )}
    )  # fmt: skip
    day = days[3]
    metrics = tables.read(spark, tables.GOLD_METRICS, local).where(F.col("dt") == day)
    assert metrics.where("metric = 'auc' AND slice = 'all' AND model = 'din'").count() == 1
    samples = tables.read(spark, tables.GOLD_SAMPLES, local).where(F.col("dt") == day)
    assert samples.count() > 1000
    groups = tables.read(spark, tables.SILVER_USER_GROUPS, local).where(F.col("dt") == day)
    users = tables.read_as_of(spark, tables.BRONZE_USER_HISTORY, local, day)
    assert groups.count() == users.count()
    _assert_one_asset_event_per_table(spark, local, db, samples.count())


def _assert_one_asset_event_per_table(spark, settings, db: Path, day_samples: int) -> None:
    """The daily run's Asset events carry each table's Delta version and the day's rows."""
    from choirflow import tables

    events = _query(
        db,
        "SELECT asset.uri, asset_event.extra FROM asset_event "
        "JOIN asset ON asset_event.asset_id = asset.id "
        "WHERE asset_event.source_run_id = (SELECT run_id FROM dag_run WHERE dag_id = ? "
        "AND run_type = 'backfill' ORDER BY id DESC LIMIT 1)",
        "choirflow_daily",
    )
    # Airflow emits an event for every declared outlet; a table not created yet has no extra.
    # gold.samples has a second event, the label correction's, naming the days it changed.
    extras = {uri: json.loads(extra) for uri, extra in events
              if extra and "delta_version" in json.loads(extra)}  # fmt: skip
    corrections = [json.loads(extra)["corrected_days"] for _, extra in events
                   if extra and "corrected_days" in json.loads(extra)]  # fmt: skip
    assert len(corrections) == 1 and all(n > 0 for n in corrections[0].values()), corrections
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
