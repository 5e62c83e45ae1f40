"""A catalogue of bad raw input. Each kind ends in bronze.quarantine with its reason, or in a
failed gate with a clear message, and the counts reconcile: nothing is silently dropped."""

from __future__ import annotations

import gzip
import json
import random
import re
from functools import partial
from itertools import count
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.dates import day_offset
from choirflow.evaluate.report import skipped_files
from choirflow.ingest.raw import (
    RawFileError,
    ingest_dimension,
    ingest_events,
    ingest_events_days,
)
from choirflow.quality.checks import bronze_gate
from choirflow.quality.gate import QualityGateError
from choirflow.synth.mutations import mutate

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


def _write_files(settings, source: str, dt: str, files: dict[str, bytes]) -> None:
    folder = Path(settings.raw_dir) / source / f"dt={dt}"
    for relative, payload in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(payload)


def _write(settings, source: str, dt: str, lines: list) -> None:
    """One file of JSON lines (a dict is dumped, a string written as it is)."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    _write_files(settings, source, dt, {"part-00000.jsonl": text.encode()})


def _quarantine(spark, settings, dt: str, source: str = "raw_events") -> list[str]:
    q = tables.read(spark, tables.BRONZE_QUARANTINE, settings)
    rows = q.where((F.col("dt") == dt) & (F.col("source_table") == source)).collect()
    return sorted(r.reason for r in rows)


def test_bad_duplicates_across_days_in_any_order(spark, settings):
    """An event id bronze holds is a duplicate whatever day its copy arrives on (ten days
    later: past any look-back) and in whatever order the days are ingested (an earlier day
    after a later one that carried a copy); a copy that says something else under the id is
    a conflicting_duplicate, and both versions can be found."""
    early, late, replay = "2027-02-01", "2027-02-02", "2027-02-12"
    same = _event(early, 1, event_id="dup-1")
    other = _event(early, 2, event_id="dup-2", device="ios")
    finer = _event(early, 3, event_id="dup-3", event_time=f"{early}T10:00:00.000001Z")
    again = {"ingestion_time": f"{late}T08:00:00.000Z"}
    _write(settings, "events", late, [
        dict(same, **again), dict(other, device="web", **again),
        dict(finer, event_time=f"{early}T10:00:00.000002Z", **again),  # a microsecond apart
    ])  # fmt: skip
    _write(settings, "events", early, [same, other, finer])
    _write(settings, "events", replay, [dict(same, ingestion_time=f"{replay}T08:00:00.000Z")])
    for dt in (late, early, replay):
        counts = ingest_events(spark, settings, dt)
        assert counts.reconciles
    assert (counts.bronze_rows, counts.duplicate_rows) == (0, 1)  # the replay
    assert _quarantine(spark, settings, early) == ["conflicting_duplicate"] * 2
    bronze = tables.read(spark, tables.BRONZE_EVENTS, settings).where(
        F.col("event_id").isin("dup-1", "dup-2", "dup-3")
    )
    assert sorted((r.event_id, r.dt, r.device) for r in bronze.collect()) == [
        ("dup-1", late, "ios"), ("dup-2", late, "web"), ("dup-3", late, "ios")
    ]  # fmt: skip
    q = tables.read(spark, tables.BRONZE_QUARANTINE, settings).where(F.col("dt") == early)
    assert sorted(json.loads(r.raw_record)["event_id"] for r in q.collect()) == ["dup-2", "dup-3"]


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


# ---- one planted day: many kinds of bad input, ingested once -------------------------------
#
# Each kind's lines carry ids that start with the kind; the fixture ingests the day once and
# each test below asserts where every one of its lines went.

PLANTED = "2027-04-01"
# name -> (catalogue line, where it must go: a rule, or "bronze")
PLANTED_ITEMS = {
    "plain": (_item(PLANTED, 1), "bronze"),
    "a long tag": (_item(PLANTED, 2, tags=["t" * 65]), "too_long:tags"),
    "32 tags": (_item(PLANTED, 3, tags=["ok"] * 32), "bronze"),
    "a negative price": (_item(PLANTED, 4, price=-3.0), "below_min:price"),
    "an absurd price": (_item(PLANTED, 5, price=1e9), "above_max:price"),
    "NaN in the vector": (json.dumps(_item(PLANTED, 6)).replace("0.1]", "NaN]"),
                          "non_finite:image_vector"),
    "a narrow vector": (_item(PLANTED, 7, image_vector=[0.1] * 7), "wrong_width:image_vector"),
    "no vector": (_item(PLANTED, 8, image_vector=None), "bronze"),
    "a blank brand": (_item(PLANTED, 9, brand="  "), "bronze"),
    "a blank title": (_item(PLANTED, 10, title=" \n "), "blank:title"),
    "a blank key": (_item(PLANTED, 11, item_id=" "), "blank:item_id"),
}  # fmt: skip
_STRAYS = ("dt=garbage", "dt=2027-4-1", "dt=2027-02-30")


def _line(dt: str, kind: str, n: int, **overrides) -> str:
    return json.dumps(_event(dt, n, event_id=f"{kind}-{n}", **overrides))


def _planted_rules(dt: str) -> dict[str, list[tuple[str, str]]]:
    """kind -> [(raw line, where it must go: a rule, or "bronze")]: the contract's rules."""
    line = partial(_line, dt)
    no_user = {k: v for k, v in _event(dt, 1, event_id="missing-1").items() if k != "user_id"}
    no_time = {k: v for k, v in _event(dt, 3, event_id="missing-3").items() if k != "event_time"}
    return {
        "malformed": [
            ('{"event_id": "malformed-1", ', "malformed_json"),
            ("[1, 2]", "malformed_json"),
        ],
        "wrong": [
            (line("wrong", 1, position="third"), "type:position"),
            (line("wrong", 2, event_time="yesterday"), "bad_time:event_time"),
        ],
        "missing": [
            (json.dumps(no_user), "missing:user_id"),
            (line("missing", 2, item_id=None), "missing:item_id"),
            (json.dumps(no_time), "missing:event_time"),
        ],
        "spaced": [
            (json.dumps(_event(dt, 1, event_id="   ")), "blank:event_id"),
            (line("spaced", 2, user_id=""), "blank:user_id"),
            (line("spaced", 3, item_id="\u00a0\t"), "blank:item_id"),
            (line("spaced", 4, request_id="r 4"), "bad_characters:request_id"),
            (line("spaced", 5, user_id="u5\u0007"), "bad_characters:user_id"),
        ],
        "unknown": [(line("unknown", 1, event_type="purchase"), "not_allowed:event_type")],
        "clock": [
            (line("clock", 1, event_time="2030-01-01T00:00:00.000Z"), "event_time_in_future"),
            (line("clock", 2, event_time="2019-01-01T00:00:00.000Z"), "event_time_too_old"),
        ],
        "extra": [(line("extra", 1, shoe_size=42), "unexpected_column")],
        "long": [(line("long", 1, user_id="u" * 5000), "too_long:user_id")],
        "blankopt": [(line("blankopt", 1, device=" ", surface=""), "bronze")],
        "orphan": [
            (
                line("orphan", 1, event_type="click", request_id="nowhere", position=None),
                "pending",
            ),
            (
                line("orphan", 2, event_type="click", request_id=f"{dt}-r9", position=None),
                "bronze",
            ),  # the good impression's click
            (
                line("orphan", 3, event_type="conversion", request_id="nowhere-2", position=None),
                "pending",
            ),
        ],  # fmt: skip
    }


