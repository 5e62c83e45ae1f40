"""The user-activity bucket rule, written once for Spark columns and numpy arrays.

A user's bucket comes from their clicks over the 30 days before: at most `low_max` is "low",
at most `mid_max` is "mid", more is "high". Features, the synthetic world's summary and the
importers all bucket users with this rule, so per-bucket metrics mean one thing everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import Column

ACTIVITY_BUCKETS = ("low", "mid", "high")
DEFAULT_LOW_MAX, DEFAULT_MID_MAX = 4, 19


def activity_bucket_array(
    clicks: np.ndarray, low_max: int = DEFAULT_LOW_MAX, mid_max: int = DEFAULT_MID_MAX
) -> np.ndarray:
    low, mid, high = ACTIVITY_BUCKETS
    clicks = np.asarray(clicks)
    return np.where(clicks <= low_max, low, np.where(clicks <= mid_max, mid, high))


def activity_bucket_column(
    clicks: Column, low_max: int = DEFAULT_LOW_MAX, mid_max: int = DEFAULT_MID_MAX
) -> Column:
    from pyspark.sql import functions as F

    low, mid, high = ACTIVITY_BUCKETS
    return F.when(clicks <= low_max, low).when(clicks <= mid_max, mid).otherwise(high)
