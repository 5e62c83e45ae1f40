"""Table contracts from schemas/*.yaml: the one source of Spark schemas and data checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import types as T

from choirflow.config import project_root

_PRIMITIVES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "long": T.LongType(),
    "float": T.FloatType(),
    "double": T.DoubleType(),
    "boolean": T.BooleanType(),
    "timestamp": T.TimestampType(),
    "date": T.DateType(),
}


def spark_type(name: str) -> T.DataType:
    """'double' -> DoubleType(); 'array<float>' -> ArrayType(FloatType())."""
    name = name.strip()
    if name.startswith("array<") and name.endswith(">"):
        return T.ArrayType(spark_type(name[len("array<") : -1]), containsNull=True)
    try:
        return _PRIMITIVES[name]
    except KeyError:
        raise ValueError(f"unknown contract type {name!r}") from None


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    description: str = ""
    allowed: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    max_items: int | None = None
    max_item_length: int | None = None  # of each string in an array
    width: int | None = None
    # An id (a key or a reference to one): never blank, no whitespace or control characters.
    identifier: bool = False

    @property
    def spark_type(self) -> T.DataType:
        return spark_type(self.type)


@dataclass(frozen=True)
class Contract:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    partition: str | None = None
    format: str = "jsonl"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def spark_schema(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, c.spark_type, True) for c in self.columns])

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def schemas_dir() -> Path:
    return project_root() / "schemas"


@cache
def load_contract(name: str) -> Contract:
    path = schemas_dir() / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    columns = []
    for col in raw["columns"]:
        col = dict(col)
        if "allowed" in col:
            col["allowed"] = tuple(col["allowed"])
        columns.append(Column(**col))
    known = {"name", "description", "columns", "key", "partition", "format"}
    return Contract(
        name=raw["name"],
        description=raw.get("description", "").strip(),
        columns=tuple(columns),
        key=tuple(raw.get("key", ())),
        partition=raw.get("partition"),
        format=raw.get("format", "jsonl"),
        extra={k: v for k, v in raw.items() if k not in known},
    )
