"""Bad raw lines made from good ones, each with the rule it must break: the property test
of the ingest (tests/test_bad_input.py) and its fuzz benchmark (benchmarks/fuzz_ingest.py)
draw from here, so both judge the same mutations."""

from __future__ import annotations

import json
import random
from typing import Any

from choirflow.contracts import load_contract

MUTATIONS = ("flip", "blank", "join", "drop")
# A value of each JSON type that no string column accepts.
_NOT_A_STRING = (123, True, {"x": 1}, ["a"], 1.5)
# And one per non-string column that its contract type refuses.
_NOT_OF_TYPE = {"position": "3", "event_time": 1798761600, "ingestion_time": "yesterday"}


def mutate(row: dict[str, Any], rng: random.Random, partner: dict[str, Any]) -> tuple[str, str]:
    """(a bad line made from the valid event `row`, the rule that must reject it): a JSON type
    flipped, an id blanked, `row` and `partner` joined on one line, a required field
    dropped."""
    contract = load_contract("raw_events")
    kind = rng.choice(MUTATIONS)
    if kind == "flip":
        strings = [c.name for c in contract.columns if c.type == "string"]
        column = rng.choice([*strings, *_NOT_OF_TYPE])
        value = _NOT_OF_TYPE.get(column, rng.choice(_NOT_A_STRING))
        rule = "bad_time" if isinstance(value, str) and column.endswith("_time") else "type"
        return json.dumps({**row, column: value}), f"{rule}:{column}"
    if kind == "blank":
        column = rng.choice([c.name for c in contract.columns if c.identifier])
        return json.dumps({**row, column: rng.choice(["", " ", "\t", "\u00a0"])}), f"blank:{column}"
    if kind == "join":
        separator = rng.choice(["", " ", ",", "\t"])
        return json.dumps(row) + separator + json.dumps(partner), "malformed_json"
    column = rng.choice([c.name for c in contract.columns if not c.nullable])
    return json.dumps({k: v for k, v in row.items() if k != column}), f"missing:{column}"
