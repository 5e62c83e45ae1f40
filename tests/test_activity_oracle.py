"""Oracle test for the temporal counts: rolling user activity and item popularity levels,
recomputed in plain pandas from the raw events and checked against the Spark jobs on random
days with gaps (days without events) and keys that fall out of the windows."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.spark

ITEM_SHARES = [0.6, 0.12, 0.1, 0.08, 0.05, 0.03, 0.015, 0.004, 0.001]
DAYS = [str(date(2026, 10, 1) + timedelta(days=d)) for d in range(0, 40, 3)]  # with gaps


def _events(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 3000
    return pd.DataFrame(
        {
            "event_id": [f"e{i:05d}" for i in range(n)],
            "user_id": rng.choice([f"u{i}" for i in range(12)], n),
            # One hot item (views level capped at 10), rare ones (low levels).
            "item_id": rng.choice([f"i{i}" for i in range(9)], n, p=ITEM_SHARES),
            "event_type": rng.choice(["impression", "click", "conversion"], n, p=[0.8, 0.15, 0.05]),
            "dt": rng.choice(DAYS, n),
        }
    )


def oracle_window_sum(events: pd.DataFrame, key: str, kind: str, last_day: str, days: int):
    first = str(date.fromisoformat(last_day) - timedelta(days=days - 1))
    inside = events[(events.dt >= first) & (events.dt <= last_day) & (events.event_type == kind)]
    return inside.groupby(key).size()


def oracle_level(count: int) -> int:
    return min(int(np.floor(np.log2(count + 1))), 10)


@pytest.fixture(scope="module")
def activity(spark, settings, tmp_path_factory):
    from choirflow import tables
    from choirflow.features.activity import build_daily_activity

    local = settings.model_copy(
        update={
            "paths": settings.paths.model_copy(
                update={"warehouse": str(tmp_path_factory.mktemp("activity"))}
            )
        }
    )
    events = _events(9)
    frame = spark.createDataFrame(events)
    frame.write.format("delta").partitionBy("dt").save(tables.BRONZE_EVENTS.path(local))
    for dt in DAYS:
        build_daily_activity(spark, local, dt)
    return local, events


@pytest.mark.parametrize("last_day", [DAYS[5], DAYS[-1], "2026-10-24"])
def test_rolling_user_counts_match_the_oracle(spark, activity, last_day):
    from choirflow import tables
    from choirflow.features.activity import rolling_sums

    local, events = activity
    daily = tables.read(spark, tables.SILVER_USER_DAILY, local)
    got = rolling_sums(daily, "user_id", last_day, (7, 30), ("clicks", "impressions"))
    got = got.toPandas().set_index("user_id")
    for column, kind, days in (
        ("clicks_7d", "click", 7),
        ("clicks_30d", "click", 30),
        ("impressions_7d", "impression", 7),
    ):
        expected = oracle_window_sum(events, "user_id", kind, last_day, days)
        mine = got[column].reindex(expected.index.union(got.index), fill_value=0)
        assert mine.to_dict() == expected.reindex(mine.index, fill_value=0).to_dict(), column
    assert got["clicks_7d"].le(got["clicks_30d"]).all()
    assert got["clicks_7d"].max() > 0


@pytest.mark.parametrize("dt", [DAYS[10], DAYS[-1]])
def test_item_popularity_levels_match_the_oracle(spark, activity, dt):
    """Levels come from the 30 days before dt: the day itself is not known yet."""
    from choirflow.features.activity import day_offset, item_popularity_before

    local, events = activity
    got = item_popularity_before(spark, local, dt).toPandas().set_index("item_id")
    day_before = day_offset(dt, -1)
    views = oracle_window_sum(events, "item_id", "impression", day_before, 30)
    likes = oracle_window_sum(events, "item_id", "click", day_before, 30)
    assert set(got.index) == set(views.index) | set(likes.index)
    for item in got.index:
        assert got.loc[item, "views_level"] == oracle_level(int(views.get(item, 0))), item
        assert got.loc[item, "likes_level"] == oracle_level(int(likes.get(item, 0))), item
    assert got["views_level"].max() == 10 and got["views_level"].min() <= 3
