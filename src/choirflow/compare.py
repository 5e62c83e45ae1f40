"""Table equality that says what differs: the table, the key and the first differing rows
side by side, never only a checksum.

Every table-equality check (tests, the cluster against a local run, two demo warehouses)
goes through `assert_tables_equal`. Spark DataFrames are compared in Spark (only the
differing rows come to the driver); pandas frames in pandas, for oracle tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SHOWN_ROWS = 5


class TablesDiffer(AssertionError):
    """Two versions of a table differ; the message shows where."""


@dataclass
class TableDiff:
    table: str
    key: tuple[str, ...]
    only_expected: pd.DataFrame = field(default_factory=pd.DataFrame)
    only_actual: pd.DataFrame = field(default_factory=pd.DataFrame)
    expected_rows: int = 0
    actual_rows: int = 0
    columns_only_expected: tuple[str, ...] = ()
    columns_only_actual: tuple[str, ...] = ()

    @property
    def equal(self) -> bool:
        return (
            self.only_expected.empty
            and self.only_actual.empty
            and not self.columns_only_expected
            and not self.columns_only_actual
        )

    def describe(self, limit: int = SHOWN_ROWS) -> str:
        lines = [
            f"{self.table} differs (key {', '.join(self.key)}): expected {self.expected_rows} "
            f"rows, got {self.actual_rows}; {len(self.only_expected)} expected rows not found, "
            f"{len(self.only_actual)} rows not expected"
        ]
        if self.columns_only_expected or self.columns_only_actual:
            lines.append(
                f"  columns only expected: {list(self.columns_only_expected)}; "
                f"only in actual: {list(self.columns_only_actual)}"
            )
        lines.extend(_side_by_side(self.only_expected, self.only_actual, list(self.key), limit))
        return "\n".join(lines)


def _records(frame: pd.DataFrame, key: list[str]) -> dict[tuple, dict[str, Any]]:
    out: dict[tuple, dict[str, Any]] = {}
    for row in frame.to_dict(orient="records"):
        out.setdefault(tuple(row[k] for k in key), row)
    return out


def _side_by_side(
    expected: pd.DataFrame, actual: pd.DataFrame, key: list[str], limit: int
) -> list[str]:
    """For the first differing keys: the columns whose values differ, expected | actual."""
    left, right = _records(expected, key), _records(actual, key)
    keys = sorted(set(left) | set(right), key=repr)[:limit]
    lines = []
    for k in keys:
        name = ", ".join(f"{c}={v!r}" for c, v in zip(key, k, strict=True))
        if k not in right:
            lines.append(f"  [{name}] only in expected: {_short(left[k])}")
        elif k not in left:
            lines.append(f"  [{name}] only in actual: {_short(right[k])}")
        else:
            cols = [c for c in left[k] if c in right[k] and not _same(left[k][c], right[k][c])]
            shown = "; ".join(f"{c}: {_value(left[k][c])} | {_value(right[k][c])}" for c in cols)
            lines.append(f"  [{name}] expected | actual: {shown or 'duplicate rows differ'}")
    return lines


def _close(a: Any, b: Any, tolerance: float) -> bool:
    """Equal, or floats (alone or in arrays) within `tolerance` relative to their size."""
    if isinstance(a, float | np.floating) and isinstance(b, float | np.floating):
        return abs(float(a) - float(b)) <= tolerance * max(1.0, abs(float(a)), abs(float(b)))
    if hasattr(a, "__len__") and not isinstance(a, str | dict):
        if not hasattr(b, "__len__") or len(a) != len(b):
            return False
        return all(_close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    return _same(a, b)


def _drop_close_pairs(diff: TableDiff, tolerance: float) -> None:
    """Forget the differing rows whose counterpart under the same key differs only by float
    noise (a batch of different size through the same encoder)."""
    key = list(diff.key)
    left, right = _records(diff.only_expected, key), _records(diff.only_actual, key)
    close = {
        k for k, row in left.items()
        if k in right and all(_close(v, right[k].get(c), tolerance) for c, v in row.items())
    }  # fmt: skip

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame if frame.empty else frame[~frame[key].apply(tuple, axis=1).isin(close)]

    diff.only_expected, diff.only_actual = keep(diff.only_expected), keep(diff.only_actual)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) if not hasattr(a, "__len__") or isinstance(a, str) else _seq(a, b)
    except (TypeError, ValueError):
        return repr(a) == repr(b)


def _seq(a: Any, b: Any) -> bool:
    if not hasattr(b, "__len__") or len(a) != len(b):
        return False
    return all(_same(x, y) for x, y in zip(a, b, strict=True))


def _value(value: Any, width: int = 80) -> str:
    text = repr(list(value) if hasattr(value, "tolist") else value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _short(row: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_value(v, 40)}" for k, v in row.items()) + "}"


def _comparable_spark(df, columns: list[str]):
    """Maps cannot be compared by set operations: they are compared as their JSON text."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    kinds = {f.name: f.dataType for f in df.schema.fields}
    return df.select(
        *[
            F.to_json(F.col(c)).alias(c) if isinstance(kinds[c], T.MapType) else F.col(c)
            for c in columns
        ]
    )


