"""The gold gate on real samples: clean data passes; a leaked sequence element stops the run
with a message that names the table, the expectation, the failing count and example keys.
GX's pandas engine (small frames) and its Spark engine report the same results."""

import os
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.dates import days_between
from choirflow.quality.gate import (
    CheckResult,
    GateReport,
    QualityGateError,
    _shared_row_checks,
    data_docs_dir,
    data_docs_sites,
    gate,
    record,
    validate_days,
)
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


def _engine_settings(settings, pandas_max_rows: int):
    quality = settings.quality.model_copy(update={"pandas_max_rows": pandas_max_rows})
    return settings.model_copy(update={"quality": quality})


def _comparable(report) -> list[tuple]:
    """A check's outcome without the engine's formatting of observed floats."""
    return sorted(
        (r.expectation, r.column or "", r.success, r.unexpected_count, r.element_count,
         tuple(sorted(r.examples)))
        for r in report.results
    )  # fmt: skip


def test_the_pandas_and_spark_engines_agree_check_by_check(built, spark, settings, days):
    """Two days of samples with a leak and a null on the second: each day's checks (counts,
    outcomes, example keys) are the same whichever engine GX validates on."""
    samples = tables.read(spark, tables.GOLD_SAMPLES, settings).where(
        F.col("dt").isin(days[1], days[2])
    )
    victim = samples.where((F.col("dt") == days[2]) & (F.col("hist_len") > 0)).first().event_id
    broken = samples.withColumn(
        "hist_gap_seconds",
        F.when(
            F.col("event_id") == victim, F.array_append("hist_gap_seconds", F.lit(-5.0))
        ).otherwise(F.col("hist_gap_seconds")),
    ).withColumn(
        "click", F.when(F.col("event_id") == victim, F.lit(None)).otherwise(F.col("click"))
    )
    specs = {dt: gold_samples_suite(50, [], 3.0, (0.005, 0.5)) for dt in days[1:3]}
    on_pandas = validate_days(_engine_settings(settings, 10**9), broken, specs)
    on_spark = validate_days(_engine_settings(settings, 0), broken, specs)
    assert [r.dt for r in on_pandas] == [r.dt for r in on_spark] == days[1:3]
    assert not on_pandas[0].hard_failures
    assert {r.column for r in on_pandas[1].hard_failures} >= {"_min_gap_seconds", "click"}
    for pandas_report, spark_report in zip(on_pandas, on_spark, strict=True):
        assert _comparable(pandas_report) == _comparable(spark_report)
    # One Data Docs site for the gate run, in the range's folder, with a page per day.
    site = on_pandas[0].data_docs
    assert site and site == on_pandas[1].data_docs and Path(site).exists()
    assert Path(site).parent.parent.name == f"{days[1]}_to_{days[2]}"
    pages = {part for p in (Path(site).parent / "validations").rglob("*.html") for part in p.parts}
    assert {f"gold_samples_{dt}" for dt in days[1:3]} <= pages, pages


def test_a_long_range_of_results_is_recorded_in_one_commit(spark, settings):
    """A 215-day chunk's results (MovieLens) replace their own (table, day) rows in one
    commit: a predicate per pair nested too deep for Delta's parser."""
    days = days_between("2099-01-01", "2099-08-03")
    tables_checked = ("test.long_chunk_a", "test.long_chunk_b")

    def reports(success: bool) -> list[GateReport]:
        return [
            GateReport(
                table,
                dt,
                [CheckResult(table, dt, "expect_x", None, "hard", success, 0, 1, None)],
                None,
            )  # fmt: skip
            for table in tables_checked
            for dt in days
        ]

    try:
        record(spark, settings, reports(False))
        record(spark, settings, reports(True))
        recorded = tables.read(spark, tables.QUALITY_RESULTS, settings).where(
            F.col("table").isin(*tables_checked)
        )
        rows = recorded.groupBy("success").count().collect()
        assert [(r["success"], r["count"]) for r in rows] == [(True, 2 * len(days))]
    finally:
        DeltaTable.forPath(spark, tables.QUALITY_RESULTS.path(settings)).delete(
            F.col("table").isin(*tables_checked)
        )


def test_a_range_checks_rows_once_and_records_each_day_as_if_alone(built, spark, settings, days):
    """Row checks every day's suite holds alike run once over the range; each day's recorded
    results are still those of validating that day alone, check by check."""
    samples = tables.read(spark, tables.GOLD_SAMPLES, settings).where(
        F.col("dt").isin(days[1], days[2])
    )
    specs = {dt: gold_samples_suite(50, [], 3.0, (0.005, 0.5)) for dt in days[1:3]}
    shared = {e.expectation_type for e in _shared_row_checks(specs)}
    assert "expect_column_values_to_not_be_null" in shared
    assert not any("unique" in name or "mean" in name for name in shared)
    for engine in (_engine_settings(settings, 10**9), _engine_settings(settings, 0)):
        together = validate_days(engine, samples, specs)
        # The range page is there: the row checks ran once, over both days.
        site = Path(together[0].data_docs).parent
        pages = {part for p in (site / "validations").rglob("*.html") for part in p.parts}
        assert f"gold_samples_{days[1]}_to_{days[2]}" in pages, pages
        alone = [validate_days(engine, samples, {dt: spec})[0] for dt, spec in specs.items()]
        for range_report, day_report in zip(together, alone, strict=True):
            assert not range_report.hard_failures
            assert _comparable(range_report) == _comparable(day_report)


def test_a_day_links_its_own_data_docs_else_the_newest_range_over_it(tmp_path, settings):
    local = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"warehouse": str(tmp_path)})}
    )

    def site(first: str, last: str, table: str, age: int) -> Path:
        index = data_docs_dir(local, first, last) / table / "index.html"
        index.parent.mkdir(parents=True)
        index.write_text("<html></html>")
        os.utime(index, (1_000_000 - age, 1_000_000 - age))
        return index

    old_range = site("2026-01-01", "2026-01-30", "gold_samples", age=30)
    new_range = site("2026-01-10", "2026-01-20", "gold_samples", age=20)
    own_day = site("2026-01-15", "2026-01-15", "gold_samples", age=40)
    events = site("2026-01-01", "2026-01-30", "bronze_events", age=10)
    site("2026-02-01", "2026-02-28", "bronze_users", age=0)
    assert own_day.parent.parent.name == "2026-01-15"
    assert data_docs_sites(local, "2026-01-15") == sorted([own_day, events])
    assert data_docs_sites(local, "2026-01-12") == sorted([new_range, events])
    assert data_docs_sites(local, "2026-01-25") == sorted([old_range, events])
    assert data_docs_sites(local, "2026-03-01") == []
