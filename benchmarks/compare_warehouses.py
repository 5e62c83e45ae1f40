"""Every table of two warehouses compared with choirflow.compare: which are equal, and for
the others the key and first differing rows side by side. Item embeddings are also compared
up to the sign of each projection component (an SVD fixes a component only up to sign).

    python benchmarks/compare_warehouses.py data/warehouse /tmp/other/warehouse

Used to show that a refactor or the range engine builds what the code before it built.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from choirflow import tables
from choirflow.compare import table_diff
from choirflow.config import load_settings
from choirflow.spark import get_spark

# Columns that say when or by which run a row was written, not what it holds.
WRITE_COLUMNS = (
    "run_id", "ingested_at", "recorded_at", "quarantined_at", "checked_at", "decided_at",
    "fitted_at", "created_at", "seconds", "llm_seconds", "tokens_per_second", "users_per_second",
)  # fmt: skip


def _embeddings_up_to_sign(spark, expected, actual) -> str:
    e, a = (
        tables.read(spark, tables.SILVER_ITEM_EMBEDDINGS, s).toPandas().set_index("item_id")
        for s in (expected, actual)
    )
    common = e.index.intersection(a.index)
    if common.empty:
        return "item embeddings: no item in common"
    left = np.stack(e.loc[common, "embedding"])
    right = np.stack(a.loc[common, "embedding"])
    signs = np.sign((left * right).sum(axis=0))
    return (
        f"item embeddings up to sign: {len(common)} items, {int((signs < 0).sum())} of "
        f"{left.shape[1]} components flipped, max |difference| "
        f"{float(np.abs(left - right * signs).max()):.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("expected")
    parser.add_argument("actual")
    args = parser.parse_args()
    expected, actual = (
        load_settings(environ={**os.environ, "CHOIRFLOW__PATHS__WAREHOUSE": path})
        for path in (args.expected, args.actual)
    )
    spark = get_spark(actual)
    equal, differ = [], []
    for table in tables.ALL_TABLES:
        present = (tables.exists(spark, table, expected), tables.exists(spark, table, actual))
        if not all(present):
            print(f"{table.full_name}: expected {present[0]}, actual {present[1]} (exists)")
            continue
        e, a = tables.read(spark, table, expected), tables.read(spark, table, actual)
        key = table.keys or tuple(c for c in e.columns if c not in WRITE_COLUMNS)[:3]
        diff = table_diff(e, a, table=table.full_name, key=key, ignore=WRITE_COLUMNS)
        (equal if diff.equal else differ).append(table.full_name)
        if not diff.equal:
            print(diff.describe(limit=5))
    if tables.exists(spark, tables.SILVER_ITEM_EMBEDDINGS, expected) and tables.exists(
        spark, tables.SILVER_ITEM_EMBEDDINGS, actual
    ):
        print(_embeddings_up_to_sign(spark, expected, actual))
    print(f"equal ({len(equal)}): {', '.join(equal)}")
    print(f"differ ({len(differ)}): {', '.join(differ)}")


if __name__ == "__main__":
    main()
