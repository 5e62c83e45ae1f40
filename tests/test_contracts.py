import pytest
from pyspark.sql import types as T

from choirflow.contracts import load_contract, spark_type

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["raw_events", "raw_items", "raw_users"])
def test_contracts_load_with_keys_and_descriptions(name):
    contract = load_contract(name)
    assert contract.key and set(contract.key) <= set(contract.column_names)
    assert contract.description
    assert len(contract.spark_schema().fields) == len(contract.columns)


def test_types_parse():
    assert spark_type("array<float>") == T.ArrayType(T.FloatType())
    assert spark_type("timestamp") == T.TimestampType()
    with pytest.raises(ValueError):
        spark_type("decimal(3)")


def test_event_contract_covers_the_documented_fields():
    cols = set(load_contract("raw_events").column_names)
    assert {
        "event_id",
        "event_type",
        "user_id",
        "item_id",
        "request_id",
        "position",
        "event_time",
        "ingestion_time",
        "device",
        "surface",
    } <= cols
    assert load_contract("raw_events").column("event_type").allowed == (
        "impression",
        "click",
        "conversion",
    )


@pytest.mark.parametrize("name", ["raw_events", "raw_items", "raw_users"])
def test_every_string_has_a_length_limit(name):
    """A string column is bounded by a length or a set of allowed values; a list of strings
    by its item count and each item's length."""
    for col in load_contract(name).columns:
        if col.type == "string":
            assert col.max_length or col.allowed, f"{name}.{col.name} has no length limit"
        if col.type == "array<string>":
            assert col.max_items and col.max_item_length, f"{name}.{col.name} is unbounded"
