"""The one SparkSession factory: Delta configured, local by default, any master by config.

Delta's JARs are fetched from Maven Central once (`fetch_delta_jars`) into the jars folder and
passed with `spark.jars` afterwards, so later sessions start offline.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from choirflow.config import Settings, load_settings

SCALA_BINARY = "2.13"


MAVEN_REPO = os.environ.get("CHOIRFLOW_MAVEN_REPO", "https://repo1.maven.org/maven2")


def _delta_artifacts() -> list[tuple[str, str, str]]:
    """(group, artifact, version) of the two JARs Delta needs beside Spark's own."""
    import pyspark

    major_minor = ".".join(pyspark.__version__.split(".")[:2])
    version = metadata.version("delta-spark")  # the JAR must match the Python API
    return [
        ("io.delta", f"delta-spark_{major_minor}_{SCALA_BINARY}", version),
        ("io.delta", "delta-storage", version),
    ]


def delta_jars(settings: Settings) -> list[str]:
    names = {f"{a}-{v}.jar" for _, a, v in _delta_artifacts()}
    return sorted(str(p) for p in Path(settings.jars_dir).glob("*.jar") if p.name in names)


def fetch_delta_jars(settings: Settings | None = None) -> list[str]:
    """Download Delta's JARs from Maven Central once, checking each against its SHA-1.

    Spark's own Ivy resolution would also pull (older) copies of Hadoop, Jackson and Parquet
    that Spark already ships, and would contact the resolver on every session start.
    """
    settings = settings or load_settings()
    jars_dir = Path(settings.jars_dir)
    jars_dir.mkdir(parents=True, exist_ok=True)
    for group, artifact, version in _delta_artifacts():
        target = jars_dir / f"{artifact}-{version}.jar"
        if target.exists():
            continue
        url = f"{MAVEN_REPO}/{group.replace('.', '/')}/{artifact}/{version}/{target.name}"
        with urllib.request.urlopen(url, timeout=120) as response:
            payload = response.read()
        with urllib.request.urlopen(url + ".sha1", timeout=60) as response:
            expected = response.read().decode().split()[0].strip()
        if hashlib.sha1(payload).hexdigest() != expected:
            raise RuntimeError(f"checksum mismatch for {url}")
        tmp = target.with_suffix(".part")
        tmp.write_bytes(payload)
        tmp.rename(target)
    return delta_jars(settings)


def spark_submit_args(settings: Settings | None = None) -> list[str]:
    """The spark-submit flags that give a job what get_spark() sets in-process."""
    settings = settings or load_settings()
    return [
        "--jars", ",".join(delta_jars(settings)),
        "--master", settings.spark.master,
        "--conf", f"spark.driver.extraJavaOptions={driver_java_options(settings, True)}",
    ]  # fmt: skip


# For small days (the demo's, the tests'; `spark.small_data`): each query costs more to
# compile than to run, and every spark-submit step is a fresh JVM with a cold code-generation
# cache, so interpreted execution is faster there (a cold step about 8 s shorter). Real
# volumes keep codegen.
SMALL_DATA_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}
# A short job on a small day also spends half its time starting the JVM: loading and
# verifying Spark's and Delta's classes, and compiling with C2 code that runs for seconds.
# A dynamic class-data-sharing archive of those classes (written once by `make setup`,
# `write_class_archive`) and, for a JVM that runs one step, C1 alone take a cold session
# with a Delta write, read and MERGE from 32 s to 19 s here (25 s with the archive alone;
# benchmarks/jvm_start.py).
# A long-lived session (the tests', the demo's in-process days) keeps C2: it pays back. The
# JVM ignores an archive it cannot use (another Java, another classpath): a stale one costs
# only its speed.
ONE_STEP_JVM = ("-XX:TieredStopAtLevel=1",)


def class_archive(settings: Settings) -> Path:
    """Where the class-data-sharing archive of this Spark and Delta lives."""
    import pyspark

    delta = metadata.version("delta-spark")
    return Path(settings.jars_dir) / f"classes-spark{pyspark.__version__}-delta{delta}.jsa"


def driver_java_options(settings: Settings, one_step: bool = False) -> str:
    """The driver JVM's options: UTC, the small-data start-up ones (C1 alone for a JVM that
    runs one step: a spark-submit), then the configured ones."""
    options = ["-Duser.timezone=UTC"]
    if settings.spark.small_data:
        if one_step:
            options += ONE_STEP_JVM
        archive = class_archive(settings)
        if archive.exists():
            options.append(f"-XX:SharedArchiveFile={archive}")
    if settings.spark.driver_java_options:
        options.append(settings.spark.driver_java_options)
    return " ".join(options)


