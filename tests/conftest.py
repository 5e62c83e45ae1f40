"""Shared fixtures: one SparkSession per test run, a tiny synthetic world, a temp warehouse.

Environment is set before anything imports Airflow or reads settings, so no test touches the
developer's data/ or ~/airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
_TMP = Path(tempfile.mkdtemp(prefix="choirflow-tests-"))
os.environ.update(
    {
        "CHOIRFLOW_HOME": str(ROOT),
        "CHOIRFLOW__PATHS__RAW": str(_TMP / "world" / "raw"),
        "CHOIRFLOW__PATHS__WAREHOUSE": str(_TMP / "warehouse"),
        "CHOIRFLOW__PATHS__REPORTS": str(_TMP / "reports"),
        "CHOIRFLOW__PATHS__MODELS": str(_TMP / "models"),
        "CHOIRFLOW__SPARK__MASTER": "local[2]",
        "CHOIRFLOW__SPARK__SHUFFLE_PARTITIONS": "2",
        "CHOIRFLOW__SPARK__DRIVER_MEMORY": "2g",
        "AIRFLOW_HOME": str(_TMP / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        # Template profiles in the shared pipeline runs; tests/test_groups.py drives real LLM
        # backends (a loopback OpenAI-compatible server, in-process llama.cpp) on its own copy.
        "CHOIRFLOW__GROUPS__BACKEND": "template",
        "AIRFLOW_CONN_SPARK_DEFAULT": '{"conn_type": "spark", "host": "local[2]"}',
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
)
# Tiny days: interpreted Spark execution and a quick-start JVM (choirflow.spark), in this
# process and in every spark-submit and Airflow task the tests start.
os.environ.setdefault("CHOIRFLOW__SPARK__SMALL_DATA", "true")
# The shared jars folder of the checkout: fetched once by `make setup`.
os.environ.setdefault("CHOIRFLOW__PATHS__JARS", str(ROOT / ".cache" / "jars"))


def runs_reconcile(runs: pd.DataFrame) -> pd.Series:
    """Per bronze.ingest_runs row: raw + released + expired = bronze + quarantined +
    duplicates + pending (released and expired: rows that waited for a parent)."""
    arrived = runs.raw_rows + runs.released_rows + runs.expired_rows
    return arrived == (
        runs.bronze_rows + runs.quarantined_rows + runs.duplicate_rows + runs.pending_rows
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `run_last` wait for work started in the background earlier in the run
    (the Airflow deployment of tests/test_airflow_scheduler.py): they go last."""
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)


def pytest_itemcollected(item: pytest.Item) -> None:
    """The test's xdist group, for `pytest -n 3 --dist loadgroup` (`make test` runs one
    process: README, Timings): the tests
    on the built days share one warehouse that some of them change in turn, so they run on one
    worker; every other module is a group of its own, so its fixtures are built once.

    xdist's scheduler groups by an `@group` suffix of the node id that its worker adds from
    the `xdist_group` mark, but pytest 9.2 keeps the id in `_id`, which xdist 3.8 does not
    set: the suffix is added here (on workers only, where `loadgroup` is set)."""
    on_built_days = {"built", "deployment"} & set(getattr(item, "fixturenames", ()))
    group = "built" if on_built_days else item.path.stem
    item.add_marker(pytest.mark.xdist_group(group))
    if getattr(item.config.option, "loadgroup", False) and "@" not in item.nodeid:
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(f"{item.nodeid}@{group}")


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return _TMP


@pytest.fixture(scope="session")
def settings():
    from choirflow.config import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def spark(settings):
    from choirflow.spark import get_spark

    session = get_spark(settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_world():
    """The tiny preset, generated once and written where settings.paths.raw points."""
    from choirflow.synth.world import PRESETS, generate_world, write_world

    world = generate_world(PRESETS["tiny"])
    write_world(world, _TMP / "world")
    return world


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated SQLite metadata DB in the temp AIRFLOW_HOME, with choirflow's pools."""
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run(
        [str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    pools = subprocess.run(
        [sys.executable, "-m", "choirflow.pools"], capture_output=True, text=True
    )
    assert pools.returncode == 0, pools.stdout[-2000:] + pools.stderr[-2000:]
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session")
def days(tiny_world) -> list[str]:
    start = tiny_world.config.start
    return [str(start.fromordinal(start.toordinal() + d)) for d in range(tiny_world.config.days)]


@pytest.fixture(scope="session")
def built(spark, settings, days):
    """Days 1-3 of the tiny world run in order through the pipeline functions."""
    from choirflow import pipeline

    return [pipeline.run_day(dt, settings) for dt in days[:3]]