def _planted_strictness(dt: str) -> dict[str, list[tuple[str, str]]]:
    """kind -> [(raw line, where it must go)]: what Spark's own reader let through."""
    line = partial(_line, dt)

    def joined(kind: str, n: int, separator: str) -> str:
        return line(kind, n) + separator + line(kind, n + 1)

    def arriving(n: int, event: str, ingested: str) -> str:
        return line("arrival", n, event_time=event, ingestion_time=ingested)

    next_day = day_offset(dt, 1)
    return {
        "type": [
            (line("type", 1, user_id={"id": "u0000022"}), "type:user_id"),
            (line("type", 2, item_id=["i000082"]), "type:item_id"),
            (line("type", 3, surface={"page": "home"}), "type:surface"),
            (line("type", 4, user_id=12345), "type:user_id"),
            (line("type", 5, request_id=True), "type:request_id"),
            (line("type", 6, position="3"), "type:position"),
            (line("type", 7, position=2.0), "type:position"),
            (line("type", 8, event_time=1798761600), "type:event_time"),
        ],
        "joined": [
            (joined("joined", 1, ""), "malformed_json"),
            (line("joined", 3) + " trailing garbage", "malformed_json"),
            (joined("joined", 4, ","), "malformed_json"),
            ("[" + line("joined", 6) + "]", "malformed_json"),
        ],
        "repeated": [
            (line("repeated", 1)[:-1] + ', "user_id": "u2"}', "malformed_json"),
            (line("repeated", 2)[:-1] + ', "event_id": "repeated-2"}', "malformed_json"),
        ],
        "huge": [(line("huge", 1, surface="x" * (1 << 20)), "line_too_long")],
        "arrival": [
            (
                arriving(1, "2030-01-01T00:00:00Z", "2030-01-01T00:00:01Z"),
                "event_time_after_arrival_day",
            ),
            (
                arriving(2, f"{dt}T23:59:00Z", f"{next_day}T01:00:00Z"),
                "ingestion_time_after_arrival_day",
            ),
            (arriving(3, f"{dt}T23:59:00Z", f"{next_day}T00:05:00Z"), "bronze"),  # in the skew
        ],  # fmt: skip
        "times": [
            (line("times", 1, event_time=f"{dt}T10:00:00.123456Z"), "bronze"),
            (line("times", 2, event_time=f"{dt}T11:00:00+01:00"), "bronze"),
            (line("times", 3, event_time=f"{dt.replace('-', '')}T100000Z"), "bronze"),
            (line("times", 4, event_time=f"{dt}T10:00:00"), "bad_time:event_time"),
        ],
    }


