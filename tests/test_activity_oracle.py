"""Oracle test for the temporal counts: rolling user activity, item popularity levels and the
user x top-category rate levels, recomputed in plain pandas from the raw events and checked
against the Spark jobs on random days with gaps (days without events), keys that fall out of
the windows and an item that changes category. The jobs run as range steps, in two chunks
(the second carried from the first), as a backfill would."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from choirflow.compare import assert_tables_equal

pytestmark = pytest.mark.spark

ITEM_SHARES = [0.6, 0.12, 0.1, 0.08, 0.05, 0.03, 0.015, 0.004, 0.001]
DAYS = [str(date(2026, 10, 1) + timedelta(days=d)) for d in range(0, 40, 3)]  # with gaps
# Two chunks; the second starts on a day without events.
CHUNKS = [(DAYS[0], DAYS[6]), (str(date.fromisoformat(DAYS[6]) + timedelta(days=1)), DAYS[-1])]
KEY = ["user_id", "top_category"]


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


# Item deliveries: i1 moves from top category b to c on DAYS[6]; i8 is never delivered.
ITEM_HISTORY = pd.DataFrame(
    {
        "item_id": [f"i{i}" for i in range(8)] + ["i1"],
        "category_path": ["a/x", "b/y", "b/z", "c/x", "a/y", "c/z", "d/x", "a/z", "c/y"],
        "updated_at": pd.to_datetime(["2026-09-01"] * 8 + [DAYS[6]]),
        "dt": [DAYS[0]] * 8 + [DAYS[6]],
    }
)


# User deliveries: u0-u9 on the first day, u3's age band changes on DAYS[8], u10 arrives on
# DAYS[5]; u11 is active but never delivered.
USER_HISTORY = pd.DataFrame(
    {
        "user_id": [f"u{i}" for i in range(10)] + ["u3", "u10"],
        "age_band": ["25-34"] * 10 + ["35-44", "18-24"],
        "gender": ["f", "m"] * 5 + ["m", "f"],
        "city_tier": ["1"] * 12,
        "signup_date": pd.to_datetime(["2026-01-01"] * 12).date,
        "updated_at": pd.to_datetime(["2026-09-01"] * 10 + [DAYS[8], DAYS[5]]),
        "dt": [DAYS[0]] * 10 + [DAYS[8], DAYS[5]],
    }
)


def oracle_user_features(events: pd.DataFrame, day: str) -> pd.DataFrame:
    """silver.user_features of one day, slowly: attributes as of the day, window counts."""
    known = USER_HISTORY[USER_HISTORY.dt <= day].sort_values("dt").groupby("user_id").last()
    rows = {}
    active = set(events[(events.dt <= day) & (events.dt > str(
        date.fromisoformat(day) - timedelta(days=365)))].user_id)  # fmt: skip
    for user in sorted(set(known.index) | active):
        row = {"age_band": known.age_band.get(user)}
        for w in (7, 30, 365):
            for kind in ("click", "impression", "conversion"):
                counts = oracle_window_sum(events, "user_id", kind, day, w)
                row[f"{kind}s_{w}d"] = int(counts.get(user, 0))
        rows[user] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "user_id"
    return out.reset_index()


def oracle_top_category(item_id: str, day: str) -> str:
    known = ITEM_HISTORY[(ITEM_HISTORY.item_id == item_id) & (ITEM_HISTORY.dt <= day)]
    if known.empty:
        return "unknown"
    return known.sort_values("dt").category_path.iloc[-1].split("/")[0]


def oracle_exposure(events: pd.DataFrame) -> pd.DataFrame:
    """Per user, top category (as of each event's day) and day: impressions and clicks."""
    shown = events[events.event_type.isin(["impression", "click"])].copy()
    shown["top_category"] = [
        oracle_top_category(item, day) for item, day in zip(shown.item_id, shown.dt, strict=True)
    ]
    shown["impressions"] = (shown.event_type == "impression").astype(int)
    shown["clicks"] = (shown.event_type == "click").astype(int)
    return shown.groupby(["user_id", "top_category", "dt"], as_index=False)[
        ["impressions", "clicks"]
    ].sum()


def oracle_category_rates(events: pd.DataFrame, dt: str) -> pd.DataFrame:
    """The slow, obvious version of user_category_rates_before."""
    exposure = oracle_exposure(events)
    first = str(date.fromisoformat(dt) - timedelta(days=30))
    inside = exposure[(exposure.dt >= first) & (exposure.dt < dt)]
    pairs = inside.groupby(["user_id", "top_category"])[["impressions", "clicks"]].sum()
    by_category = pairs.groupby(level="top_category").sum()
    rows = {}
    for (user, top), (shown, clicked) in pairs[["impressions", "clicks"]].iterrows():
        base = (by_category.loc[top, "clicks"] + 1) / (by_category.loc[top, "impressions"] + 2)
        rate = (clicked + 5 * base) / (shown + 5)
        lift = int(np.floor(np.log(rate / base) / np.log(2) * 4)) + 9
        rows[(user, top)] = (min(max(lift, 1), 17), oracle_level(shown))
    return pd.DataFrame.from_dict(rows, orient="index", columns=["ctr_level", "impressions_level"])


@pytest.fixture(scope="module")
def activity(spark, settings, tmp_path_factory):
    from choirflow import tables
    from choirflow.features.activity import (
        build_daily_activity,
        build_user_category_exposure,
        build_user_category_state,
        build_user_features,
    )

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
    spark.createDataFrame(ITEM_HISTORY).write.format("delta").partitionBy("dt").save(
        tables.BRONZE_ITEM_HISTORY.path(local)
    )
    users = spark.createDataFrame(USER_HISTORY)
    users.write.format("delta").partitionBy("dt").save(tables.BRONZE_USER_HISTORY.path(local))
    for start, end in CHUNKS:
        build_daily_activity(spark, local, start, end)
        build_user_category_exposure(spark, local, start, end)
        build_user_category_state(spark, local, start, end)
        build_user_features(spark, local, start, end)
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


@pytest.mark.parametrize("day", [DAYS[0], "2026-10-08", DAYS[8], CHUNKS[1][0], DAYS[-1]])
def test_user_features_of_every_day_match_the_oracle(spark, activity, day):
    """Range-built days (a gap day, the first day of a chunk, a day with a user's attribute
    change) equal the slow per-day recomputation, row for row."""
    from pyspark.sql import functions as F

    from choirflow import tables

    local, events = activity
    got = tables.read(spark, tables.SILVER_USER_FEATURES, local).where(F.col("dt") == day)
    expected = oracle_user_features(events, day)
    assert_tables_equal(expected, got.toPandas()[expected.columns],
                        table=f"silver.user_features[{day}]", key=["user_id"])  # fmt: skip


@pytest.mark.parametrize("dt", [DAYS[10], DAYS[-1]])
def test_item_popularity_levels_match_the_oracle(spark, activity, dt):
    """Levels come from the 30 days before dt: the day itself is not known yet."""
    from choirflow.dates import day_offset
    from choirflow.features.activity import item_popularity_before

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


def test_user_category_exposure_matches_the_oracle(spark, activity):
    """Counts per user and top category, with each day's category as of that day."""
    from choirflow import tables

    local, events = activity
    got = tables.read(spark, tables.SILVER_USER_CATEGORY_EXPOSURE, local).toPandas()
    key = ["user_id", "top_category", "dt"]
    expected = oracle_exposure(events)
    assert_tables_equal(expected, got[expected.columns], table="silver.user_category_exposure",
                        key=key)  # fmt: skip
    assert {"unknown", "c", "b"} <= set(got["top_category"])


@pytest.mark.parametrize("dt", [DAYS[4], DAYS[9], DAYS[-1]])
def test_user_category_rate_levels_match_the_oracle(spark, activity, dt):
    """Levels come from the 30 days before dt, shrunk towards the category's rate."""
    from choirflow.features.activity import user_category_rates_before

    local, events = activity
    got = user_category_rates_before(spark, local, dt).toPandas()
    got = got.set_index(["user_id", "item_top_category"]).sort_index()
    expected = oracle_category_rates(events, dt).sort_index()
    assert list(got.index) == list(expected.index)
    assert got["user_category_ctr_level"].tolist() == expected["ctr_level"].tolist()
    assert got["user_category_impressions_level"].tolist() == expected["impressions_level"].tolist()
    assert got["user_category_ctr_level"].nunique() >= 3  # the levels spread, not one value


def oracle_window_exposure(events: pd.DataFrame, last_day: str) -> pd.DataFrame:
    exposure = oracle_exposure(events)
    first = str(date.fromisoformat(last_day) - timedelta(days=29))
    inside = exposure[(exposure.dt >= first) & (exposure.dt <= last_day)]
    sums = inside.groupby(["user_id", "top_category"])[["impressions", "clicks"]].sum()
    return sums.rename(columns=lambda c: f"{c}_30d").sort_index()


def test_carried_user_category_state_matches_the_oracle(spark, activity):
    """Each kept day's state (every day of the second chunk, carried from the first chunk's
    last state, plus the days that entered the window, minus those that left) equals the
    window's sums from scratch."""
    from choirflow import tables
    from choirflow.dates import day_offset, days_between
    from choirflow.features.activity import build_user_category_state

    local, events = activity

    def kept_states() -> dict[str, pd.DataFrame]:
        state = tables.read(spark, tables.SILVER_USER_CATEGORY_STATE, local).toPandas()
        return {
            day: rows.set_index(["user_id", "top_category"]).sort_index()
            for day, rows in state.groupby("dt")
        }

    kept = kept_states()
    # Retention (7 days before the last) dropped the older days, the gap days included.
    retained = days_between(day_offset(DAYS[-1], -local.features.state_retention_days), DAYS[-1])
    assert sorted(kept) == retained
    for day, got in kept.items():
        expected = oracle_window_exposure(events, day).reset_index()
        assert_tables_equal(expected, got.reset_index()[expected.columns],
                            table=f"silver.user_category_state[{day}]", key=KEY)  # fmt: skip
    # Rerunning an earlier day drops the states carried from its old sums; running the days
    # after it again (one range) brings every state back as it was.
    build_user_category_state(spark, local, DAYS[-2])
    assert sorted(kept_states()) == [d for d in retained if d <= DAYS[-2]]
    build_user_category_state(spark, local, day_offset(DAYS[-2], 1), DAYS[-1])
    assert {day: got.to_dict() for day, got in kept_states().items()} == {
        day: got.to_dict() for day, got in kept.items()
    }


def test_user_category_window_edges_match_the_oracle(spark, activity):
    """A day whose window starts on a day with events (a window one day short or long would
    differ), carried from a state and rebuilt from scratch."""
    from choirflow.dates import day_offset
    from choirflow.features.activity import category_window_sums

    local, events = activity
    day = day_offset(DAYS[4], 29)  # the window is DAYS[4] .. day
    expected = oracle_window_exposure(events, day)
    one_day_short = oracle_window_exposure(events[events.dt != DAYS[4]], day)
    assert expected.to_dict() != one_day_short.to_dict()  # the edge day counts
    for state_until in (DAYS[-1], DAYS[0]):  # carried from DAYS[-1]; no state: from scratch
        got = category_window_sums(spark, local, day, state_until=state_until).toPandas()
        assert_tables_equal(expected.reset_index(), got[expected.reset_index().columns],
                            table=f"window sums carried from {state_until}", key=KEY)  # fmt: skip
