"""jobs/ are real spark-submit entry points: one runs through spark-submit on the tiny world."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.spark


@pytest.mark.unit
@pytest.mark.parametrize("job", sorted(p.name for p in (ROOT / "jobs").glob("*.py")))
def test_every_job_has_a_help(job):
    result = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / job), "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage" in result.stdout


@pytest.mark.unit
def test_the_step_job_takes_only_registered_steps():
    """jobs/step.py offers exactly the registry's steps and refuses the rest before any work."""
    from choirflow.steps import STEPS_BY_NAME

    job = [sys.executable, str(ROOT / "jobs" / "step.py")]
    result = subprocess.run([*job, "--help"], capture_output=True, text=True)
    for name in STEPS_BY_NAME:
        assert name in result.stdout, name
    bogus = subprocess.run([*job, "--step", "features", "--dt", "2026-11-01"],
                           capture_output=True, text=True)  # fmt: skip
    assert bogus.returncode == 2 and "invalid choice: 'features'" in bogus.stderr
    refit = subprocess.run([*job, "--step", "ingest", "--dt", "2026-11-01", "--refit"],
                           capture_output=True, text=True)  # fmt: skip
    assert refit.returncode == 2 and "apply to --step user_groups" in refit.stderr


def test_ingest_job_runs_under_spark_submit(built, spark, settings, days, tmp_path):
    from pyspark.sql import functions as F

    from choirflow import tables
    from choirflow.spark import spark_submit_args

    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [str(spark_submit), *spark_submit_args(settings), str(ROOT / "jobs" / "step.py"),
           "--step", "ingest", "--dt", days[1]]  # fmt: skip
    before = (
        tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == days[1]).count()
    )
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "raw_events" in result.stdout
    after = tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == days[1]).count()
    assert before == after > 0


def test_small_day_jvms_start_from_the_class_archive(spark, settings):
    """`make setup` writes the class-data-sharing archive; the session's JVM maps it and keeps
    C2 (it lives the whole run), while a spark-submit of one step also compiles with C1 only."""
    from choirflow.spark import class_archive, driver_java_options, spark_submit_args

    archive = class_archive(settings)
    assert settings.spark.small_data and archive.exists(), f"no {archive}: run `make setup`"
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    arguments = list(runtime.getInputArguments())
    assert f"-XX:SharedArchiveFile={archive}" in arguments
    assert "-XX:TieredStopAtLevel=1" not in arguments
    one_step = driver_java_options(settings, one_step=True).split()
    assert {f"-XX:SharedArchiveFile={archive}", "-XX:TieredStopAtLevel=1"} <= set(one_step)
    assert f"spark.driver.extraJavaOptions={' '.join(one_step)}" in spark_submit_args(settings)
    big = settings.model_copy(
        update={"spark": settings.spark.model_copy(update={"small_data": False})}
    )
    assert driver_java_options(big, one_step=True) == "-Duser.timezone=UTC"
