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
from datetime import UTC, date, datetime
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
_TIME_CHARACTERS = re.compile(r"[0-9Tt :.,+\-WZz]+")
# A calendar or week date, extended or basic, then `T` or a space before the time.
_DATE_THEN_TIME = re.compile(r"\d{4}(-?\d{2}-?\d{2}|-?W\d{2}-?\d)[Tt ]")
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


def utc_time(text: str) -> str | None:
    """An ISO 8601 date-time with a UTC offset (extended or basic form, week dates, any
    fraction of a second, `T` or a space between date and time) as UTC with microseconds;
    None when the text is not one, or names no offset (a local time is ambiguous)."""
    if not (_TIME_CHARACTERS.fullmatch(text) and _DATE_THEN_TIME.match(text)):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(timespec="microseconds") + "Z"


def iso_date(text: str) -> str | None:
    """An ISO 8601 calendar or week date as YYYY-MM-DD; None when it is not one."""
    if not _TIME_CHARACTERS.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        return None


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
    if len(line) > MAX_LINE_BYTES or len(line.encode("utf-8", "replace")) > MAX_LINE_BYTES:
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
