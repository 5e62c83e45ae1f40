"""Logging with the step and the day as fields, so a line says what ran and for which day.

Library code logs through `step_log(__name__, step, dt)`; whoever runs it (the CLI, a job, an
Airflow task) decides where lines go. `configure()` is the CLI's and the jobs' default: one
line per event on standard error, `[step dt=...]` before the message.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s [%(step)s dt=%(dt)s] %(message)s"


class _StepFields(logging.Filter):
    """Lines logged without the fields still format (a library's own logger, say)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.step = getattr(record, "step", "-")
        record.dt = getattr(record, "dt", "-")
        return True


def step_log(name: str, step: str, dt: str | None = None) -> logging.LoggerAdapter:
    return logging.LoggerAdapter(logging.getLogger(name), {"step": step, "dt": dt or "-"})


def configure(level: int = logging.INFO) -> None:
    """choirflow's lines to standard error, once per process."""
    root = logging.getLogger("choirflow")
    if any(getattr(h, "_choirflow", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._choirflow = True  # type: ignore[attr-defined]
    handler.addFilter(_StepFields())
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False  # an Airflow task would print each line twice otherwise
