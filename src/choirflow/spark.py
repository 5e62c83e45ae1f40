"""The one SparkSession factory: Delta configured, local by default, any master by config.

Delta's JARs are fetched from Maven Central once (`fetch_delta_jars`) into the jars folder and
passed with `spark.jars` afterwards, so later sessions start offline.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from importlib import metadata
from pathlib import Path

from pyspark.sql import SparkSession

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
    return ["--jars", ",".join(delta_jars(settings)), "--master", settings.spark.master]


# For small days (the demo's, the tests'): each query costs more to compile than to run, and
# every spark-submit step is a fresh JVM with a cold code-generation cache, so interpreted
# execution is faster there (a cold step about 8 s shorter). Real volumes keep codegen.
SMALL_DATA_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}


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
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    }
    if not submitted:
        conf["spark.jars"] = ",".join(jars)
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
    print("\n".join(fetch_delta_jars()))