def write_class_archive(settings: Settings | None = None) -> Path:
    """Run a short Delta job (write, read, replaceWhere, MERGE, a window) in a fresh JVM that
    dumps the classes it loaded into `class_archive()` at exit."""
    import subprocess

    settings = settings or load_settings()
    archive = class_archive(settings)
    part = archive.with_suffix(".part")
    for stale in (archive, part):  # the warm-up JVM must not start from an old archive
        stale.unlink(missing_ok=True)
    env = os.environ | {
        "CHOIRFLOW__SPARK__SMALL_DATA": "true",
        "CHOIRFLOW__SPARK__DRIVER_JAVA_OPTIONS": f"-XX:ArchiveClassesAtExit={part}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "choirflow.spark", "warm-up"], env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    if done.returncode != 0 or not part.exists():
        raise RuntimeError(f"no class archive written:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    part.rename(archive)
    return archive


def _warm_up(settings: Settings) -> None:
    """The work whose classes the archive holds: what every step does with Delta."""
    import tempfile

    from delta.tables import DeltaTable
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = get_spark(settings)
    with tempfile.TemporaryDirectory(prefix="choirflow-warm-up-") as tmp:
        path = f"{tmp}/table"
        rows = spark.range(5000).select(
            F.col("id").cast("string").alias("user_id"),
            (F.col("id") % 3).cast("string").alias("dt"),
            F.rand(7).alias("x"),
            F.array(F.col("id"), F.col("id") + 1).alias("seq"),
        )
        rows.write.format("delta").partitionBy("dt").save(path)
        table = spark.read.format("delta").load(path)
        window = Window.partitionBy("dt").orderBy("x")
        table.withColumn("rank", F.row_number().over(window)).groupBy("dt").agg(
            F.sum("x"), F.collect_list("user_id")
        ).toPandas()
        table.where("dt = '1'").write.format("delta").mode("overwrite").option(
            "replaceWhere", "dt = '1'"
        ).save(path)
        DeltaTable.forPath(spark, path).alias("t").merge(
            rows.alias("s"), "t.user_id = s.user_id AND t.dt = s.dt"
        ).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
        DeltaTable.forPath(spark, path).history().collect()


def map_batches(
    df: DataFrame,
    run: Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]],
    schema: str,
    rows: int,
    settings: Settings,
) -> DataFrame:
    """`df.mapInPandas(run, schema)`, or, for at most `spark.driver_model_rows` rows (`rows`
    counted by the caller), the same `run` over one batch in the driver: a model `run` loads
    stays loaded there for the process, where each Python worker would load it again."""
    if rows > settings.spark.driver_model_rows:
        parts = max(1, min(df.sparkSession.sparkContext.defaultParallelism, rows // 256 + 1))
        return df.repartition(parts).mapInPandas(run, schema)
    frames = [out for out in run(iter([df.toPandas()])) if len(out)]
    if not frames:
        return df.sparkSession.createDataFrame([], schema)
    return df.sparkSession.createDataFrame(pd.concat(frames, ignore_index=True), schema)


def get_spark(settings: Settings | None = None) -> SparkSession:
    """The process-wide SparkSession (created once, then reused)."""
    settings = settings or load_settings()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Under spark-submit the master and --jars come from the command line (a cluster's
    # choice); in-process we set both ourselves.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    jars = delta_jars(settings)
    if not jars and not submitted:
        raise RuntimeError(
            f"No Delta JARs in {settings.jars_dir}: run `choirflow fetch-jars` (or `make setup`) "
            "once on a machine that reaches Maven Central."
        )
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Executors must run the same interpreter as the driver (the project's virtualenv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.snapshotPartitions": "2",
        # Data-skipping stats on the leading columns only: ids, times and labels, not the
        # long sequence arrays that follow them in gold.samples.
        "spark.databricks.delta.properties.defaults.dataSkippingNumIndexedCols": "12",
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
        "spark.driver.extraJavaOptions": driver_java_options(settings),
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    }
    if not submitted:
        conf["spark.jars"] = ",".join(jars)
    if settings.spark.small_data:
        conf.update(SMALL_DATA_CONF)
    conf.update(settings.spark.conf)
    builder = SparkSession.builder.appName(settings.spark.app_name)
    if not submitted:
        builder = builder.master(settings.spark.master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


if __name__ == "__main__":
    # `python -m choirflow.spark`: fetch the JARs; `... archive`: write the class archive.
    command = sys.argv[1] if len(sys.argv) > 1 else "jars"
    if command == "archive":
        print(write_class_archive())
    elif command == "warm-up":
        _warm_up(load_settings())
    else:
        print("\n".join(fetch_delta_jars()))
