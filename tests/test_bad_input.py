"""A catalogue of bad raw input. Each kind ends in bronze.quarantine with its reason, or in a
failed gate with a clear message, and the counts reconcile: nothing is silently dropped."""

from __future__ import annotations

import json
from itertools import count
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.ingest.raw import ingest_dimension, ingest_events
from choirflow.quality.checks import bronze_gate
from choirflow.quality.gate import QualityGateError

pytestmark = pytest.mark.spark

_days = count(1)


def _new_day() -> str:
    """A fresh arrival day per test, far from the tiny world's days."""
    return f"2027-01-{next(_days):02d}"


def _event(dt: str, n: int = 0, **overrides) -> dict:
    base = {
        "event_id": f"{dt}-e{n}",
        "event_type": "impression",
        "user_id": "u1",
        "item_id": "i1",
        "request_id": f"{dt}-r{n}",
        "position": 0,
        "event_time": f"{dt}T10:00:0{n % 10}.000Z",
        "ingestion_time": f"{dt}T10:00:1{n % 10}.000Z",
        "device": "ios",
        "surface": "home",
    }
    return {**base, **overrides}


def _item(dt: str, n: int = 0, **overrides) -> dict:
    base = {
        "item_id": f"bad-i{n}",
        "title": "A plain mug",
        "category_path": "home/kitchen",
        "tags": ["gift"],
        "brand": "Hom",
        "price": 9.5,
        "image_vector": [0.1] * 32,
        "updated_at": f"{dt}T00:00:00.000Z",
    }
    return {**base, **overrides}


def _write(settings, source: str, dt: str, lines: list) -> None:
    folder = Path(settings.raw_dir) / source / f"dt={dt}"
    folder.mkdir(parents=True, exist_ok=True)
    payload = b""
    for line in lines:
        if isinstance(line, bytes):
            payload += line + b"\n"
        elif isinstance(line, str):
            payload += line.encode() + b"\n"
        else:
            payload += json.dumps(line).encode() + b"\n"
    (folder / "part-00000.jsonl").write_bytes(payload)


def _quarantine(spark, settings, dt: str, source: str = "raw_events") -> list[str]:
    q = tables.read(spark, tables.BRONZE_QUARANTINE, settings)
    rows = q.where((F.col("dt") == dt) & (F.col("source_table") == source)).collect()
    return sorted(r.reason for r in rows)


def _ingest_events(spark, settings, dt: str, lines: list) -> tuple[object, list[str], str]:
    _write(settings, "events", dt, [_event(dt, 9)] + lines)  # one good row in every file
    counts = ingest_events(spark, settings, dt)
    assert counts.reconciles
    assert counts.raw_rows == len(lines) + 1
    return counts, _quarantine(spark, settings, dt), dt


def test_bad_malformed_json(spark, settings):
    counts, reasons, _ = _ingest_events(
        spark, settings, _new_day(), ['{"event_id": "x", ', "[1, 2]"]
    )
    assert reasons == ["malformed_json", "malformed_json"] and counts.bronze_rows == 1


def test_bad_wrong_types(spark, settings):
    dt = _new_day()
    _, reasons, _ = _ingest_events(
        spark,
        settings,
        dt,
        [_event(dt, 1, position="third"), _event(dt, 2, event_time="yesterday")],
    )
    assert reasons == ["bad_time:event_time", "type:position"]


def test_bad_missing_ids(spark, settings):
    dt = _new_day()
    no_user = {k: v for k, v in _event(dt, 1).items() if k != "user_id"}
    _, reasons, _ = _ingest_events(spark, settings, dt, [no_user, _event(dt, 2, item_id=None)])
    assert reasons == ["missing:item_id", "missing:user_id"]


def test_bad_blank_or_spaced_ids(spark, settings):
    """Ids must be non-empty after trimming (Unicode spaces included) and hold no whitespace
    or control characters; each broken rule is named."""
    dt = _new_day()
    lines = [
        _event(dt, 1, event_id="   "),
        _event(dt, 2, user_id=""),
        _event(dt, 3, item_id="\u00a0\t"),
        _event(dt, 4, request_id="r 4"),
        _event(dt, 5, user_id="u5\u0007"),
    ]
    counts, reasons, _ = _ingest_events(spark, settings, dt, lines)
    assert reasons == ["bad_characters:request_id", "bad_characters:user_id", "blank:event_id",
                       "blank:item_id", "blank:user_id"]  # fmt: skip
    assert counts.bronze_rows == 1


def test_bad_blank_optional_strings_are_read_as_null(spark, settings):
    """Blank optional strings are absent, not values: the row is kept with nulls. A blank
    required string (a title) quarantines its row; so does a blank catalogue key."""
    dt = _new_day()
    _, reasons, _ = _ingest_events(spark, settings, dt, [_event(dt, 1, device=" ", surface="")])
    assert reasons == []
    kept = tables.read(spark, tables.BRONZE_EVENTS, settings).where(
        (F.col("dt") == dt) & (F.col("event_id") == f"{dt}-e1")
    )
    assert [(r.device, r.surface) for r in kept.collect()] == [(None, None)]
    _write(settings, "items", dt, [_item(dt, 1, brand="  "), _item(dt, 2, title=" \n "),
                                   _item(dt, 3, item_id=" ")])  # fmt: skip
    counts = ingest_dimension(spark, settings, "items", dt)
    assert counts.reconciles and counts.bronze_rows == 1
    assert _quarantine(spark, settings, dt, "raw_items") == ["blank:item_id", "blank:title"]
    history = tables.read(spark, tables.BRONZE_ITEM_HISTORY, settings).where(F.col("dt") == dt)
    assert [(r.item_id, r.brand) for r in history.collect()] == [("bad-i1", None)]


