"""What failed, said plainly: the Airflow failure callback writes one line to the log and to
<reports>/alerts.jsonl, naming the DAG, the task, the day and the error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from choirflow.config import load_settings
from choirflow.logs import step_log


def report_failure(context: dict[str, Any]) -> str:
    ti = context.get("task_instance") or context.get("ti")
    params = context.get("params") or {}
    start = context.get("data_interval_start")
    day = params.get("day") or (start.strftime("%Y-%m-%d") if start else None)
    error = context.get("exception")
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dag": getattr(ti, "dag_id", None),
        "task": getattr(ti, "task_id", None),
        "try": getattr(ti, "try_number", None),
        "day": day,
        "error": f"{type(error).__name__}: {error}" if error else None,
    }
    line = (
        f"choirflow: task {record['task']} of {record['dag']} failed for day {day}"
        f" (try {record['try']}): {record['error']}"
    )
    step_log(__name__, str(record["task"]), day).error("%s", line)
    path = Path(load_settings().reports_dir) / "alerts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return line
