"""The strict line judge, value by value (no Spark): what Spark's own JSON reader accepts
and should not, and the ISO 8601 forms it refuses and should not."""

from __future__ import annotations

import json

import pytest

from choirflow.contracts import load_contract
from choirflow.ingest.judge import MAX_LINE_BYTES, contract_types, judge_line, utc_time

EVENT_TYPES = contract_types(load_contract("raw_events"))
ITEM_TYPES = contract_types(load_contract("raw_items"))
GOOD = {
    "event_id": "e1",
    "event_type": "click",
    "user_id": "u1",
    "item_id": "i1",
    "request_id": "r1",
    "position": 3,
    "event_time": "2026-11-01T10:00:00.000Z",
    "ingestion_time": "2026-11-01T10:00:01Z",
}


def _rules(line: str, types: dict[str, str] = EVENT_TYPES) -> list[str]:
    return judge_line(line, types)[0]


@pytest.mark.parametrize(
    "line",
    [
        '{"event_id": "a"}{"event_id": "b"}',  # two objects on one line
        '{"event_id": "a"} trailing garbage',
        '{"event_id": "a"},{"event_id": "b"}',
        '[{"event_id": "a"}]',  # a top-level array
        '"just a string"',
        '{"event_id": "a", "event_id": "b"}',  # a repeated key
        '{"event_id": "a", "nested": {"k": 1, "k": 2}}',  # repeated deeper down
        "",
        "   ",
        "{" * 100_000,  # nesting deeper than any parser's stack
    ],
)
def test_a_line_that_is_not_exactly_one_object_is_malformed(line):
    assert judge_line(line, EVENT_TYPES) == (["malformed_json"], None)


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("user_id", {"id": "u0000022"}, "type:user_id"),
        ("item_id", ["i000082"], "type:item_id"),
        ("user_id", 12345, "type:user_id"),
        ("event_id", True, "type:event_id"),
        ("position", "3", "type:position"),
        ("position", 1.5, "type:position"),
        ("position", 2.0, "type:position"),  # a float is not an int, even a whole one
        ("position", False, "type:position"),
        ("position", 2**40, "out_of_range:position"),
        ("event_time", 1730455200, "type:event_time"),
        ("event_time", "yesterday", "bad_time:event_time"),
        ("event_time", "2026-11-01T10:00:00", "bad_time:event_time"),  # no offset: ambiguous
        ("event_time", "2026-11-01", "bad_time:event_time"),
        ("event_time", "2026-11-01x10:00:00Z", "bad_time:event_time"),
        ("event_time", "2026-13-01T10:00:00Z", "bad_time:event_time"),
        ("event_time", "2026-11-01T10.5Z", "bad_time:event_time"),  # half past, not 10:00:00.5
        ("event_time", "2026-11-01T10:30.5Z", "bad_time:event_time"),
        ("event_time", "2026-12-31T23:59:60Z", "bad_time:event_time"),  # a leap second
        ("event_time", "2026-11-01T24:00:01Z", "bad_time:event_time"),
        ("event_time", "2026-366T10:00:00Z", "bad_time:event_time"),  # 2026 has 365 days
        ("event_time", "2026-11-01T10:00:00+1", "bad_time:event_time"),
        ("event_time", "2026-11-01T10:00:00+01:00:30", "bad_time:event_time"),
        ("event_time", "0001-01-01T00:30:00+01:00", "bad_time:event_time"),  # before year 1
        ("event_time", "9999-12-31T23:59:59-01:00", "bad_time:event_time"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_not_coerced(column, value, rule):
    assert _rules(json.dumps({**GOOD, column: value})) == [rule]


def test_catalogue_values_are_judged_by_their_element_types():
    item = {"item_id": "i1", "title": "Mug", "category_path": "home", "price": 9.5,
            "updated_at": "2026-11-01T00:00:00Z"}  # fmt: skip
    assert _rules(json.dumps(item), ITEM_TYPES) == []
    assert _rules(json.dumps({**item, "title": {"en": "Mug"}}), ITEM_TYPES) == ["type:title"]
    assert _rules(json.dumps({**item, "category_path": ["home"]}), ITEM_TYPES) == [
        "type:category_path"
    ]
    assert _rules(json.dumps({**item, "tags": ["a", 1]}), ITEM_TYPES) == ["type:tags"]
    assert _rules(json.dumps({**item, "tags": "gift"}), ITEM_TYPES) == ["type:tags"]
    assert _rules(json.dumps({**item, "price": "9.5"}), ITEM_TYPES) == ["type:price"]
    assert _rules(json.dumps({**item, "image_vector": [0.1, "x"]}), ITEM_TYPES) == [
        "type:image_vector"
    ]
    # NaN and Infinity are numbers to the judge; the contract's range rules refuse them.
    assert _rules(json.dumps({**item, "image_vector": [float("nan")]}), ITEM_TYPES) == []


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-11-01T10:00:00Z", "2026-11-01T10:00:00.000000Z"),
        ("2026-11-01T10:00:00.123456Z", "2026-11-01T10:00:00.123456Z"),
        ("2026-11-01T10:00:00.123456789Z", "2026-11-01T10:00:00.123456Z"),
        ("2026-11-01T10:00:00.5+01:00", "2026-11-01T09:00:00.500000Z"),
        ("2026-11-01T10:00:00,5-0230", "2026-11-01T12:30:00.500000Z"),
        ("2026-11-01 10:00:00+00:00", "2026-11-01T10:00:00.000000Z"),
        ("20261101T100000Z", "2026-11-01T10:00:00.000000Z"),
        ("2026-W44-7T10:00Z", "2026-11-01T10:00:00.000000Z"),
        ("2026-11-01T23:30:00-01:00", "2026-11-02T00:30:00.000000Z"),
        ("2026-305T10:00:00Z", "2026-11-01T10:00:00.000000Z"),  # ordinal date
        ("2026305T1000+01", "2026-11-01T09:00:00.000000Z"),
        ("2026-10-31T24:00:00Z", "2026-11-01T00:00:00.000000Z"),  # the end of a day
        ("2026-11-01t10:00:00z", "2026-11-01T10:00:00.000000Z"),
    ],
)
def test_iso_8601_times_with_an_offset_are_read_in_utc(text, utc):
    assert utc_time(text) == utc
    rules, canonical = judge_line(json.dumps({**GOOD, "event_time": text}), EVENT_TYPES)
    assert rules == [] and json.loads(canonical)["event_time"] == utc


def test_a_line_over_the_size_limit_is_refused_before_parsing():
    line = json.dumps({**GOOD, "user_id": "u" * MAX_LINE_BYTES})
    assert judge_line(line, EVENT_TYPES) == (["line_too_long"], None)


def test_a_lone_surrogate_is_judged_not_crashed_on():
    rules, canonical = judge_line(json.dumps({**GOOD, "surface": "\ud800"}), EVENT_TYPES)
    assert rules == [] and json.loads(canonical)["surface"] == "\ud800"


def test_a_byte_order_mark_is_not_data():
    assert _rules("\ufeff" + json.dumps(GOOD)) == []
