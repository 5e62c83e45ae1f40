"""The strict reader of one raw line: exactly one JSON object, each value of the JSON type the
contract names, times in ISO 8601 with an offset.

Spark's JSON reader is lenient in ways that lose or invent data (measured on pyspark 4.0): it
reads the first of two concatenated objects and ignores text after it, keeps the last value of
a repeated key, and turns an object, array, number or boolean into a string where the schema
asks for one. So each line is judged here, in Python, against the contract, and Spark parses
only the canonical form this returns (every time in UTC in one fixed format), which maps each
value to its column without a choice left to make.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from choirflow.contracts import Contract

# A longer line is refused before it is parsed; the longest valid catalogue line (32 tags of
# 64 characters, a 32-float vector, a 256-character title) is under 8 KiB.
MAX_LINE_BYTES = 1 << 20
# Rules that judge the whole line: when one is broken, nothing inside the line is reported.
WHOLE_LINE_RULES = ("line_too_long", "malformed_json")
# The one form of a time Spark reads back (Spark's pattern below): UTC, microseconds.
SPARK_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
_DATE_FORMS = r"\d{4}-\d{2}-\d{2}|\d{8}|\d{4}-?W\d{2}-?\d|\d{4}-?\d{3}"
_DATE = re.compile(_DATE_FORMS)
# A fraction only on the seconds: Python would read 10.5 (half past ten) as 10:00:00.5.
_DATE_TIME = re.compile(
    rf"(?P<date>{_DATE_FORMS})[Tt ]"
    r"(?P<time>\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d+)?)?)?|\d{2}(?:\d{2}(?:\d{2}(?:[.,]\d+)?)?)?)"
    r"(?P<offset>[Zz]|[+-]\d{2}(?::?\d{2})?)"
)
_INT_BOUNDS = {"int": 2**31, "long": 2**63}


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        raise _RepeatedKey("a key is repeated in one object")
    return record


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def parse_record(line: str) -> dict[str, Any] | None:
    """The line's one JSON object, or None when it is anything else: not JSON, two objects,
    an object followed by text, an array or a scalar, or an object with a repeated key.
    NaN and Infinity are read as numbers, for the contract's range rules to judge."""
    try:
        record = _DECODER.decode(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def iso_day(text: str) -> date | None:
    """An ISO 8601 date: calendar (2026-11-01, 20261101), week (2026-W44-7, 2026W447) or
    ordinal (2026-305, 2026305); None when the text is not one."""
    if not _DATE.fullmatch(text):
        return None
    digits = text.replace("-", "")
    try:
        if "W" not in digits and len(digits) == 7:  # ordinal: year and day of the year
            year, day_of_year = int(digits[:4]), int(digits[4:])
            first = date(year, 1, 1)
            day = first + timedelta(days=day_of_year - 1)
            return day if day_of_year >= 1 and day.year == year else None
        return date.fromisoformat(digits if "W" in digits else text)
    except ValueError:
        return None


def utc_time(text: str) -> str | None:
    """An ISO 8601 date-time with a UTC offset as UTC with microseconds: any date form of
    iso_day, `T` or a space, a time in extended or basic form to the hour, minute or second
    with any fraction of a second (read to the microsecond), 24:00 as the next day's start,
    and `Z` or `±hh[:mm]`. None when the text is not one, names no offset (a local time is
    ambiguous), or has a fraction of an hour or minute, or a leap second (not representable)."""
    match = _DATE_TIME.fullmatch(text)
    day = iso_day(match["date"]) if match else None
    if day is None:
        return None
    clock, next_day = match["time"], False
    if clock.startswith("24"):  # the end of the day, only as 24:00[:00[.000]]
        if set(clock[2:]) - set(":.,0"):
            return None
        clock, next_day = "00" + clock[2:], True
    offset = "+00:00" if match["offset"] in "Zz" else match["offset"]
    try:
        moment = datetime.fromisoformat(f"{day.isoformat()}T{clock.replace(',', '.')}{offset}")
        naive = moment.astimezone(UTC).replace(tzinfo=None) + timedelta(days=next_day)
    except (ValueError, OverflowError):  # OverflowError: past year 9999 or before year 1 in UTC
        return None
    return naive.isoformat(timespec="microseconds") + "Z"


def iso_date(text: str) -> str | None:
    """An ISO 8601 date (iso_day's forms) as YYYY-MM-DD; None when it is not one."""
    day = iso_day(text)
    return day.isoformat() if day else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar_rule(kind: str, name: str, value: Any) -> str | None:
    """The rule a value of the wrong JSON type (or out of the Spark type's range) breaks."""
    if kind in ("string", "timestamp", "date"):
        return None if isinstance(value, str) else f"type:{name}"
    if kind == "boolean":
        return None if isinstance(value, bool) else f"type:{name}"
    if kind in _INT_BOUNDS:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"type:{name}"
        bound = _INT_BOUNDS[kind]
        return None if -bound <= value < bound else f"out_of_range:{name}"
    return None if _is_number(value) else f"type:{name}"  # float, double


def judge_value(kind: str, name: str, value: Any) -> tuple[str | None, Any]:
    """(the rule broken or None, the value in canonical form) of one present value."""
    if kind.startswith("array<"):
        inner = kind[len("array<") : -1]
        if not isinstance(value, list):
            return f"type:{name}", value
        if any(_scalar_rule(inner, name, item) for item in value):
            return f"type:{name}", value
        return None, value
    rule = _scalar_rule(kind, name, value)
    if rule is not None:
        return rule, value
    if kind == "timestamp":
        moment = utc_time(value)
        return (None, moment) if moment else (f"bad_time:{name}", value)
    if kind == "date":
        day = iso_date(value)
        return (None, day) if day else (f"bad_date:{name}", value)
    return None, value


def judge_line(line: str | None, types: dict[str, str]) -> tuple[list[str], str | None]:
    """(rules broken, the canonical JSON line for Spark) of one raw line; `types` maps each
    contract column to its contract type. Keys outside the contract are kept for Spark's
    `unexpected_column` rule."""
    if line is None:
        return ["malformed_json"], None
    line = line.removeprefix("\ufeff")  # a byte-order mark opening a file is not data
    # UTF-8 takes at most 4 bytes a character: only a long line needs encoding to measure.
    if len(line) > MAX_LINE_BYTES // 4 and len(line.encode("utf-8", "replace")) > MAX_LINE_BYTES:
        return ["line_too_long"], None
    record = parse_record(line)
    if record is None:
        return ["malformed_json"], None
    rules = []
    for name, kind in types.items():
        value = record.get(name)
        if value is None:
            continue
        rule, record[name] = judge_value(kind, name, value)
        if rule:
            rules.append(rule)
    return rules, json.dumps(record, ensure_ascii=True, allow_nan=True)


def contract_types(contract: Contract) -> dict[str, str]:
    return {c.name: c.type for c in contract.columns}


def judge_series(lines: pd.Series, types: dict[str, str]) -> pd.DataFrame:
    """Column-wise form of judge_line, for a Spark pandas UDF."""
    judged = [judge_line(line, types) for line in lines]
    return pd.DataFrame(
        {"rules": [rules for rules, _ in judged], "canonical": [text for _, text in judged]}
    )
