"""The gold gate on real samples: clean data passes; a leaked sequence element stops the run
with a message that names the table, the expectation, the failing count and example keys."""

import pytest
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.quality.gate import QualityGateError, gate
from choirflow.quality.suites import gold_samples_suite

pytestmark = pytest.mark.spark


def test_a_leak_in_gold_samples_fails_the_gate_with_examples(built, spark, settings, days):
    samples = tables.read(spark, tables.GOLD_SAMPLES, settings).where(F.col("dt") == days[2])
    spec = gold_samples_suite(50, [], 3.0, (0.005, 0.5))
    assert gate(spark, settings, samples, spec, "clean-check")["checks"] > 10
    victim = samples.where(F.col("hist_len") > 0).first().event_id
    leaked = samples.withColumn(
        "hist_gap_seconds",
        F.when(
            F.col("event_id") == victim, F.array_append("hist_gap_seconds", F.lit(-5.0))
        ).otherwise(F.col("hist_gap_seconds")),
    )
    with pytest.raises(QualityGateError) as failure:
        gate(spark, settings, leaked, spec, "leak-check")
    message = str(failure.value)
    assert "gold.samples" in message and "expect_column_values_to_be_between" in message
    assert "_min_gap_seconds: 1 of" in message
    assert f"event_id={victim}" in message
    recorded = tables.read(spark, tables.QUALITY_RESULTS, settings).where(
        F.col("dt") == "leak-check"
    )
    assert recorded.where(~F.col("success")).count() >= 1
