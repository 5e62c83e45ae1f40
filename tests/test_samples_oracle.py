"""Oracle test (Feast style): an obvious pandas version of the point-in-time sequence logic,
checked against the Spark job on random small data with same-second ties."""

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from choirflow.compare import assert_tables_equal
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


def _random_events(rng, n, prefix, users, start, seconds):
    return pd.DataFrame(
        {
            "event_id": [f"{prefix}{i:04d}" for i in range(n)],
            "user_id": rng.choice(users, n),
            "event_time": start + pd.to_timedelta(rng.integers(0, seconds, n), unit="s"),
            "item_id": [f"i{j}" for j in rng.integers(0, 30, n)],
            "category": [f"c{j}" for j in rng.integers(0, 5, n)],
        }
    )


@pytest.mark.parametrize(("seed", "max_len"), [(3, 200), (4, 200), (3, 4), (6, 3)])
def test_carried_state_matches_the_oracle_with_late_impressions(spark, seed, max_len):
    """Yesterday's clicks arrive as state; today's partition holds late impressions too.

    The state keeps the last max_len clicks of yesterday, so the oracle sees those and today's
    clicks: a late impression gets the last max_len of them older than itself (a short
    max_len truncates both the state and the lists)."""
    from choirflow.features.sequences import sequences_for_day, state_from_clicks

    rng = np.random.default_rng(seed)
    day1, day2 = pd.Timestamp("2026-11-01"), pd.Timestamp("2026-11-02")
    users = ["u1", "u2", "u3", "u4"]
    clicks_1 = _random_events(rng, 60, "a", users, day1, 86400)
    clicks_2 = pd.concat(
        [
            _random_events(rng, 60, "b", users, day2, 30),  # many same-second ties
            # Late clicks: older than the end of the carried state, so the list is re-sorted.
            _random_events(rng, 15, "l", users, day1 + pd.Timedelta(hours=22), 2 * 3600),
        ],
        ignore_index=True,
    )
    on_time = _random_events(rng, 80, "m", users + ["fresh"], day2, 30)
    late = _random_events(rng, 20, "n", users, day1 + pd.Timedelta(hours=20), 4 * 3600)
    impressions = pd.concat([on_time, late], ignore_index=True).drop(columns="category")
    prev = state_from_clicks(spark.createDataFrame(clicks_1), max_len)
    with_hist, _ = sequences_for_day(
        spark.createDataFrame(impressions),
        spark.createDataFrame(clicks_2),
        prev,
        max_len,
        day_start=F.lit(day2).cast("timestamp"),
    )
    got = with_hist.toPandas().set_index("event_id")
    carried = clicks_1.sort_values(["event_time", "event_id"]).groupby("user_id").tail(max_len)
    expected = oracle_sequences(impressions, pd.concat([carried, clicks_2]), max_len)
    for event_id, (items, categories, gaps) in expected.items():
        assert list(got.loc[event_id, "hist_item_ids"]) == items, event_id
        assert list(got.loc[event_id, "hist_categories"]) == categories, event_id
        np.testing.assert_allclose(list(got.loc[event_id, "hist_gap_seconds"]), gaps)
    # clicks_today counts every click of the day before the impression, not only the last L.
    for imp in impressions.itertuples():
        mine = clicks_2[(clicks_2.user_id == imp.user_id) & (clicks_2.event_time >= day2)]
        assert got.loc[imp.event_id, "clicks_today"] == (mine.event_time < imp.event_time).sum()
    if max_len < 10:
        assert (got.clicks_today > max_len).any()
        assert (got.loc[late.event_id, "hist_len"] == max_len).any()
    else:
        assert (got.loc[late.event_id, "hist_len"] < got.hist_len.max()).all()


def test_incremental_state_equals_full_recomputation(spark):
    from choirflow.features.sequences import (
        empty_state,
        next_state,
        sequences_for_day,
        state_from_clicks,
    )

    rng = np.random.default_rng(5)
    users = [f"u{i}" for i in range(8)]
    state = empty_state(spark)
    days = []
    for d in range(4):
        start = pd.Timestamp("2026-11-01") + pd.Timedelta(days=d)
        clicks = pd.concat(
            [
                _random_events(rng, 50, f"d{d}-", users[: 5 + d], start, 86400),
                # Late clicks from the day before: the carried list must be re-sorted.
                _random_events(rng, 8, f"l{d}-", users, start - pd.Timedelta(hours=6), 21600),
            ],
            ignore_index=True,
        )
        imps = _random_events(rng, 10, f"m{d}-", users, start, 86400).drop(columns="category")
        days.append(clicks)
        _, changed = sequences_for_day(
            spark.createDataFrame(imps), spark.createDataFrame(clicks), state, 7
        )
        state = next_state(state, changed).localCheckpoint()
    full = state_from_clicks(spark.createDataFrame(pd.concat(days, ignore_index=True)), 7)

    def as_dict(df):
        return {r.user_id: [e.event_id for e in r.seq] for r in df.collect()}

    assert as_dict(state) == as_dict(full)
    assert len(as_dict(full)) == 8


