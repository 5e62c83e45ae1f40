"""The table comparison every equality test uses: it must say what differs, not only that."""

import pandas as pd
import pytest

from choirflow.compare import TablesDiffer, assert_tables_equal

pytestmark = pytest.mark.unit


def test_a_difference_names_the_table_the_key_and_the_rows_side_by_side():
    expected = pd.DataFrame(
        {"event_id": ["e1", "e2", "e3"], "click": [1, 0, 0], "hist": [["a"], [], ["b", "c"]]}
    )
    actual = pd.DataFrame(
        {"event_id": ["e1", "e3", "e4"], "click": [1, 1, 0], "hist": [["a"], ["b", "c"], []]}
    )
    with pytest.raises(TablesDiffer) as failure:
        assert_tables_equal(expected, actual, table="gold.samples", key=["event_id"])
    message = str(failure.value)
    assert message.startswith("gold.samples differs (key event_id): expected 3 rows, got 3")
    assert "[event_id='e3'] expected | actual: click: 0 | 1" in message
    assert "[event_id='e2'] only in expected" in message
    assert "[event_id='e4'] only in actual" in message
    assert "e1" not in message  # equal rows are not shown


def test_equal_tables_pass_whatever_the_row_order_and_ignored_columns():
    left = pd.DataFrame({"k": [1, 2], "v": [[1.0], [2.0]], "run_id": ["a", "b"]})
    right = pd.DataFrame({"k": [2, 1], "v": [[2.0], [1.0]], "run_id": ["x", "y"]})
    assert_tables_equal(left, right, table="t", key=["k"], ignore=["run_id"])
    with pytest.raises(TablesDiffer, match="run_id"):
        assert_tables_equal(left, right, table="t", key=["k"])
    duplicated = pd.concat([left, left.head(1)], ignore_index=True)
    with pytest.raises(TablesDiffer, match="expected 3 rows, got 2"):
        assert_tables_equal(duplicated, right, table="t", key=["k"], ignore=["run_id"])


def test_an_ignored_key_column_leaves_the_key_and_differences_still_show():
    left = pd.DataFrame({"run_id": ["a", "b"], "metric": ["auc", "gauc"], "v": [0.7, 0.6]})
    right = pd.DataFrame({"run_id": ["x", "y"], "metric": ["auc", "gauc"], "v": [0.7, 0.5]})
    with pytest.raises(TablesDiffer, match=r"\[metric='gauc'\].*v: 0.6 \| 0.5"):
        assert_tables_equal(left, right, table="gold.metrics", key=["run_id", "metric"],
                            ignore=["run_id"])  # fmt: skip


def test_a_tolerance_forgives_float_noise_and_nothing_else():
    """Vectors from one encoder in batches of different sizes differ in their last bits."""
    expected = pd.DataFrame({"k": [1, 2], "v": [[0.25, -0.7590181], [1.0, 2.0]], "n": [3, 4]})
    noisy = pd.DataFrame({"k": [1, 2], "v": [[0.25, -0.7590180], [1.0, 2.0]], "n": [3, 4]})
    with pytest.raises(TablesDiffer, match=r"\[k=1\]"):
        assert_tables_equal(expected, noisy, table="t", key=["k"])
    assert_tables_equal(expected, noisy, table="t", key=["k"], tolerance=1e-5)
    moved = noisy.assign(v=[[0.25, -0.7591], [1.0, 2.0]])
    with pytest.raises(TablesDiffer, match=r"\[k=1\]"):
        assert_tables_equal(expected, moved, table="t", key=["k"], tolerance=1e-5)
    recounted = noisy.assign(n=[3, 5])
    with pytest.raises(TablesDiffer, match=r"\[k=2\] expected \| actual: n: 4 \| 5"):
        assert_tables_equal(expected, recounted, table="t", key=["k"], tolerance=1e-5)
