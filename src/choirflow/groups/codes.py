"""How a user's RQ-KMeans codes name the groups of the hierarchy, for writers and readers of
silver.user_groups alike."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def code_prefix(codes: str, level: int) -> Column:
    """The group at `level` of the hierarchy: the first `level` codes, joined by "-"."""
    return F.array_join(F.slice(F.col(codes), 1, level), "-")
