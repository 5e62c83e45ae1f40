"""The quality gate: run a table's GX suite on a Spark DataFrame, record every result in
quality.results, build Data Docs into the warehouse, and stop the run on a hard failure
with a message that names the table, the expectation, the failing count and examples."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field, replace
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.logs import step_log

if TYPE_CHECKING:  # importing Great Expectations takes seconds: only the gates pay it
    from choirflow.quality.suites import SuiteSpec

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def data_docs_dir(settings: Settings, dt: str) -> Path:
    return Path(settings.warehouse_dir) / "_quality" / "data_docs" / dt


class QualityGateError(RuntimeError):
    """A hard check failed: the run stops before training."""


@dataclass
class CheckResult:
    table: str
    dt: str
    expectation: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int | None
    element_count: int | None
    observed: str | None
    examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        where = f" on column {self.column}" if self.column else ""
        count = (
            f"{self.unexpected_count} of {self.element_count} rows fail"
            if self.unexpected_count is not None
            else f"observed {self.observed}"
        )
        examples = f"; examples: {', '.join(self.examples[:5])}" if self.examples else ""
        return f"{self.table} [{self.dt}] {self.expectation}{where}: {count}{examples}"


@dataclass
class GateReport:
    table: str
    dt: str
    results: list[CheckResult]
    data_docs: str | None

    @property
    def hard_failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success and r.severity == "hard"]

    @property
    def soft_failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success and r.severity == "soft"]


def _context(docs_dir: str):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.update_data_docs_site(
        "local_site",
        {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": docs_dir,
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


def _examples(spec: SuiteSpec, raw_result: dict) -> list[str]:
    """Key values of failing rows when GX returns them, else the failing values."""
    index_rows = raw_result.get("partial_unexpected_index_list") or []
    keys = [
        ",".join(f"{k}={row.get(k)}" for k in spec.key if k in row)
        for row in index_rows
        if isinstance(row, dict)
    ]
    keys = [k for k in keys if k]
    if keys:
        return keys[:5]
    return [
        json.dumps(v, default=str) for v in (raw_result.get("partial_unexpected_list") or [])[:5]
    ]


def _check_result(spec: SuiteSpec, dt: str, r) -> CheckResult:
    """One GX expectation result as a row of quality.results (an exception it raised is
    its observed value)."""
    cfg = r.expectation_config
    raw = dict(r.result or {})
    errors = [
        v.get("exception_message")
        for v in (r.exception_info or {}).values()
        if isinstance(v, dict) and v.get("raised_exception")
    ]
    column = (
        cfg.kwargs.get("column")
        or ",".join(str(cfg.kwargs[k]) for k in ("column_A", "column_B") if k in cfg.kwargs)
        or None
    )
    observed = raw.get("observed_value")
    shown = errors[0] if errors else observed
    return CheckResult(
        table=spec.table,
        dt=dt,
        expectation=cfg.type,
        column=column,
        severity=(cfg.meta or {}).get("severity", "hard"),
        success=bool(r.success),
        unexpected_count=raw.get("unexpected_count"),
        element_count=raw.get("element_count"),
        observed=None if shown is None else str(shown),
        examples=_examples(spec, raw),
    )


def _columns_read(df: DataFrame, spec: SuiteSpec, day_column: str) -> list[str]:
    """The columns the suite's expectations and examples read (so a small frame copied to
    pandas leaves out the arrays that only its derived columns summarise)."""
    wanted = {day_column, *spec.key}
    for expectation in spec.expectations:
        kwargs = expectation.configuration.kwargs
        wanted.update(kwargs.get(k) for k in ("column", "column_A", "column_B") if k in kwargs)
        wanted.update(kwargs.get("column_list") or ())
    return [c for c in df.columns if c in wanted]


def _run_checkpoint(
    settings: Settings, frame: Any, spec: SuiteSpec, dt: str, last_day: bool
) -> GateReport:
    """One GX checkpoint over one day's frame: a pandas DataFrame (GX's pandas engine) or a
    Spark DataFrame (GX's Spark engine); the suite and the results are the same.

    Data Docs are built for the last day of a gate run and for any day with a failing
    check: a backfill's passing days are in quality.results, without a second of HTML
    rendering each."""
    import great_expectations as gx

    name = spec.table.replace(".", "_")
    # One site per day and table: a later gate run never overwrites another's pages.
    docs_dir = str(data_docs_dir(settings, dt) / name)
    context = _context(docs_dir)
    sources = context.data_sources
    source = (
        sources.add_spark(name=f"{name}_src")
        if isinstance(frame, DataFrame)
        else sources.add_pandas(name=f"{name}_src")
    )
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(
        f"{name}_{dt}"
    )
    # GX binds an expectation to one suite: give each run its own copies.
    expectations = [copy.copy(e) for e in spec.expectations]
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name}_{dt}", data=batch, suite=suite)
    )
    result_format = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": 5,
        "unexpected_index_column_names": list(spec.key),
    }
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{name}_gate",
            validation_definitions=[definition],
            result_format=result_format,
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    suite_result = next(iter(run.run_results.values()))
    results = [_check_result(spec, dt, r) for r in suite_result.results]
    if last_day or not all(r.success for r in results):
        context.build_data_docs()
    index = Path(docs_dir) / "index.html"
    return GateReport(spec.table, dt, results, str(index) if index.exists() else None)


def validate_days(
    settings: Settings,
    df: DataFrame,
    specs: dict[str, SuiteSpec],
    day_column: str = "dt",
) -> list[GateReport]:
    """Each day's suite (`specs`, by day) on that day's rows of df (`day_column` == day).

    A frame of at most `quality.pandas_max_rows` rows is read from Spark once and each day
    validated on GX's pandas engine (a tiny day costs GX's Spark engine a Spark job per
    metric, seconds per check); a larger one is validated day by day on the Spark engine.
    """
    from choirflow.quality.suites import prepare

    first = next(iter(specs.values()))  # every day's suite derives the same columns
    prepared = prepare(df, first)
    read = {c for spec in specs.values() for c in _columns_read(prepared, spec, day_column)}
    prepared = prepared.select(*[c for c in prepared.columns if c in read])
    last = max(specs)
    limit = settings.quality.pandas_max_rows
    local = prepared.limit(limit + 1).toPandas()  # one Spark job for a small frame
    if len(local) <= limit:
        return [
            _run_checkpoint(
                settings,
                local[local[day_column] == dt].reset_index(drop=True),
                spec,
                dt,
                last_day=dt == last,
            )  # fmt: skip
            for dt, spec in specs.items()
        ]
    del local
    prepared = prepared.cache()
    reports = [
        _run_checkpoint(
            settings, prepared.where(F.col(day_column) == dt), spec, dt, last_day=dt == last
        )
        for dt, spec in specs.items()
    ]
    prepared.unpersist()
    return reports


def validate_states(
    settings: Settings,
    df: DataFrame,
    spec: SuiteSpec,
    days: list[str],
    changed: set[str],
    day_column: str,
) -> list[GateReport]:
    """The suite on a state that changes only on some days (a catalogue as of each day):
    validated on the first day and on each day in `changed`; every other day gets the
    results of the last validated day before it, which checked the same rows, so
    quality.results still holds every day (a long backfill skips one GX run per unchanged
    day and table)."""
    checked = sorted({days[0], *(d for d in changed if days[0] < d <= days[-1])})
    frame = df.where(F.col(day_column).isin(checked))
    validated = {r.dt: r for r in validate_days(settings, frame, dict.fromkeys(checked, spec),
                                                 day_column)}  # fmt: skip
    reports, last = [], validated[days[0]]
    for dt in days:
        last = validated.get(dt, last)
        results = [replace(r, dt=dt) for r in last.results]
        reports.append(last if last.dt == dt else replace(last, dt=dt, results=results))
    return reports


def record(spark: SparkSession, settings: Settings, reports: list[GateReport]) -> None:
    """The reports' results in quality.results, replacing each (day, table) they cover, in
    one commit."""
    rows = [asdict(r) for report in reports for r in report.results]
    df = tables.QUALITY_RESULTS.frame(spark, rows)
    if not tables.exists(spark, tables.QUALITY_RESULTS, settings):
        df.write.format("delta").partitionBy("dt").save(tables.QUALITY_RESULTS.path(settings))
        return
    covered = sorted({(report.dt, report.table) for report in reports})
    predicate = reduce(
        lambda a, b: a | b, (tables.partition(dt, table=table) for dt, table in covered)
    )
    tables.replace_partition(df, tables.QUALITY_RESULTS, settings, predicate)


def gate_days(
    spark: SparkSession,
    settings: Settings,
    df: DataFrame,
    specs: dict[str, SuiteSpec],
    day_column: str = "dt",
) -> list[dict[str, Any]]:
    """Validate each day, record every day's results, and raise QualityGateError naming each
    day with a hard failure."""
    return conclude(spark, settings, validate_days(settings, df, specs, day_column))


def conclude(spark: SparkSession, settings: Settings, reports: list[GateReport]) -> list[dict]:
    """Record the reports in one commit, log them, and raise QualityGateError naming each
    table and day with a hard failure (the message the daily run shows)."""
    record(spark, settings, reports)
    failed = []
    for report in reports:
        log = step_log(__name__, "quality", report.dt)
        for soft in report.soft_failures:
            log.warning("%s", soft.describe())
        if report.hard_failures:
            failed.append(report)
        else:
            log.info(
                "%s: %d checks passed (%d soft warnings)",
                report.table, len(report.results), len(report.soft_failures),
            )  # fmt: skip
    if failed:
        raise QualityGateError("\n".join(_failure_message(report) for report in failed))
    return [
        {
            "table": report.table,
            "dt": report.dt,
            "checks": len(report.results),
            "soft_failures": len(report.soft_failures),
            "data_docs": report.data_docs,
        }
        for report in reports
    ]


def _failure_message(report: GateReport) -> str:
    lines = "\n".join("  - " + r.describe() for r in report.hard_failures)
    return (
        f"quality gate failed for {report.table} [{report.dt}]: {len(report.hard_failures)} "
        f"hard check(s) failed; the run stops before training.\n{lines}\n"
        f"Data Docs: {report.data_docs}"
    )


def gate(
    spark: SparkSession, settings: Settings, df: DataFrame, spec: SuiteSpec, dt: str
) -> dict[str, Any]:
    """The suite on all of df as day dt: validate, record, and raise QualityGateError on any
    hard failure."""
    frame = df.withColumn("_gate_day", F.lit(dt))
    return gate_days(spark, settings, frame, {dt: spec}, "_gate_day")[0]
