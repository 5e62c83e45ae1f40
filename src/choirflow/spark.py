"""The one SparkSession factory: Delta configured, local by default, any master by config.

Delta's JARs are resolved from Maven Central once (`fetch_delta_jars`) into the jars folder and
passed with `spark.jars` afterwards, so later sessions start offline: Ivy would otherwise
contact its resolver on every start.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from pyspark.sql import SparkSession

from choirflow.config import Settings, load_settings

SCALA_BINARY = "2.13"


def delta_package() -> str:
    """Maven coordinate of the delta-spark JAR that matches the installed pyspark."""
    import pyspark

    major_minor = ".".join(pyspark.__version__.split(".")[:2])
    delta_version = metadata.version("delta-spark")  # the JAR must match the Python API
    return f"io.delta:delta-spark_{major_minor}_{SCALA_BINARY}:{delta_version}"


# Spark itself ships Hadoop, Jackson, Parquet and log4j; Ivy also resolves (older) copies of
# them as Delta's transitive dependencies. Only Delta's own JARs go on the classpath.
_DELTA_JAR_PREFIXES = ("io.delta_delta-spark", "io.delta_delta-storage")


def delta_jars(settings: Settings) -> list[str]:
    jars_dir = Path(settings.jars_dir)
    return sorted(str(p) for p in jars_dir.glob("*.jar") if p.name.startswith(_DELTA_JAR_PREFIXES))


def fetch_delta_jars(settings: Settings | None = None) -> list[str]:
    """Resolve Delta's JARs with Ivy once and keep them; a no-op when they are already there."""
    settings = settings or load_settings()
    jars = delta_jars(settings)
    if jars:
        return jars
    jars_dir = Path(settings.jars_dir)
    jars_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="choirflow-ivy-") as ivy:
        spark = (
            SparkSession.builder.master("local[1]")
            .appName("choirflow-fetch-jars")
            .config("spark.jars.packages", delta_package())
            .config("spark.jars.ivy", ivy)
            .config("spark.ui.enabled", "false")
            .getOrCreate()
        )
        spark.stop()
        for jar in Path(ivy, "jars").glob("*.jar"):
            if jar.name.startswith(_DELTA_JAR_PREFIXES):
                shutil.copy2(jar, jars_dir / jar.name)
    jars = delta_jars(settings)
    if not any("delta-spark" in j for j in jars):
        raise RuntimeError(f"Delta JARs were not resolved into {jars_dir}")
    return jars


def get_spark(settings: Settings | None = None) -> SparkSession:
    """The process-wide SparkSession (created once, then reused)."""
    settings = settings or load_settings()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    jars = delta_jars(settings)
    if not jars:
        raise RuntimeError(
            f"No Delta JARs in {settings.jars_dir}: run `choirflow fetch-jars` (or `make setup`) "
            "once on a machine that reaches Maven Central."
        )
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Executors must run the same interpreter as the driver (the project's virtualenv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = {
        "spark.jars": ",".join(jars),
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
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    }
    conf.update(settings.spark.conf)
    builder = SparkSession.builder.master(settings.spark.master).appName(settings.spark.app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


if __name__ == "__main__":
    print("\n".join(fetch_delta_jars()))
