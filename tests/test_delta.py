"""Real Delta tables through the one SparkSession: write, replaceWhere, MERGE, time travel."""

import pytest
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import load_settings

pytestmark = pytest.mark.spark


def test_partition_replace_merge_and_time_travel(spark, tmp_path):
    settings = load_settings(environ={"CHOIRFLOW__PATHS__WAREHOUSE": str(tmp_path)})
    table = tables.Table("test", "kv", ("dt",), ("k",))
    rows = [(f"k{i}", i, "2026-11-01" if i < 5 else "2026-11-02") for i in range(10)]
    df = spark.createDataFrame(rows, "k string, v int, dt string")
    tables.replace_partition(df, table, settings, F.col("dt") >= "2026-11-01")
    assert tables.version(spark, table, settings) == 0

    # Overwrite one partition only: the other day stays as it was.
    new_day = spark.createDataFrame([("k0", 100, "2026-11-01")], "k string, v int, dt string")
    tables.replace_partition(new_day, table, settings, tables.partition("2026-11-01"))
    current = tables.read(spark, table, settings)
    assert current.where("dt = '2026-11-01'").count() == 1
    assert current.where("dt = '2026-11-02'").count() == 5

    # Writing outside the predicate is refused (no silent spill into other partitions).
    with pytest.raises(Exception, match="(?i)replaceWhere|predicate|violate"):
        tables.replace_partition(df, table, settings, tables.partition("2026-11-01"))

    # MERGE: update a key, insert a new one.
    upserts = spark.createDataFrame(
        [("k5", 555, "2026-11-02"), ("k99", 99, "2026-11-02")], "k string, v int, dt string"
    )
    tables.merge_upsert(spark, upserts, table, settings)
    merged = {r.k: r.v for r in tables.read(spark, table, settings).collect()}
    assert merged["k5"] == 555 and merged["k99"] == 99 and len(merged) == 7

    # Time travel: version 0 still has the first write.
    first = tables.read(spark, table, settings, version=0)
    assert first.count() == 10
    assert first.where(F.col("k") == "k5").first().v == 5
    # Any Delta reader can open it: it is a plain Delta folder with a log.
    assert (tmp_path / "test" / "kv" / "_delta_log").is_dir()


def test_predicates_are_built_by_spark_not_pasted_into_sql(spark, tmp_path):
    """A value with a quote in it replaces exactly its own rows: the predicate's literals are
    written by Spark, so no value can end the string early and widen the replaced set."""
    settings = load_settings(environ={"CHOIRFLOW__PATHS__WAREHOUSE": str(tmp_path)})
    table = tables.Table("test", "quoted", ("dt",))
    schema = "model string, v int, dt string"
    tricky = "din' OR '1' = '1"
    rows = [("din", 1, "2026-11-01"), (tricky, 2, "2026-11-01"), ("tin", 3, "2026-11-01")]
    tables.replace_partition(
        spark.createDataFrame(rows, schema), table, settings, tables.partition("2026-11-01")
    )
    again = spark.createDataFrame([(tricky, 20, "2026-11-01")], schema)
    condition = tables.partition("2026-11-01", model=tricky)
    assert tables.sql_predicate(again, condition) == (
        "((dt = '2026-11-01') AND (model = 'din\\' OR \\'1\\' = \\'1'))"
    )
    tables.replace_partition(again, table, settings, condition)
    got = {r.model: r.v for r in tables.read(spark, table, settings).collect()}
    assert got == {"din": 1, tricky: 20, "tin": 3}


def test_one_activity_bucket_rule_for_spark_and_numpy(spark):
    """Features (Spark), the synthetic world's summary and the importers (numpy) bucket
    users by one rule, boundaries included."""
    from pyspark.sql import functions as F

    from choirflow.buckets import activity_bucket_array, activity_bucket_column

    clicks = list(range(0, 25))
    df = spark.createDataFrame([(c,) for c in clicks], "clicks int")
    spark_buckets = [
        r.b for r in df.select(activity_bucket_column(F.col("clicks"), 4, 19).alias("b")).collect()
    ]
    assert spark_buckets == list(activity_bucket_array(clicks, 4, 19))
    assert spark_buckets[4] == "low" and spark_buckets[5] == "mid"
    assert spark_buckets[19] == "mid" and spark_buckets[20] == "high"
