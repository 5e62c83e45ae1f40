"""Oracle test (Feast style): an obvious pandas version of the point-in-time sequence logic,
checked against the Spark job on random small data with same-second ties."""

import numpy as np
import pandas as pd
import pytest

from choirflow.features.samples import attach_sequences

pytestmark = pytest.mark.spark


def oracle_sequences(impressions: pd.DataFrame, clicks: pd.DataFrame, max_len: int) -> dict:
    out = {}
    for imp in impressions.itertuples():
        before = clicks[(clicks.user_id == imp.user_id) & (clicks.event_time < imp.event_time)]
        before = before.sort_values(["event_time", "event_id"]).tail(max_len)
        gaps = [(imp.event_time - t).total_seconds() for t in before.event_time]
        out[imp.event_id] = (list(before.item_id), list(before.category), gaps)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequences_match_the_pandas_oracle(spark, seed):
    rng = np.random.default_rng(seed)
    base = pd.Timestamp("2026-11-01")

    # Few distinct seconds, so clicks and impressions often share a timestamp.
    def rows(n, prefix):
        return pd.DataFrame(
            {
                "event_id": [f"{prefix}{i:04d}" for i in range(n)],
                "user_id": rng.choice(
                    ["u1", "u2", "u3", "u4", "new_user"][: 4 if prefix == "c" else 5], n
                ),
                "event_time": base + pd.to_timedelta(rng.integers(0, 40, n), unit="s"),
                "item_id": [f"i{j}" for j in rng.integers(0, 30, n)],
                "category": [f"c{j}" for j in rng.integers(0, 5, n)],
            }
        )

    impressions, clicks = rows(120, "m"), rows(90, "c")
    max_len = 5
    got = (
        attach_sequences(
            spark.createDataFrame(impressions.drop(columns="category")),
            spark.createDataFrame(clicks),
            max_len,
        )
        .toPandas()
        .set_index("event_id")
    )
    expected = oracle_sequences(impressions, clicks, max_len)
    assert set(got.index) == set(expected)
    leaked = 0
    for event_id, (items, categories, gaps) in expected.items():
        row = got.loc[event_id]
        assert list(row.hist_item_ids) == items, event_id
        assert list(row.hist_categories) == categories, event_id
        np.testing.assert_allclose(list(row.hist_gap_seconds), gaps)
        leaked += sum(g <= 0 for g in row.hist_gap_seconds)
        assert row.hist_len == len(items)
    assert leaked == 0
    # The test data really exercised ties, truncation and users with no history.
    merged = impressions.merge(clicks, on=["user_id", "event_time"])
    assert len(merged) > 0
    assert (got.hist_len == max_len).any()
    assert (got.loc[impressions.event_id[impressions.user_id == "new_user"], "hist_len"] == 0).all()
