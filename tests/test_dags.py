"""Real Airflow: the DAG folder parses cleanly under policy, and choirflow_daily runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.airflow

DAGS = Path(__file__).resolve().parents[1] / "dags"


def _bundle_dagbag(path: Path):
    """The DAG folder parsed as Airflow's CLI, DAG processor and task runner parse it: as a
    bundle whose folder is on sys.path (the DAG files import choirflow_dag_common)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(path), bundle_path=DAGS)


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    return _bundle_dagbag(DAGS)


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "choirflow_daily" in dagbag.dags


def test_policy_tags_owner_retries_timeouts(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert "choirflow" in dag.tags, dag_id
        for task in dag.tasks:
            assert task.owner == "choirflow", task.task_id
            assert task.retries >= 1, task.task_id
            assert task.execution_timeout is not None, task.task_id


def test_daily_schedule_is_a_utc_data_interval(dagbag):
    dag = dagbag.dags["choirflow_daily"]
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert str(dag.timezone) in ("UTC", "Timezone('UTC')")
    order = [t.task_id for t in dag.topological_sort()]
    assert order[0] == "ingest"
    assert order.index("train_and_evaluate") < order.index("promote") < order.index("report")
    assert order.index("user_features") < order.index("user_groups") < order.index("samples")
    # Quality gates sit before training: bronze after ingest, gold after the samples.
    assert order.index("bronze_quality_gate") < order.index("behaviors")
    assert (
        order.index("samples")
        < order.index("gold_quality_gate")
        < order.index("train_and_evaluate")
    )
    assert all(t.on_failure_callback for t in dag.tasks)


def test_daily_dag_follows_the_step_registry(dagbag):
    """Every registered daily step is a task of choirflow_daily waiting on exactly the steps
    the registry names, and no task is outside the registry; Spark steps run jobs/step.py
    with their own step name; the steps that hold the writer lock outside Airflow are those
    that hold the warehouse pool inside it. The same for choirflow_quality."""
    from choirflow.pools import WAREHOUSE_POOL
    from choirflow.steps import DAILY_STEPS, QUALITY_STEPS

    for dag_id, registry in (
        ("choirflow_daily", DAILY_STEPS),
        ("choirflow_quality", QUALITY_STEPS),
    ):
        dag = dagbag.dags[dag_id]
        assert {t.task_id for t in dag.tasks} == {s.name for s in registry}, dag_id
        for step in registry:
            task = dag.get_task(step.name)
            assert task.upstream_task_ids == set(step.after), (dag_id, step.name)
            assert (task.pool == WAREHOUSE_POOL) == step.exclusive, (dag_id, step.name)
            if hasattr(task, "application"):
                assert task.application.endswith("jobs/step.py"), step.name
                args = task.application_args
                assert args[args.index("--step") + 1] == step.name


def test_training_queue_and_pool_come_from_the_environment(airflow_db, monkeypatch):
    """A deployment routes training to its GPU workers by environment (docker/compose.yaml's
    trainer listens on the queue the compose file sets): only the training task moves."""
    import yaml

    compose = yaml.safe_load((DAGS.parent / "docker" / "compose.yaml").read_text())
    queue = compose["services"]["trainer"]["environment"]["CHOIRFLOW_TRAIN_QUEUE"]
    monkeypatch.setenv("CHOIRFLOW_TRAIN_QUEUE", queue)
    monkeypatch.setenv("CHOIRFLOW_TRAIN_POOL", "gpu_training")
    dag = _bundle_dagbag(DAGS / "choirflow_daily.py").dags["choirflow_daily"]
    train = dag.get_task("train_and_evaluate")
    assert (train.queue, train.pool) == (queue, "gpu_training")
    others = {(t.queue, t.pool) for t in dag.tasks if t.task_id != "train_and_evaluate"}
    assert queue not in {q for q, _ in others} and "gpu_training" not in {p for _, p in others}


def test_warehouse_writers_share_one_pool(dagbag):
    """The daily steps, the backfill and the group refresh never write at the same time."""
    import sys

    from airflow.models.pool import Pool

    from choirflow.pools import WAREHOUSE_POOL, WAREHOUSE_POOL_SLOTS

    common = sys.modules["choirflow_dag_common"]  # imported by the DAG files parsed above
    assert common.WAREHOUSE_POOL == WAREHOUSE_POOL

    own_pool_or_no_table_writes = {"train_and_evaluate", "report", "publish_assets"}
    for dag_id in ("choirflow_daily", "choirflow_backfill", "choirflow_groups_refresh"):
        for task in dagbag.dags[dag_id].tasks:
            if task.task_id not in own_pool_or_no_table_writes:
                assert task.pool == WAREHOUSE_POOL, (dag_id, task.task_id, task.pool)
                assert task.pool_slots == 1, (dag_id, task.task_id)
    pool = Pool.get_pool(WAREHOUSE_POOL)  # created with the metadata DB (choirflow.pools)
    assert pool is not None and pool.slots == WAREHOUSE_POOL_SLOTS == 1


# The one module the DAG files share; it follows the same policy (tested below).
DAG_COMMON = "choirflow_dag_common"


def test_dag_files_do_no_work_at_import():
    """Thin DAG files: only airflow, stdlib and the shared DAG module at module level, no
    choirflow, Spark or torch, and no I/O."""
    heavy = ("choirflow", "pyspark", "torch")
    for path in DAGS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                module = module or ""
                top = module.split(".")[0]
                assert top == DAG_COMMON or top not in heavy, (path.name, module)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                assert isinstance(node.value.func, ast.Name), ast.dump(node)


def test_one_asset_per_warehouse_table(dagbag):
    from choirflow import tables

    task = dagbag.dags["choirflow_daily"].get_task("publish_assets")
    uris = {a.uri for a in task.outlets}
    assert uris == {f"choirflow://warehouse/{t.layer}/{t.name}" for t in tables.ALL_TABLES}


def test_groups_refresh_fits_a_new_codebook_and_recodes_everyone(
    dagbag, built, spark, settings, days
):
    from pyspark.sql import functions as F

    from choirflow import tables

    def versions():
        books = tables.read(spark, tables.SILVER_GROUP_CODEBOOKS, settings)
        return {r[0] for r in books.select("codebook_version").distinct().collect()}

    before = versions()
    run = dagbag.dags["choirflow_groups_refresh"].test(run_conf={"day": days[2], "llm_budget": 0})
    assert run.state == "success", [(t.task_id, t.state) for t in run.get_task_instances()]
    new = versions() - before
    assert len(new) == 1
    groups = tables.read(spark, tables.SILVER_USER_GROUPS, settings).where(F.col("dt") == days[2])
    assert {r[0] for r in groups.select("codebook_version").distinct().collect()} == new
    assert groups.where(F.col("assigned_dt") != days[2]).count() == 0


def test_the_dag_suite_is_there_with_typed_params(dagbag):
    assert {
        "choirflow_daily",
        "choirflow_quality",
        "choirflow_backfill",
        "choirflow_groups_refresh",
    } <= set(dagbag.dags)
    refresh = dagbag.dags["choirflow_groups_refresh"]
    assert refresh.timetable.expression == "0 3 * * 0"  # weekly
    assert {"day", "llm_budget"} <= set(refresh.params.keys())
    backfill = dagbag.dags["choirflow_backfill"]
    assert type(backfill.timetable).__name__ == "NullTimetable"  # on demand only
    params = backfill.params
    assert {"start", "end", "tables", "train"} <= set(params.keys())


def test_airflow_backfill_create_plans_one_daily_run_per_day(dagbag, airflow_db):  # noqa: ARG001
    """`airflow backfill create` on choirflow_daily: logical date D covers the interval
    [D, D+1), so the runs it plans process exactly the days asked for."""
    import os
    import subprocess
    import sys

    airflow = str(Path(sys.executable).parent / "airflow")
    env = os.environ.copy()
    subprocess.run([airflow, "dags", "reserialize"], env=env, capture_output=True, check=True)
    result = subprocess.run(
        [airflow, "backfill", "create", "--dag-id", "choirflow_daily", "--from-date",
         "2026-11-20", "--to-date", "2026-11-22", "--dry-run"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    planned = [d for d in ("2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23")
               if f"{d} 00:00:00+00:00" in result.stdout]  # fmt: skip
    # For a data-interval timetable a backfill run's logical date is the start of its interval,
    # which is the day DAY renders: the three runs process exactly these three days.
    assert planned == ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert "data_interval_start" in str(
        dagbag.dags["choirflow_daily"].get_task("ingest").application_args
    )
