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


def data_docs_dir(settings: Settings, first: str, last: str | None = None) -> Path:
    """The Data Docs of a gate run over [first, last]: `<day>` for one day, else
    `<first>_to_<last>` (a build deletes the pages it did not write, so runs over other
    days must not share a folder)."""
    name = first if last in (None, first) else f"{first}_to_{last}"
    return Path(settings.warehouse_dir) / "_quality" / "data_docs" / name


def data_docs_sites(settings: Settings, dt: str) -> list[Path]:
    """Per table, the Data Docs index that holds day dt: its own day's gate run, else the
    newest range's run over it."""
    found: dict[str, Path] = {}
    root = Path(settings.warehouse_dir) / "_quality" / "data_docs"
    for index in sorted(root.glob("*/*/index.html"), key=lambda p: p.stat().st_mtime):
        folder, table = index.parent.parent.name, index.parent.name
        first, _, last = folder.partition("_to_")
        if not first <= dt <= (last or first):
            continue
        if table not in found or found[table].parent.parent.name != dt:
            found[table] = index
    return sorted(found.values())


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


def _column_of(cfg) -> str | None:
    return (
        cfg.kwargs.get("column")
        or ",".join(str(cfg.kwargs[k]) for k in ("column_A", "column_B") if k in cfg.kwargs)
        or None
    )


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
    observed = raw.get("observed_value")
    shown = errors[0] if errors else observed
    return CheckResult(
        table=spec.table,
        dt=dt,
        expectation=cfg.type,
        column=_column_of(cfg),
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


class _Validations:
    """One GX context for a gate run over one table's days: each day validated against its
    own suite, then one Data Docs build with a page per day.

    A context per day paid GX's setup and, in each Data Docs build, the compilation of every
    page template again: most of a small day's gate time. The site lives in the folder of
    the run's span (data_docs_dir)."""

    def __init__(self, settings: Settings, table: str, span: tuple[str, str]) -> None:
        self.name = table.replace(".", "_")
        self.docs_dir = data_docs_dir(settings, *span) / self.name
        self.context = _context(str(self.docs_dir))
        self._sources: dict[bool, Any] = {}

    def run(self, frame: Any, spec: SuiteSpec, dt: str) -> GateReport:
        """One day's suite on its frame: a pandas DataFrame (GX's pandas engine) or a Spark
        DataFrame (GX's Spark engine); the suite and the results are the same."""
        import great_expectations as gx

        on_spark = isinstance(frame, DataFrame)
        if on_spark not in self._sources:
            sources = self.context.data_sources
            add = sources.add_spark if on_spark else sources.add_pandas
            self._sources[on_spark] = add(name=f"{self.name}_{'spark' if on_spark else 'pandas'}")
        batch = (
            self._sources[on_spark]
            .add_dataframe_asset(name=f"{self.name}_{dt}")
            .add_batch_definition_whole_dataframe(f"{self.name}_{dt}")
        )
        # GX binds an expectation to one suite: give each day its own copies.
        expectations = [copy.copy(e) for e in spec.expectations]
        suite = self.context.suites.add(
            gx.ExpectationSuite(name=f"{self.name}_{dt}", expectations=expectations)
        )
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{self.name}_{dt}", data=batch, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": 5,
                "unexpected_index_column_names": list(spec.key),
            },
        )
        results = [_check_result(spec, dt, r) for r in result.results]
        return GateReport(spec.table, dt, results, None)

    def publish(self, reports: list[GateReport]) -> list[GateReport]:
        """Build the site once and point every report at its index."""
        self.context.build_data_docs()
        index = self.docs_dir / "index.html"
        site = str(index) if index.exists() else None
        return [replace(report, data_docs=site) for report in reports]