def _mutations(dt: str, seed: int = 7, n: int = 120) -> list[tuple[str, str]]:
    """Seeded random mutations of valid lines, each with the rule it must break."""
    rng = random.Random(seed)
    return [
        mutate(_event(dt, i, event_id=f"mutation-{i}"), rng,
               _event(dt, i, event_id=f"mutation-{i}-b"))
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def planted(spark, settings):
    """The planted day ingested once: its events, items and the files around them."""
    dt = PLANTED
    kinds = _planted_rules(dt) | _planted_strictness(dt)
    kinds["mutation"] = _mutations(dt)
    body = "\n".join(line for lines in kinds.values() for line, _ in lines) + "\n"
    good = (json.dumps(_event(dt, 9, event_id="good-9")) + "\n").encode()
    utf8 = _line(dt, "utf8", 1).encode().replace(b'"ios"', b'"i\xff\xfeos"') + b"\n"
    nested = (json.dumps(_event(dt, 8, event_id="nested-8")) + "\n").encode()
    zipped = gzip.compress((json.dumps(_event(dt, 7, event_id="zipped-7")) + "\n").encode())
    unread = {
        ".hidden.jsonl": good, "_underscore.jsonl": good, "_temporary/0/part-1.jsonl": good,
        "part-00002.jsonl.tmp": good, "notes.txt": good,
    }  # fmt: skip
    globbed = (json.dumps(_event(dt, 6, event_id="globbed-6")) + "\n").encode()
    _write_files(settings, "events", dt, {
        "part-00000.jsonl": good + good + good + utf8 + body.encode(),  # two copies of one
        "late/part-00001.jsonl": nested,
        "part[9].jsonl": globbed,
        "part-00003.jsonl.gz": zipped, **unread,
    })  # fmt: skip
    _write(settings, "items", dt, [outcome[0] for outcome in PLANTED_ITEMS.values()])
    _write(settings, "users", dt, [{"user_id": "u1", "updated_at": f"{dt}T00:00:00Z"}])
    strays = [Path(settings.raw_dir) / "events" / name for name in _STRAYS]
    for folder in strays:
        folder.mkdir(parents=True)
    try:
        counts = ingest_events(spark, settings, dt)
        item_counts = ingest_dimension(spark, settings, "items", dt)
        ingest_dimension(spark, settings, "users", dt)  # the gate reads the users as of dt
        gate = bronze_gate(spark, settings, dt)
    finally:
        for folder in strays:
            folder.rmdir()
    q = tables.read(spark, tables.BRONZE_QUARANTINE, settings).where(F.col("dt") == dt)
    events = tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == dt)
    history = tables.read(spark, tables.BRONZE_ITEM_HISTORY, settings).where(F.col("dt") == dt)
    waiting = tables.read(spark, tables.BRONZE_PENDING_EVENTS, settings).where(F.col("dt") == dt)
    return {
        "pending": {r.event_id for r in waiting.select("event_id").collect()},
        "kinds": kinds,
        "counts": counts,
        "item_counts": item_counts,
        "gate": gate,
        "quarantined": {r.raw_record: r.reason for r in q.collect()},
        "items": {r.item_id: r for r in history.collect()},
        "bronze": {r.event_id: r for r in events.collect()},
    }


