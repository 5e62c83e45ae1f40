"""Day arithmetic on ISO date strings, the form every partition column `dt` uses.

The one module every layer may import for dates: features, groups, quality and the pipeline
all shift and list days the same way.
"""

from __future__ import annotations

from datetime import date, timedelta


def day_offset(dt: str, days: int) -> str:
    """The ISO day `days` after dt (before it when negative)."""
    return (date.fromisoformat(dt) + timedelta(days=days)).isoformat()


def days_between(start: str, end: str) -> list[str]:
    """Inclusive list of ISO days from start to end."""
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    if d1 < d0:
        raise ValueError(f"end {end} is before start {start}")
    return [(d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def days_before(dt: str, days: int) -> list[str]:
    """The `days` days that end the day before dt, oldest first (a training window)."""
    return [day_offset(dt, -i) for i in range(days, 0, -1)]


def chunks(start: str, end: str, size: int) -> list[tuple[str, str]]:
    """[start, end] cut into consecutive (first, last) ranges of at most `size` days."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1 day, not {size}")
    days = days_between(start, end)
    return [(part[0], part[-1]) for part in (days[i : i + size] for i in range(0, len(days), size))]