def validate_days(
    settings: Settings,
    df: DataFrame,
    specs: dict[str, SuiteSpec],
    day_column: str = "dt",
    span: tuple[str, str] | None = None,
) -> list[GateReport]:
    """Each day's suite (`specs`, by day) on that day's rows of df (`day_column` == day);
    Data Docs in the folder of `span` (default: the specs' first and last day).

    A frame of at most `quality.pandas_max_rows` rows is read from Spark once and each day
    validated on GX's pandas engine (a tiny day costs GX's Spark engine a Spark job per
    metric, seconds per check); a larger one is validated day by day on the Spark engine.
    The row checks every day's suite holds alike run once over all the days
    (_shared_row_checks); each day's results are still those of validating it alone.
    """
    from choirflow.quality.suites import prepare

    first = next(iter(specs.values()))  # every day's suite derives the same columns
    prepared = prepare(df, first)
    read = {c for spec in specs.values() for c in _columns_read(prepared, spec, day_column)}
    prepared = prepared.select(*[c for c in prepared.columns if c in read])
    validations = _Validations(settings, first.table, span or (min(specs), max(specs)))
    limit = settings.quality.pandas_max_rows
    local = prepared.limit(limit + 1).toPandas()  # one Spark job for a small frame
    on_spark = len(local) > limit
    if on_spark:
        del local
        whole = prepared.cache()
    else:
        whole = local

    def day_of(dt: str) -> Any:
        if on_spark:
            return whole.where(F.col(day_column) == dt)
        return whole[whole[day_column] == dt].reset_index(drop=True)

    shared = _shared_row_checks(specs)
    if shared:
        bulk = replace(first, expectations=shared)
        label = f"{min(specs)}_to_{max(specs)}"  # a ".." in a name leaves it out of Data Docs
        if not all(r.success for r in validations.run(whole, bulk, label).results):
            shared = []  # a row fails somewhere: every day validated whole, as alone
    rows: dict[str, int] = {}
    if shared and on_spark:
        rows = {r[0]: int(r[1]) for r in whole.groupBy(day_column).count().collect()}
    elif shared:
        rows = whole.groupby(day_column).size().to_dict()
    reports = [
        _day_report(validations, day_of(dt), spec, dt, shared, rows.get(dt, 0))
        for dt, spec in specs.items()
    ]
    if on_spark:
        whole.unpersist()
    return validations.publish(reports)


def _check_key(expectation) -> str:
    return json.dumps(expectation.configuration.to_json_dict(), sort_keys=True, default=str)


def _shared_row_checks(specs: dict[str, SuiteSpec]) -> list:
    """The row-by-row checks (no `mostly`, no uniqueness) that every day's suite holds alike:
    when they pass over all the days at once, they pass on each day, so a range validates
    them in one GX run instead of one per day (GX's own Python is most of a small day's
    gate time)."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    if len(specs) < 2:
        return []
    row_level = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
    suites = list(specs.values())
    common = set.intersection(*({_check_key(e) for e in s.expectations} for s in suites))
    return [
        e
        for e in suites[0].expectations
        if _check_key(e) in common
        and isinstance(e, row_level)
        and "unique" not in e.expectation_type
        and getattr(e, "row_condition", None) is None  # counts only the rows it selects
        and (getattr(e, "mostly", None) is None or e.mostly >= 1.0)
    ]


def _day_report(
    validations: _Validations, frame: Any, spec: SuiteSpec, dt: str, shared: list, rows: int
) -> GateReport:
    """A day's suite, the shared checks (passed over the whole range) recorded as passed on
    the day's rows, as GX reports a passing row check."""
    passed = {_check_key(e) for e in shared}
    rest = [e for e in spec.expectations if _check_key(e) not in passed]
    report = (
        validations.run(frame, replace(spec, expectations=rest), dt)
        if rest
        else GateReport(spec.table, dt, [], None)
    )
    for e in shared:
        cfg = e.configuration
        report.results.append(
            CheckResult(spec.table, dt, cfg.type, _column_of(cfg),
                        (cfg.meta or {}).get("severity", "hard"), True, 0, rows, None)
        )  # fmt: skip
    return report


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
    validated = {
        r.dt: r
        for r in validate_days(
            settings, frame, dict.fromkeys(checked, spec), day_column, (days[0], days[-1])
        )
    }
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
    # A day list per table: a (day, table) pair per OR nests too deep for Delta's parser
    # over a long chunk (215 days).
    days_of: dict[str, set[str]] = {}
    for report in reports:
        days_of.setdefault(report.table, set()).add(report.dt)
    predicate = reduce(
        lambda a, b: a | b,
        ((F.col("table") == table) & F.col("dt").isin(sorted(days))
         for table, days in sorted(days_of.items())),
    )  # fmt: skip
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
