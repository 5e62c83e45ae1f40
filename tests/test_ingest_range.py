"""Ingest over a range of arrival days in one pass equals ingest day by day, and both keep
what a plain pandas reading of the arrival rules keeps: the first copy of an event (a later
copy is a duplicate, or a conflicting duplicate when it says otherwise), clicks with a kept
impression and conversions with a kept click delivered the same day or in the lookback
before, a click or conversion that arrives before its parent waiting until the parent is kept
(then in bronze on that day) or its window closes (then in quarantine), and a key's newest
catalogue row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.compare import assert_tables_equal, assert_warehouses_equal
from choirflow.config import FeatureSettings
from choirflow.dates import day_offset, days_between
from choirflow.ingest.raw import ingest_day, ingest_days
from tests.conftest import runs_reconcile

WINDOW_DAYS = FeatureSettings().parent_lookback_days  # the default the tests' settings keep

pytestmark = pytest.mark.spark

DAYS = days_between("2027-05-01", "2027-05-06")
CHUNKS = (("2027-05-01", "2027-05-02"), ("2027-05-03", "2027-05-05"), ("2027-05-06", "2027-05-06"))
EMPTY_DAY = "2027-05-04"
IGNORED = ("ingested_at", "run_id", "quarantined_at", "recorded_at")


def _event(n: int, kind: str, dt: str, request: int, user: int, item: int, second: int) -> dict:
    return {
        "event_id": f"e{n}",
        "event_type": kind,
        "user_id": f"u{user}",
        "item_id": f"i{item}",
        "request_id": f"r{request}",
        "position": 0 if kind == "impression" else None,
        "event_time": f"{dt}T08:00:{second:02d}.000Z",
        "ingestion_time": f"{dt}T09:00:{second:02d}.000Z",
        "device": "web",
        "surface": "home",
    }


def _deliveries(rng: np.random.Generator) -> dict[str, list[dict]]:
    """Impressions, clicks and conversions over the days, with copies of events re-delivered
    on the same day, within the lookback and after it, clicks whose impression arrives too
    early or not at all, and a day with nothing."""
    by_day: dict[str, list[dict]] = {dt: [] for dt in DAYS}
    n = 0
    for i, dt in enumerate(DAYS):
        if dt == EMPTY_DAY:
            continue
        for request in range(6):
            rid, user, item = i * 10 + request, int(rng.integers(3)), int(rng.integers(4))
            n += 1
            impression = _event(n, "impression", dt, rid, user, item, int(rng.integers(60)))
            by_day[dt].append(impression)
            # a click the same day, a few days later (in or out of the lookback), or none
            lag = int(rng.choice([0, 0, 1, 3, 4, 6, -1]))
            click_day = day_offset(dt, lag) if lag >= 0 else None
            if click_day in by_day and click_day != EMPTY_DAY:
                n += 1
                click = _event(n, "click", click_day, rid, user, item, int(rng.integers(60)))
                by_day[click_day].append(click)
                if rng.random() < 0.5:
                    conversion_day = day_offset(click_day, int(rng.choice([0, 1, 2, 5])))
                    if conversion_day in by_day and conversion_day != EMPTY_DAY:
                        n += 1
                        by_day[conversion_day].append(
                            _event(n, "conversion", conversion_day, rid, user, item, 59)
                        )
            # copies: re-delivered later, inside or past the lookback, or twice the same day
            for copy_lag in rng.choice([0, 1, 2, 4, 5], size=int(rng.integers(0, 2))):
                copy_day = day_offset(dt, int(copy_lag))
                if copy_day in by_day and copy_day != EMPTY_DAY:
                    copy = dict(impression, ingestion_time=f"{copy_day}T10:00:00.000Z")
                    by_day[copy_day].append(copy)
    # a click and a conversion whose parents never arrive
    by_day[DAYS[2]].append(_event(n + 1, "click", DAYS[2], 999, 0, 0, 1))
    by_day[DAYS[2]].append(_event(n + 2, "conversion", DAYS[2], 998, 0, 0, 2))
    _plant_early_children(by_day, n + 3)
    # copies that say something else under a kept id: days later, and in the same delivery
    for original, dt, device in ((by_day[DAYS[0]][0], DAYS[5], "ios"),
                                 (by_day[DAYS[1]][0], DAYS[1], "android")):  # fmt: skip
        by_day[dt].append(dict(original, device=device, ingestion_time=f"{dt}T11:00:00.000Z"))
    return by_day


def _plant_early_children(by_day: dict[str, list[dict]], n: int) -> None:
    """Clicks (and conversions) that arrive before their parent: the impression comes a day
    later (inside a chunk, and across a chunk's end), three days later with the click's
    conversion waiting on the click, or too late (the click expires on the empty day); a copy
    of a waiting click re-delivered while it waits, and another after it expired."""
    plan = ((DAYS[0], DAYS[1], False), (DAYS[1], DAYS[2], False), (DAYS[2], DAYS[5], True),
            (DAYS[0], DAYS[4], False))  # fmt: skip
    for k, (child_day, parent_day, converts) in enumerate(plan):
        rid = 500 + k
        by_day[parent_day].append(_event(n, "impression", parent_day, rid, 1, 2, 30))
        click = _event(n + 1, "click", child_day, rid, 1, 2, 31)
        by_day[child_day].append(click)
        if converts:
            by_day[child_day].append(_event(n + 2, "conversion", child_day, rid, 1, 2, 32))
        n += 3
    for copy_day in (DAYS[1], DAYS[5]):  # the expiring click again: while it waits, and after
        by_day[copy_day].append(dict(click, ingestion_time=f"{copy_day}T10:00:00.000Z"))


def _item(item: int, dt: str, hour: int, price: float) -> dict:
    return {
        "item_id": f"i{item}", "title": f"Item {item}", "category_path": "home/kitchen",
        "tags": ["gift"], "brand": "Hom", "price": price, "image_vector": [0.1] * 32,
        "updated_at": f"{dt}T{hour:02d}:00:00.000Z",
    }  # fmt: skip


def _items() -> dict[str, list[dict]]:
    """Catalogue rows: changes mid-range, two rows of a key in one delivery, an older row
    delivered late, the same updated_at delivered on two days (the later delivery wins)."""
    return {
        DAYS[0]: [_item(0, DAYS[0], 1, 1.0), _item(1, DAYS[0], 1, 2.0)],
        DAYS[2]: [_item(0, DAYS[2], 1, 1.5), _item(0, DAYS[2], 5, 1.6), _item(2, DAYS[2], 3, 3.0)],
        DAYS[4]: [_item(1, DAYS[4], 2, 2.5)],
        DAYS[5]: [
            _item(0, DAYS[1], 0, 0.9),
            _item(1, DAYS[4], 2, 2.6),
            _item(3, DAYS[5], 4, 4.0),
            "not json",
        ],
    }


def _write(raw: Path, source: str, by_day: dict[str, list]) -> None:
    for dt, rows in by_day.items():
        if not rows:
            continue
        folder = raw / source / f"dt={dt}"
        folder.mkdir(parents=True)
        lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
        (folder / "part-00000.jsonl").write_text("\n".join(lines) + "\n")


def _oracle_events(by_day: dict[str, list[dict]]) -> dict[str, set]:
    """What day-by-day arrival does, read plainly in pandas: "kept" (event_id, dt) in bronze,
    "waiting" (event_id, arrival day, state day) and "expired" (event_id, day it expired)."""
    keys = ["user_id", "item_id", "request_id"]
    kept = pd.DataFrame(columns=["event_id", "event_type", *keys, "dt"])
    waiting = pd.DataFrame(columns=["event_id", "event_type", *keys, "arrival"])
    out: dict[str, set] = {"waiting": set(), "expired": set()}
    for dt in DAYS:
        day = pd.DataFrame(by_day[dt] or [], columns=["event_id", "event_type", "user_id",
                           "item_id", "request_id", "ingestion_time", "event_time"])  # fmt: skip
        day = day.sort_values(["ingestion_time", "event_time"]).drop_duplicates("event_id")
        # a copy of any kept event, any day, or of one still waiting
        day = day[~day.event_id.isin(kept.event_id) & ~day.event_id.isin(waiting.event_id)]
        for kind, parent in (("impression", None), ("click", "impression"),
                             ("conversion", "click")):  # fmt: skip
            these = day[day.event_type == kind]
            if parent is not None:
                parents = kept[(kept.dt >= day_offset(dt, -WINDOW_DAYS))
                               & (kept.event_type == parent)]  # fmt: skip
                have = set(parents[keys].itertuples(index=False, name=None))
                today = set(parents[parents.dt == dt][keys].itertuples(index=False, name=None))
                found = np.array(
                    [k in have for k in these[keys].itertuples(index=False, name=None)], bool
                )
                freed = np.array([k in today and w.event_type == kind for w, k in zip(
                    waiting.itertuples(), waiting[keys].itertuples(index=False, name=None),
                    strict=True)], bool)  # fmt: skip
                kept = pd.concat([kept, waiting[freed].assign(dt=dt)[kept.columns]])
                waiting = pd.concat([waiting[~freed], these[~found].assign(arrival=dt)])
                these = these[found]
            kept = pd.concat([kept, these.assign(dt=dt)[kept.columns]])
        closes = waiting.arrival.map(lambda a: day_offset(a, WINDOW_DAYS)) == dt
        out["expired"] |= {(e, dt) for e in waiting[closes].event_id}
        waiting = waiting[~closes]
        out["waiting"] |= {(e, a, dt) for e, a in zip(waiting.event_id, waiting.arrival,
                                                       strict=True)}  # fmt: skip
    out["kept"] = set(zip(kept.event_id, kept.dt, strict=True))
    return out


def _local(settings, root: Path, name: str):
    paths = settings.paths.model_copy(
        update={"raw": str(root / "raw"), "warehouse": str(root / name)}
    )
    return settings.model_copy(update={"paths": paths})


@pytest.fixture(scope="module")
def two_warehouses(spark, settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest-range")
    by_day = _deliveries(np.random.default_rng(11))
    _write(root / "raw", "events", by_day)
    _write(root / "raw", "items", _items())
    daily, ranged = _local(settings, root, "daily"), _local(settings, root, "ranged")
    for dt in DAYS:
        ingest_day(spark, daily, dt)
    for start, end in CHUNKS:
        ingest_days(spark, ranged, start, end)
    return daily, ranged, by_day


def test_a_range_ingests_what_the_days_ingest(spark, two_warehouses):
    daily, ranged, _ = two_warehouses
    assert_warehouses_equal(
        spark, daily, ranged,
        (tables.BRONZE_EVENTS, tables.BRONZE_ITEM_HISTORY, tables.BRONZE_ITEMS,
         tables.BRONZE_QUARANTINE, tables.BRONZE_INGEST_RUNS, tables.BRONZE_USER_HISTORY,
         tables.BRONZE_PENDING_EVENTS),
        ignore=IGNORED,
    )  # fmt: skip


def test_kept_events_follow_the_arrival_rules(spark, two_warehouses):
    daily, ranged, by_day = two_warehouses
    oracle = _oracle_events(by_day)
    expected = pd.DataFrame(sorted(oracle["kept"]), columns=["event_id", "dt"])
    waiting = pd.DataFrame(sorted(oracle["waiting"]), columns=["event_id", "arrival_dt", "dt"])
    expired = pd.DataFrame(sorted(oracle["expired"]), columns=["event_id", "dt"])
    for built in (daily, ranged):
        actual = tables.read(spark, tables.BRONZE_EVENTS, built).select("event_id", "dt")
        assert_tables_equal(expected, actual.toPandas(), table="bronze.events", key=["event_id"])
        state = tables.read(spark, tables.BRONZE_PENDING_EVENTS, built)
        assert_tables_equal(waiting, state.select("event_id", "arrival_dt", "dt").toPandas(),
                            table="bronze.pending_events", key=["event_id", "dt"])  # fmt: skip
        orphans = (
            tables.read(spark, tables.BRONZE_QUARANTINE, built)
            .where(F.col("reason").startswith("orphan_"))
            .select(F.get_json_object("raw_record", "$.event_id").alias("event_id"), "dt")
        )
        assert_tables_equal(expired, orphans.toPandas(), table="bronze.quarantine",
                            key=["event_id"])  # fmt: skip
    runs = tables.read(spark, tables.BRONZE_INGEST_RUNS, ranged).toPandas()
    assert runs_reconcile(runs).all()
    events = runs[runs.source == "raw_events"].set_index("dt")
    assert events.loc[EMPTY_DAY, "raw_rows"] == 0 and events.duplicate_rows.sum() > 0
    assert events.released_rows.sum() >= 4 and events.loc[EMPTY_DAY, "expired_rows"] >= 1
    reasons = tables.read(spark, tables.BRONZE_QUARANTINE, ranged).groupBy("reason").count()
    found = {r.reason: r["count"] for r in reasons.collect()}
    assert found.get("orphan_click", 0) >= 1 and found.get("orphan_conversion", 0) >= 1
    assert found.get("conflicting_duplicate", 0) == 2


def test_labels_from_what_was_kept_follow_the_oracle(spark, settings, two_warehouses):
    """Labels over the range from each warehouse's bronze equal the pandas oracle's labels
    of the events the arrival rules keep: a copy delivered on a later day counts once,
    clicks that waited for their impression label it, a conversion whose click never came
    labels nothing, and a click or conversion counts only from its impression's day on and
    within the attribution window (these clicks come a day later at about the same time)."""
    from choirflow.features.labels import horizon_days, label_impressions
    from tests.test_samples_oracle import oracle_labels

    daily, ranged, by_day = two_warehouses
    delivered = pd.DataFrame(
        [{**e, "delivered": dt} for dt, day in by_day.items() for e in day if isinstance(e, dict)]
    ).sort_values(["delivered", "ingestion_time", "event_time"])
    first = delivered.drop_duplicates("event_id").drop(columns="dt", errors="ignore")
    kept = pd.DataFrame(sorted(_oracle_events(by_day)["kept"]), columns=["event_id", "dt"])
    events = first.merge(kept, on="event_id")
    events["event_time"] = pd.to_datetime(events["event_time"]).dt.tz_localize(None)
    window = settings.features.attribution_hours
    expected = oracle_labels(events, pd.Timedelta(hours=window), DAYS[-1], horizon_days(settings))
    assert expected.click.sum() > 0 and expected.conversion.sum() > 0
    for built in (daily, ranged):
        shown = tables.read(spark, tables.BRONZE_EVENTS, built).where(
            F.col("event_type") == "impression"
        )
        got = label_impressions(spark, built, shown, DAYS[0], DAYS[-1])
        assert_tables_equal(expected.reset_index(),
                            got.select("event_id", "click", "conversion").toPandas(),
                            table="labels", key=["event_id"])  # fmt: skip


def test_the_catalogue_keeps_each_keys_newest_row(spark, two_warehouses):
    _, ranged, _ = two_warehouses
    rows = [row for day in _items().values() for row in day if isinstance(row, dict)]
    frame = pd.DataFrame(rows).assign(dt=[dt for dt, day in _items().items()
                                          for row in day if isinstance(row, dict)])  # fmt: skip
    newest = frame.sort_values(["updated_at", "dt"]).groupby("item_id").tail(1)
    current = tables.read(spark, tables.BRONZE_ITEMS, ranged).select("item_id", "price", "dt")
    assert_tables_equal(
        newest[["item_id", "price", "dt"]], current.toPandas(), table="bronze.items",
        key=["item_id"],
    )  # fmt: skip
    late = tables.read(spark, tables.BRONZE_ITEM_HISTORY, ranged).where(F.col("dt") == DAYS[5])
    assert {r.item_id: r.price for r in late.collect()} == {"i0": 0.9, "i1": 2.6, "i3": 4.0}
