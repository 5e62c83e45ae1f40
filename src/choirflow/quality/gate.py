"""The quality gate: run a table's GX suite on a Spark DataFrame, record every result in
quality.results, build Data Docs into the warehouse, and stop the run on a hard failure
with a message that names the table, the expectation, the failing count and examples."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession

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


def validate(
    spark: SparkSession, settings: Settings, df: DataFrame, spec: SuiteSpec, dt: str
) -> GateReport:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    from choirflow.quality.suites import prepare

    name = spec.table.replace(".", "_")
    # One site per day and table: a later gate run never overwrites another's pages.
    docs_dir = str(data_docs_dir(settings, dt) / name)
    context = _context(docs_dir)
    asset = context.data_sources.add_spark(name=f"{name}_src").add_dataframe_asset(name=name)
    batch = asset.add_batch_definition_whole_dataframe(f"{name}_{dt}")
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
            actions=[UpdateDataDocsAction(name="data_docs")],
            result_format=result_format,
        )
    )
    prepared = prepare(df, spec).cache()
    run = checkpoint.run(batch_parameters={"dataframe": prepared})
    suite_result = next(iter(run.run_results.values()))
    results = [_check_result(spec, dt, r) for r in suite_result.results]
    prepared.unpersist()
    index = Path(docs_dir) / "index.html"
    return GateReport(spec.table, dt, results, str(index) if index.exists() else None)


def record(spark: SparkSession, settings: Settings, report: GateReport) -> None:
    df = tables.QUALITY_RESULTS.frame(spark, [asdict(r) for r in report.results])
    predicate = tables.partition(report.dt, table=report.table)
    if not tables.exists(spark, tables.QUALITY_RESULTS, settings):
        df.write.format("delta").partitionBy("dt").save(tables.QUALITY_RESULTS.path(settings))
    else:
        tables.replace_partition(df, tables.QUALITY_RESULTS, settings, predicate)


def gate(
    spark: SparkSession, settings: Settings, df: DataFrame, spec: SuiteSpec, dt: str
) -> dict[str, Any]:
    """Validate, record, and raise QualityGateError on any hard failure."""
    report = validate(spark, settings, df, spec, dt)
    record(spark, settings, report)
    for soft in report.soft_failures:
        step_log(__name__, "quality", dt).warning("%s", soft.describe())
    if report.hard_failures:
        lines = "\n".join("  - " + r.describe() for r in report.hard_failures)
        raise QualityGateError(
            f"quality gate failed for {spec.table} [{dt}]: {len(report.hard_failures)} hard "
            f"check(s) failed; the run stops before training.\n{lines}\n"
            f"Data Docs: {report.data_docs}"
        )
    step_log(__name__, "quality", dt).info(
        "%s: %d checks passed (%d soft warnings)",
        spec.table, len(report.results), len(report.soft_failures),
    )  # fmt: skip
    return {
        "table": spec.table,
        "checks": len(report.results),
        "soft_failures": len(report.soft_failures),
        "data_docs": report.data_docs,
    }
