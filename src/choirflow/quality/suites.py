"""Great Expectations suites kept as code: generated from the schemas/ contracts, plus the
semantic checks of each warehouse table.

Each check carries a severity in its `meta`: a failing "hard" check stops the daily run
before training; a "soft" one is recorded and shown in the report. Array lengths, sequence
time order and embedding norms are checked on derived columns (GX's length check reads
strings only), which `prepare` adds to the frame before validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import great_expectations.expectations as gxe
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from choirflow.contracts import Contract, load_contract
from choirflow.features.activity import MAX_LEVEL, MAX_LIFT_LEVEL

HARD = {"severity": "hard"}
SOFT = {"severity": "soft"}
# Pair checks leave a missing value to the not-null checks: GX's pandas engine would count a
# null as failing the pair and its Spark engine would not.
EITHER_MISSING = "either_value_is_missing"


@dataclass(frozen=True)
class SuiteSpec:
    """A table's suite: the expectations and how to derive the columns they read."""

    table: str
    key: tuple[str, ...]
    expectations: list
    derived: dict[str, F.Column]


def contract_expectations(contract: Contract, hard: dict = HARD) -> list:
    """Types are enforced when parsing; here: presence, nullability, sets, ranges, lengths, keys."""
    out = []
    for col in contract.columns:
        out.append(gxe.ExpectColumnToExist(column=col.name, meta=hard))
        if not col.nullable:
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=col.name, meta=hard))
        if col.allowed is not None:
            out.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=col.name, value_set=[str(a) for a in col.allowed], meta=hard
                )
            )
        if col.min is not None or col.max is not None:
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col.name, min_value=col.min, max_value=col.max, meta=hard
                )
            )
        if col.max_length is not None:
            out.append(
                gxe.ExpectColumnValueLengthsToBeBetween(
                    column=col.name, min_value=0, max_value=col.max_length, meta=hard
                )
            )
        if col.width is not None:
            out.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=f"_{col.name}_width", value_set=[col.width], meta=hard
                )
            )
    if contract.key:
        if len(contract.key) == 1:
            out.append(gxe.ExpectColumnValuesToBeUnique(column=contract.key[0], meta=hard))
        else:
            out.append(
                gxe.ExpectCompoundColumnsToBeUnique(column_list=list(contract.key), meta=hard)
            )
    return out


def _width_columns(contract: Contract) -> dict[str, F.Column]:
    return {f"_{c.name}_width": F.size(c.name) for c in contract.columns if c.width is not None}


def volume_expectation(
    previous_counts: list[int], tolerance: float, severity: str = "hard"
) -> list:
    """A row count within [mean / tolerance, mean * tolerance] of the previous days when
    known, and never zero. `severity` soft only warns: a public log's days swing widely and
    some have no events at all."""
    meta = HARD if severity == "hard" else SOFT
    if not previous_counts:
        return [gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=meta)]
    mean = sum(previous_counts) / len(previous_counts)
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=max(1, int(mean / tolerance)), max_value=int(mean * tolerance) + 1, meta=meta
        )
    ]


def bronze_events_suite(
    previous_counts: list[int], tolerance: float, volume_severity: str = "hard"
) -> SuiteSpec:
    contract = load_contract("raw_events")
    expectations = contract_expectations(contract)
    expectations += volume_expectation(previous_counts, tolerance, volume_severity)
    expectations.append(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="ingestion_time",
            column_B="_event_time_minus_skew",
            or_equal=True,
            ignore_row_if=EITHER_MISSING,
            meta=HARD,
        )
    )
    # Late arrivals are kept (in the arrival day's partition) but watched.
    expectations.append(
        gxe.ExpectColumnMeanToBeBetween(column="_late", min_value=0.0, max_value=0.05, meta=SOFT)
    )
    derived = {
        "_event_time_minus_skew": F.col("event_time") - F.expr("INTERVAL 10 MINUTES"),
        "_late": (F.to_date("event_time") < F.to_date(F.col("dt"))).cast("double"),
    }
    return SuiteSpec("bronze.events", contract.key, expectations, derived)


def bronze_dimension_suite(name: str) -> SuiteSpec:
    contract = load_contract(f"raw_{name}")
    expectations = contract_expectations(contract)
    expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=HARD))
    return SuiteSpec(f"bronze.{name}", contract.key, expectations, _width_columns(contract))


def bronze_ingest_runs_suite() -> SuiteSpec:
    """Each source's account of a day: it reconciles (hard), and every file under the day's
    folder was read (soft: a skipped file or a folder that is no day is named in
    bronze.ingest_runs, in the report and in Data Docs)."""
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=HARD),  # the ingest ran
        gxe.ExpectColumnValuesToBeInSet(column="_reconciles", value_set=[True], meta=HARD),
        gxe.ExpectColumnValuesToBeBetween(
            column="_files_skipped", min_value=0, max_value=0, meta=SOFT
        ),
    ]

    def rows(name: str) -> Column:  # null in rows written before the column was
        return F.coalesce(F.col(name), F.lit(0))

    arrived = rows("raw_rows") + rows("released_rows") + rows("expired_rows")
    placed = [rows(c) for c in ("bronze_rows", "quarantined_rows", "duplicate_rows")]
    derived = {
        "_reconciles": arrived == sum(placed, rows("pending_rows")),
        "_files_skipped": F.size(F.coalesce("files_skipped", F.array())),
    }
    return SuiteSpec("bronze.ingest_runs", ("source",), expectations, derived)