def _assert_where_each_item_went(planted, *names: str) -> None:
    wrong = []
    for name in names:
        line, expected = PLANTED_ITEMS[name]
        raw = line if isinstance(line, str) else json.dumps(line)
        kept = json.loads(raw)["item_id"] in planted["items"]
        went = planted["quarantined"].get(raw, "bronze" if kept else "nowhere")
        if went != expected:
            wrong.append((name, expected, went))
    assert not wrong, f"items that went elsewhere: {wrong}"


def _assert_where_each_line_went(planted, kind: str) -> None:
    quarantined, bronze = planted["quarantined"], planted["bronze"]
    wrong = []
    for line, expected in planted["kinds"][kind]:
        ids = re.findall(rf'"({kind}-\d+(?:-b)?)"', line)
        in_bronze = [i for i in ids if i in bronze]
        waits = any(i in planted["pending"] for i in ids)
        went = quarantined.get(line, "bronze" if in_bronze else "pending" if waits else "nowhere")
        if went != expected or (expected != "bronze" and in_bronze):
            wrong.append((line[:120], expected, went, in_bronze))
    assert not wrong, f"{len(wrong)} lines went elsewhere; first: {wrong[:3]}"


def test_bad_malformed_json(planted):
    _assert_where_each_line_went(planted, "malformed")


def test_bad_wrong_types(planted):
    _assert_where_each_line_went(planted, "wrong")


def test_bad_missing_ids_or_columns(planted):
    _assert_where_each_line_went(planted, "missing")


def test_bad_blank_or_spaced_ids(planted):
    """Ids must be non-empty after trimming (Unicode spaces included) and hold no whitespace
    or control characters; each broken rule is named."""
    _assert_where_each_line_went(planted, "spaced")


def test_bad_unknown_event_types(planted):
    _assert_where_each_line_went(planted, "unknown")


def test_bad_event_times_in_the_future_or_far_past(planted):
    _assert_where_each_line_went(planted, "clock")


def test_bad_unexpected_extra_column(planted):
    _assert_where_each_line_went(planted, "extra")


def test_bad_oversized_strings(planted):
    _assert_where_each_line_went(planted, "long")


def test_bad_json_values_of_the_wrong_type_are_not_coerced(planted):
    _assert_where_each_line_went(planted, "type")


def test_bad_concatenated_objects_or_trailing_text(planted):
    """Each line is one record: two objects, an object and more text, or an array are one
    malformed line, none of whose objects reaches bronze; counts reconcile per line."""
    _assert_where_each_line_went(planted, "joined")
    assert planted["counts"].reconciles


def test_bad_repeated_keys(planted):
    _assert_where_each_line_went(planted, "repeated")


def test_bad_huge_line_is_too_long_not_missing_fields(planted):
    _assert_where_each_line_went(planted, "huge")


def test_bad_times_after_the_arrival_day(planted):
    _assert_where_each_line_went(planted, "arrival")


def test_bad_time_forms_other_than_milliseconds_zulu(planted):
    """Valid ISO 8601 forms are read (in UTC, to the microsecond); a time with no offset is
    ambiguous and refused."""
    _assert_where_each_line_went(planted, "times")
    bronze = planted["bronze"]
    assert str(bronze["times-1"].event_time) == f"{PLANTED} 10:00:00.123456"
    assert str(bronze["times-2"].event_time) == f"{PLANTED} 10:00:00"
    assert str(bronze["times-3"].event_time) == f"{PLANTED} 10:00:00"


def test_bad_random_mutations_always_reach_quarantine(planted):
    """A property over 120 seeded random mutations of valid lines (a JSON type flipped, a key
    blanked, two lines joined, a required field dropped): each ends in quarantine with the
    rule its mutation breaks, never in bronze, and the counts reconcile."""
    _assert_where_each_line_went(planted, "mutation")
    counts = planted["counts"]
    planted_lines = sum(len(lines) for lines in planted["kinds"].values())
    # the good line and its two copies, the invalid UTF-8, nested, compressed, globbed lines
    assert counts.raw_rows == planted_lines + 7
    assert counts.reconciles and counts.duplicate_rows == 2


def test_bad_long_tags(planted):
    _assert_where_each_item_went(planted, "a long tag", "32 tags")
    assert planted["item_counts"].bronze_rows == 4 and planted["item_counts"].reconciles


def test_bad_negative_or_absurd_prices(planted):
    _assert_where_each_item_went(planted, "plain", "a negative price", "an absurd price")