def oracle_labels(
    events: pd.DataFrame, window: pd.Timedelta, known: str, horizon_days: int
) -> pd.DataFrame:
    """Each impression of arrival day d: the clicks and conversions of its (user, item,
    request) that arrived on days d .. min(d + horizon, known); clicked if one of those clicks
    happened at most `window` after the impression, converted if one of those conversions
    falls within `window` after the first such click."""
    rows = []
    for imp in events[events.event_type == "impression"].itertuples():
        last = min(str((pd.Timestamp(imp.dt) + pd.Timedelta(days=horizon_days)).date()), known)
        same = events[
            (events.user_id == imp.user_id)
            & (events.item_id == imp.item_id)
            & (events.request_id == imp.request_id)
            & (events.dt >= imp.dt)
            & (events.dt <= last)
        ]
        clicks = same[(same.event_type == "click") & (same.event_time <= imp.event_time + window)]
        conversions = same[same.event_type == "conversion"].event_time
        first = clicks.event_time.min() if len(clicks) else None
        converted = (
            first is not None and ((conversions >= first) & (conversions <= first + window)).any()
        )
        rows.append((imp.event_id, int(first is not None), int(converted)))
    return pd.DataFrame(rows, columns=["event_id", "click", "conversion"]).set_index("event_id")


@pytest.mark.parametrize("seed", [6, 7])
def test_labels_across_days_match_the_pandas_oracle(spark, seed):
    """Ten arrival days: clicks and conversions that arrive on the impression's day, days
    later, past the horizon or after the last ingested day, conversions past midnight, before
    their click, inside and outside the window, clicks long after the impression, several
    clicks of one key, conversions without a click."""
    from choirflow.features.labels import labelled

    rng = np.random.default_rng(seed)
    n = 1200
    start = pd.Timestamp("2026-11-01")
    days = [str((start + pd.Timedelta(days=d)).date()) for d in range(10)]
    time = start + pd.to_timedelta(rng.integers(0, 10 * 86400, n), unit="s")
    lag = rng.choice([0, 0, 0, 1, 2, 3, 5, 7, 9], n)  # arrival days after the event's day
    events = pd.DataFrame(
        {
            "event_id": [f"e{i:04d}" for i in range(n)],
            "user_id": rng.choice(["u1", "u2"], n),
            "item_id": rng.choice(["i1", "i2", "i3"], n),
            "request_id": rng.choice(["r1", "r2", "r3"], n),
            "event_type": rng.choice(["impression", "click", "conversion"], n, p=[0.4, 0.35, 0.25]),
            "event_time": time,
            "dt": [days[min(9, (t - start).days + d)] for t, d in zip(time, lag, strict=True)],
        }
    )
    window, known, horizon = 30.0, days[8], 6  # hours; the last day ingested; days
    frame = spark.createDataFrame(events)
    impressions = frame.where(F.col("event_type") == "impression")
    got = (
        labelled(
            impressions, frame.where(F.col("event_type") != "impression"), window, known, horizon
        )
        .select("event_id", "click", "conversion")
        .toPandas()
    )
    expected = oracle_labels(events, pd.Timedelta(hours=window), known, horizon)
    assert_tables_equal(expected.reset_index(), got, table="labels", key=["event_id"])
    got = got.set_index("event_id")
    # Both outcomes of each label occur, including clicks left unconverted.
    assert set(got.click) == {0, 1} and set(got.conversion) == {0, 1}
    assert ((got.click == 1) & (got.conversion == 0)).any()
    # The arrival rules bite: events that arrived days later label some impressions, and
    # some are cut (arrived before the impression's day, past the horizon, not yet known).
    same_day = oracle_labels(events, pd.Timedelta(hours=window), known, 0)
    assert (same_day.click < expected.click).any()
    anytime = oracle_labels(events.assign(dt=days[0]), pd.Timedelta(hours=window), known, 0)
    assert (anytime.click > expected.click).any()