def test_bad_unknown_event_types(spark, settings):
    dt = _new_day()
    _, reasons, _ = _ingest_events(spark, settings, dt, [_event(dt, 1, event_type="purchase")])
    assert reasons == ["not_allowed:event_type"]


def test_bad_negative_or_absurd_prices(spark, settings):
    dt = _new_day()
    _write(settings, "items", dt, [_item(dt, 1), _item(dt, 2, price=-3.0), _item(dt, 3, price=1e9)])
    counts = ingest_dimension(spark, settings, "items", dt)
    assert counts.reconciles and counts.bronze_rows == 1
    assert _quarantine(spark, settings, dt, "raw_items") == ["above_max:price", "below_min:price"]


def test_bad_event_times_in_the_future_or_far_past(spark, settings):
    dt = _new_day()
    future = _event(dt, 1, event_time="2030-01-01T00:00:00.000Z")
    past = _event(dt, 2, event_time="2019-01-01T00:00:00.000Z")
    counts, reasons, _ = _ingest_events(spark, settings, dt, [future, past])
    assert reasons == ["event_time_in_future", "event_time_too_old"]


def test_bad_duplicates(spark, settings):
    dt = _new_day()
    dup = _event(dt, 9)  # the same id as the good row that every file carries
    counts, reasons, _ = _ingest_events(spark, settings, dt, [dup, dup])
    assert reasons == [] and counts.duplicate_rows == 2 and counts.bronze_rows == 1


def test_bad_click_with_no_impression(spark, settings):
    dt = _new_day()
    orphan = _event(dt, 1, event_type="click", request_id="nowhere", position=None)
    valid = _event(dt, 2, event_type="click", request_id=f"{dt}-r9", position=None)
    counts, reasons, _ = _ingest_events(spark, settings, dt, [orphan, valid])
    assert reasons == ["orphan_click"] and counts.bronze_rows == 2


def test_bad_conversion_with_no_click(spark, settings):
    dt = _new_day()
    orphan = _event(dt, 1, event_type="conversion", position=None, request_id=f"{dt}-r9")
    counts, reasons, _ = _ingest_events(spark, settings, dt, [orphan])
    assert reasons == ["orphan_conversion"]


def test_bad_nan_or_wrong_width_image_vectors(spark, settings):
    dt = _new_day()
    nan_vector = json.dumps(_item(dt, 2)).replace("0.1]", "NaN]")
    lines = [
        _item(dt, 1),
        nan_vector,
        _item(dt, 3, image_vector=[0.1] * 7),
        _item(dt, 4, image_vector=None),
    ]
    _write(settings, "items", dt, lines)
    counts = ingest_dimension(spark, settings, "items", dt)
    assert counts.reconciles and counts.bronze_rows == 2
    assert _quarantine(spark, settings, dt, "raw_items") == [
        "non_finite:image_vector",
        "wrong_width:image_vector",
    ]


def test_bad_empty_day(spark, settings, built):
    dt = _new_day()
    _write(settings, "events", dt, [])
    counts = ingest_events(spark, settings, dt)
    assert counts.raw_rows == 0 and counts.reconciles
    with pytest.raises(QualityGateError) as failure:
        bronze_gate(spark, settings, dt)
    message = str(failure.value)
    assert "bronze.events" in message and "expect_table_row_count_to_be_between" in message
    assert "stops before training" in message


def test_bad_unexpected_extra_column(spark, settings):
    dt = _new_day()
    _, reasons, _ = _ingest_events(spark, settings, dt, [_event(dt, 1, shoe_size=42)])
    assert reasons == ["unexpected_column"]


def test_bad_missing_column(spark, settings):
    dt = _new_day()
    row = {k: v for k, v in _event(dt, 1).items() if k != "event_time"}
    _, reasons, _ = _ingest_events(spark, settings, dt, [row])
    assert reasons == ["missing:event_time"]


def test_bad_invalid_utf8(spark, settings):
    dt = _new_day()
    line = json.dumps(_event(dt, 1)).encode().replace(b'"ios"', b'"i\xff\xfeos"')
    _, reasons, _ = _ingest_events(spark, settings, dt, [line])
    assert reasons == ["invalid_utf8"]


def test_bad_oversized_strings(spark, settings):
    dt = _new_day()
    _, reasons, _ = _ingest_events(spark, settings, dt, [_event(dt, 1, user_id="u" * 5000)])
    assert reasons == ["too_long:user_id"]


def test_bad_late_events_for_a_day_already_built(spark, settings, built, days):
    """A late event lands in its arrival day's partition (the built day stays as it was), is
    counted, and the bronze gate's soft check reports the late share."""
    built_day = days[0]
    before = (
        tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == built_day).count()
    )
    arrival = "2027-03-01"
    late = [_event(arrival, n, event_time=f"{arrival}T00:00:0{n}.000Z") for n in range(3)] + [
        _event(
            arrival,
            5,
            event_time="2027-02-28T23:00:00.000Z",
            ingestion_time=f"{arrival}T00:10:00.000Z",
        )
    ]
    _write(settings, "events", arrival, late)
    counts = ingest_events(spark, settings, arrival)
    assert counts.bronze_rows == 4 and counts.reconciles
    after = (
        tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == built_day).count()
    )
    assert before == after
    reports = bronze_gate(spark, settings, arrival)
    assert reports[0]["soft_failures"] >= 1  # 1 of 4 late: above the 5% watch level
    results = tables.read(spark, tables.QUALITY_RESULTS, settings).where(
        (F.col("dt") == arrival) & (F.col("column") == "_late")
    )
    assert results.first().success is False