def table_diff(
    expected: Any,
    actual: Any,
    *,
    table: str,
    key: Sequence[str],
    ignore: Sequence[str] = (),
    tolerance: float = 0.0,
) -> TableDiff:
    """What differs between two versions of a table (Spark DataFrames or pandas frames) over
    their common columns minus `ignore` (run ids, timestamps of the write). An ignored column
    is dropped from the key too (gold.metrics is keyed by its run id). With a `tolerance`,
    rows of the same key whose floats differ by no more than it (relative) are equal."""
    key = tuple(k for k in key if k not in ignore)
    cols_e = [c for c in expected.columns if c not in ignore]
    cols_a = [c for c in actual.columns if c not in ignore]
    common = [c for c in cols_e if c in cols_a]
    diff = TableDiff(
        table,
        key,
        columns_only_expected=tuple(c for c in cols_e if c not in cols_a),
        columns_only_actual=tuple(c for c in cols_a if c not in cols_e),
    )
    if isinstance(expected, pd.DataFrame):
        e, a = expected[common], actual[common]
        diff.expected_rows, diff.actual_rows = len(e), len(a)
        e_keys = e.map(_hashable).apply(tuple, axis=1)
        a_keys = a.map(_hashable).apply(tuple, axis=1)
        e_count, a_count = e_keys.value_counts(), a_keys.value_counts()
        extra_e = (e_count - a_count.reindex(e_count.index, fill_value=0)).clip(lower=0)
        extra_a = (a_count - e_count.reindex(a_count.index, fill_value=0)).clip(lower=0)
        diff.only_expected = e[e_keys.isin(extra_e[extra_e > 0].index)].head(1000)
        diff.only_actual = a[a_keys.isin(extra_a[extra_a > 0].index)].head(1000)
    else:
        e, a = _comparable_spark(expected, common), _comparable_spark(actual, common)
        diff.expected_rows, diff.actual_rows = e.count(), a.count()
        diff.only_expected = e.exceptAll(a).limit(1000).toPandas()
        diff.only_actual = a.exceptAll(e).limit(1000).toPandas()
    if tolerance and key:
        _drop_close_pairs(diff, tolerance)
    return diff


def _hashable(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return "NaN"
    if value is None:
        return None
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def assert_tables_equal(
    expected: Any,
    actual: Any,
    *,
    table: str,
    key: Sequence[str],
    ignore: Sequence[str] = (),
    limit: int = SHOWN_ROWS,
    tolerance: float = 0.0,
) -> None:
    """Raise TablesDiffer naming the table, the key and the first differing rows."""
    diff = table_diff(expected, actual, table=table, key=key, ignore=ignore, tolerance=tolerance)
    if not diff.equal:
        raise TablesDiffer(diff.describe(limit))


def assert_warehouses_equal(
    spark,
    expected_settings,
    actual_settings,
    table_list: Sequence[Any],
    *,
    where: Any = None,
    ignore: Sequence[str] = (),
    tolerance: float = 0.0,
) -> None:
    """Every listed table of two warehouses equal (optionally only the rows `where` selects,
    floats within `tolerance`); all differing tables are named before failing."""
    from choirflow import tables

    problems = []
    for table in table_list:
        e = tables.read(spark, table, expected_settings)
        a = tables.read(spark, table, actual_settings)
        if where is not None:
            e, a = e.where(where), a.where(where)
        key = table.keys or tuple(c for c in e.columns if c not in ignore)[:3]
        diff = table_diff(e, a, table=table.full_name, key=key, ignore=ignore, tolerance=tolerance)
        if not diff.equal:
            problems.append(diff.describe())
    if problems:
        raise TablesDiffer("\n".join(problems))