def test_state_write_drops_days_past_retention_in_the_same_commit(spark, settings, tmp_path):
    from choirflow import tables
    from choirflow.features.sequences import state_from_clicks, write_state

    local = settings.model_copy(
        update={
            "paths": settings.paths.model_copy(update={"warehouse": str(tmp_path)}),
            "features": settings.features.model_copy(update={"state_retention_days": 2}),
        }
    )
    rng = np.random.default_rng(8)
    clicks = _random_events(rng, 20, "r", ["u1", "u2"], pd.Timestamp("2026-11-01"), 86400)
    state = state_from_clicks(spark.createDataFrame(clicks), 5)
    days = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]

    def kept_rows() -> dict[str, int]:
        table = tables.read(spark, tables.SILVER_SEQUENCE_STATE, local)
        return {r.dt: r["count"] for r in table.groupBy("dt").count().collect()}

    for dt in days:
        write_state(local, state, dt)
    assert kept_rows() == {"2026-11-03": 2, "2026-11-04": 2, "2026-11-05": 2}
    # One commit per day: the retention delete rides on the day's overwrite.
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, tables.SILVER_SEQUENCE_STATE.path(local)).history()
    assert history.count() == len(days)
    # A backfill of an earlier day drops only days older than its own retention window.
    write_state(local, state.limit(1), "2026-11-04")
    assert kept_rows() == {"2026-11-03": 2, "2026-11-04": 1, "2026-11-05": 2}


@pytest.mark.parametrize(("seed", "max_len"), [(11, 4), (12, 50)])
def test_a_range_of_days_equals_the_days_one_by_one(spark, seed, max_len):
    """sequences_for_days over five days (one without events, late clicks and impressions
    from the day before, same-second ties, users who appear mid-range) gives every
    impression the history, and every day the state, of five daily runs."""
    from choirflow.dates import days_between
    from choirflow.features.sequences import (
        next_state,
        sequences_for_day,
        sequences_for_days,
        state_from_clicks,
    )

    rng = np.random.default_rng(seed)
    days = days_between("2026-11-02", "2026-11-06")
    users = ["u1", "u2", "u3", "u4", "u5"]
    clicks, impressions = [], []
    for i, day in enumerate(days):
        if day == "2026-11-04":
            continue  # a day without events
        start = pd.Timestamp(day)
        late = start - pd.Timedelta(hours=3)
        for frame, kind, n in ((clicks, "c", 25), (impressions, "m", 30)):
            part = pd.concat(
                [
                    _random_events(rng, n, f"{kind}{i}-", users[: 3 + i], start, 40),  # ties
                    _random_events(rng, 4, f"{kind}{i}l-", users, late, 3 * 3600),  # late
                ],
                ignore_index=True,
            )
            frame.append(part.assign(dt=day))
    clicks, impressions = pd.concat(clicks), pd.concat(impressions).drop(columns="category")
    before = _random_events(rng, 12, "p", users[:2], pd.Timestamp("2026-11-01"), 86400)
    prev = state_from_clicks(spark.createDataFrame(before), max_len).localCheckpoint()

    state_days = spark.createDataFrame([(d,) for d in days], "day string")
    got_hist, got_states = sequences_for_days(
        spark.createDataFrame(impressions), spark.createDataFrame(clicks), prev, max_len,
        state_days,
    )  # fmt: skip
    expected_hist, expected_states, state = [], [], prev
    for day in days:
        imps = impressions[impressions.dt == day]
        day_clicks = clicks[clicks.dt == day].drop(columns="dt")
        schema = "user_id string, event_id string, event_time timestamp, item_id string"
        imps_df = spark.createDataFrame(imps) if len(imps) else spark.createDataFrame(
            [], f"{schema}, dt string")  # fmt: skip
        clicks_df = spark.createDataFrame(day_clicks) if len(day_clicks) else (
            spark.createDataFrame([], f"{schema}, category string"))  # fmt: skip
        hist, changed = sequences_for_day(
            imps_df, clicks_df, state, max_len, day_start=F.lit(day).cast("timestamp")
        )
        expected_hist.append(hist.toPandas())
        state = next_state(state, changed).localCheckpoint()
        expected_states.append(state.toPandas().assign(dt=day))
    columns = ["event_id", "hist_item_ids", "hist_categories", "hist_len", "clicks_today"]
    assert_tables_equal(
        pd.concat(expected_hist)[columns], got_hist.toPandas()[columns],
        table="history by range", key=["event_id"],
    )  # fmt: skip

    def ids(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(seq=[tuple(e["event_id"] for e in seq) for seq in frame.seq])

    assert_tables_equal(
        ids(pd.concat(expected_states))[["user_id", "dt", "seq"]],
        ids(got_states.toPandas())[["user_id", "dt", "seq"]],
        table="states by range", key=["user_id", "dt"],
    )  # fmt: skip
    if max_len < 10:  # the short list truncated the carried state on some day
        assert (got_hist.toPandas().hist_len == max_len).any()