def test_bad_nan_or_wrong_width_image_vectors(planted):
    _assert_where_each_item_went(planted, "NaN in the vector", "a narrow vector", "no vector")


def test_bad_blank_optional_strings_are_read_as_null(planted):
    """Blank optional strings are absent, not values: the row is kept with nulls. A blank
    required string (a title) quarantines its row; so does a blank catalogue key."""
    _assert_where_each_line_went(planted, "blankopt")
    kept = planted["bronze"]["blankopt-1"]
    assert (kept.device, kept.surface) == (None, None)
    _assert_where_each_item_went(planted, "a blank brand", "a blank title", "a blank key")
    assert planted["items"]["bad-i9"].brand is None


def test_bad_duplicates(planted):
    """Two more copies of one event in one delivery: counted, not kept."""
    assert planted["counts"].duplicate_rows == 2 and "good-9" in planted["bronze"]


def test_bad_click_or_conversion_with_no_parent(planted, spark, settings):
    """A click or conversion without its parent waits for it (bronze.pending_events); when
    the window closes without one it goes to quarantine, on that day, with the reason."""
    _assert_where_each_line_went(planted, "orphan")
    window = settings.features.parent_lookback_days
    closes = day_offset(PLANTED, window)
    counts = ingest_events_days(spark, settings, day_offset(PLANTED, 1), closes)
    assert [c.expired_rows for c in counts] == [0] * (window - 1) + [2]
    assert all(c.reconciles for c in counts)
    q = tables.read(spark, tables.BRONZE_QUARANTINE, settings).where(F.col("dt") == closes)
    reasons = {json.loads(r.raw_record)["event_id"]: r.reason for r in q.collect()}
    assert reasons == {"orphan-1": "orphan_click", "orphan-3": "orphan_conversion"}


def test_bad_invalid_utf8(planted):
    """A line with bytes that are not UTF-8 is quarantined (stored with the bytes replaced)."""
    found = [reason for raw, reason in planted["quarantined"].items() if '"utf8-1"' in raw]
    assert found == ["invalid_utf8"] and "utf8-1" not in planted["bronze"]


def test_bad_unread_files_are_accounted_for(planted, spark, settings):
    """Nested folders and compressed files are read; hidden, temporary and unknown files are
    not, and each is named with why in bronze.ingest_runs, as is every folder that is no
    day; the bronze gate warns (soft) and the day is not stopped."""
    counts = planted["counts"]
    day = f"dt={PLANTED}"
    assert sorted(counts.files_read) == [
        f"{day}/late/part-00001.jsonl", f"{day}/part-00000.jsonl", f"{day}/part-00003.jsonl.gz",
        f"{day}/part[9].jsonl",  # read as itself, not as a pattern
    ]  # fmt: skip
    assert sorted(counts.files_skipped) == sorted([
        f"{day}/.hidden.jsonl (hidden)", f"{day}/_underscore.jsonl (hidden)",
        f"{day}/_temporary/0/part-1.jsonl (hidden)", f"{day}/part-00002.jsonl.tmp (temporary)",
        f"{day}/notes.txt (unknown extension)",
        *[f"{name} (not a dt=YYYY-MM-DD folder)" for name in _STRAYS],
    ])  # fmt: skip
    assert {"good-9", "nested-8", "zipped-7", "globbed-6"} <= set(planted["bronze"])
    runs = tables.read(spark, tables.BRONZE_INGEST_RUNS, settings).where(
        (F.col("dt") == PLANTED) & (F.col("source") == "raw_events")
    )
    assert sorted(runs.first().files_skipped) == sorted(counts.files_skipped)
    in_report = skipped_files(runs.toPandas())  # the report's "Raw files not read"
    assert sorted(in_report["not read (why)"]) == sorted(counts.files_skipped)
    runs_report = next(r for r in planted["gate"] if r["table"] == "bronze.ingest_runs")
    assert runs_report["soft_failures"] == 1  # a hard one would have raised


def test_bad_unreadable_file_fails_the_run_naming_it(spark, settings):
    dt = _new_day()
    whole = gzip.compress((json.dumps(_event(dt, 1)) + "\n").encode())
    _write_files(settings, "events", dt, {"part-00000.jsonl.gz": whole[: len(whole) // 2]})
    with pytest.raises(RawFileError, match=r"raw_events: cannot read raw file .*part-00000"):
        ingest_events(spark, settings, dt)