def gold_samples_suite(
    max_seq_len: int,
    previous_counts: list[int],
    tolerance: float,
    ctr_bounds: tuple[float, float],
    groups_expected: bool = False,
    volume_severity: str = "hard",
) -> SuiteSpec:
    expectations = [
        gxe.ExpectColumnValuesToNotBeNull(column=c, meta=HARD)
        for c in ("event_id", "user_id", "item_id", "click", "conversion", "hist_len")
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeUnique(column="event_id", meta=HARD),
        gxe.ExpectColumnValuesToBeInSet(column="click", value_set=[0, 1], meta=HARD),
        gxe.ExpectColumnValuesToBeInSet(column="conversion", value_set=[0, 1], meta=HARD),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="click",
            column_B="conversion",
            or_equal=True,
            ignore_row_if=EITHER_MISSING,
            meta=HARD,
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="hist_len", min_value=0, max_value=max_seq_len, meta=HARD
        ),
        # Point in time: every sequence element strictly before its impression.
        gxe.ExpectColumnValuesToBeBetween(
            column="_min_gap_seconds", min_value=0, strict_min=True, meta=HARD
        ),
        gxe.ExpectColumnValuesToBeInSet(column="_arrays_aligned", value_set=[True], meta=HARD),
        gxe.ExpectColumnMeanToBeBetween(
            column="click", min_value=ctr_bounds[0], max_value=ctr_bounds[1], meta=SOFT
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="activity_bucket", value_set=["low", "mid", "high"], meta=HARD
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="user_category_ctr_level", min_value=0, max_value=MAX_LIFT_LEVEL, meta=HARD
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="user_category_impressions_level", min_value=0, max_value=MAX_LEVEL, meta=HARD
        ),
    ]
    expectations += volume_expectation(previous_counts, tolerance, volume_severity)
    if groups_expected:  # once groups exist, (nearly) every sample carries its user's group
        expectations.append(
            gxe.ExpectColumnValuesToNotBeNull(column="group_c1", mostly=0.95, meta=SOFT)
        )
    derived = {
        "_min_gap_seconds": F.coalesce(F.array_min("hist_gap_seconds"), F.lit(1.0)),
        "_arrays_aligned": (F.size("hist_item_ids") == F.col("hist_len"))
        & (F.size("hist_gap_seconds") == F.col("hist_len"))
        & (F.size("hist_categories") == F.col("hist_len")),
    }
    return SuiteSpec("gold.samples", ("event_id",), expectations, derived)


RELABELLED = "gold.samples:relabelled"


def relabelled_samples_suite(
    ctr_bounds: tuple[float, float], max_changed_share: float
) -> SuiteSpec:
    """A past day whose labels late data changed: labels still well formed, its click rate
    within the daily bounds, and the share of its labels that changed (`_changed`, the
    figure the report shows), soft above `max_changed_share`."""
    expectations = [
        gxe.ExpectColumnValuesToBeInSet(column="click", value_set=[0, 1], meta=HARD),
        gxe.ExpectColumnValuesToBeInSet(column="conversion", value_set=[0, 1], meta=HARD),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="click", column_B="conversion", or_equal=True, meta=HARD
        ),
        gxe.ExpectColumnMeanToBeBetween(
            column="click", min_value=ctr_bounds[0], max_value=ctr_bounds[1], meta=SOFT
        ),
        gxe.ExpectColumnMeanToBeBetween(
            column="_changed", min_value=0.0, max_value=max_changed_share, meta=SOFT
        ),
    ]
    return SuiteSpec(RELABELLED, ("event_id",), expectations, {})


def item_embeddings_suite(width: int) -> SuiteSpec:
    expectations = [
        gxe.ExpectColumnValuesToBeUnique(column="item_id", meta=HARD),
        gxe.ExpectColumnValuesToNotBeNull(column="embedding", meta=HARD),
        gxe.ExpectColumnValuesToBeInSet(column="_width", value_set=[width], meta=HARD),
        gxe.ExpectColumnValuesToBeInSet(column="_finite", value_set=[True], meta=HARD),
        gxe.ExpectColumnValuesToBeBetween(column="_norm", min_value=0.5, max_value=2.0, meta=HARD),
        gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=HARD),
    ]
    squares = F.aggregate("embedding", F.lit(0.0).cast("double"), lambda acc, x: acc + x * x)
    derived = {
        "_width": F.size("embedding"),
        "_finite": ~F.exists("embedding", lambda x: F.isnan(x) | (F.abs(x) > 1e6)),
        "_norm": F.sqrt(squares),
    }
    return SuiteSpec("silver.item_embeddings", ("item_id",), expectations, derived)


def user_groups_suite(users: int, stages: int) -> SuiteSpec:
    """Coverage: every known user has a group; codes have one entry per RQ-KMeans stage."""
    expectations = [
        gxe.ExpectColumnValuesToBeUnique(column="user_id", meta=HARD),
        gxe.ExpectColumnValuesToNotBeNull(column="c1", meta=HARD),
        gxe.ExpectColumnValuesToNotBeNull(column="prior_group", meta=HARD),
        gxe.ExpectColumnValuesToBeInSet(column="_stages", value_set=[stages], meta=HARD),
        gxe.ExpectTableRowCountToBeBetween(min_value=users, meta=HARD),
        gxe.ExpectColumnValuesToBeInSet(
            column="profile_source", value_set=["llm", "template"], meta=HARD
        ),
    ]
    return SuiteSpec("silver.user_groups", ("user_id",), expectations, {"_stages": F.size("codes")})


def prepare(df: DataFrame, spec: SuiteSpec) -> DataFrame:
    for name, column in spec.derived.items():
        df = df.withColumn(name, column)
    return df
