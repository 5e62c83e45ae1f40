"""One writer per warehouse outside Airflow's pool: a run (a day, a range, a step of a job)
holds an exclusive lock on `<warehouse>/_locks/writer.lock` while it writes, so the CLI
beside a scheduler, or two shells, cannot interleave their steps.

The lock is the operating system's (flock): it goes with the process, so a run killed with
SIGKILL leaves nothing to clean up. It is re-entrant within a process (a day inside a
range). A warehouse on an object store (s3a://, abfss://) has no such lock: there the
Airflow pool is the only guard, and a run says so once."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from choirflow.config import Settings
from choirflow.logs import step_log

_depth: dict[str, int] = {}  # lock path -> how deep this process holds it
_said_remote: set[str] = set()  # remote warehouses this process has warned about


class WarehouseBusy(RuntimeError):
    """Another run holds the warehouse; the message names it."""


def _lock_path(settings: Settings) -> Path | None:
    warehouse = settings.warehouse_dir
    if "://" in warehouse and not warehouse.startswith("file://"):
        return None
    return Path(warehouse.removeprefix("file://")) / "_locks" / "writer.lock"


def _holder(purpose: str) -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "purpose": purpose,
        "command": " ".join(sys.argv)[:300],
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _refusal(path: Path, handle: IO[str], purpose: str) -> WarehouseBusy:
    handle.seek(0)
    try:
        held = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        held = {}
    by = (
        f"pid {held.get('pid', '?')} on {held.get('host', '?')} since {held.get('since', '?')} "
        f"({held.get('purpose', '?')}: {held.get('command', '?')})"
    )
    return WarehouseBusy(
        f"warehouse {path.parent.parent} is being written by {by}; {purpose} was not started. "
        "Wait for that run to end (or stop it), then run again."
    )


@contextmanager
def warehouse_lock(settings: Settings, purpose: str) -> Iterator[None]:
    """Hold the warehouse's writer lock for the block, or raise WarehouseBusy at once."""
    path = _lock_path(settings)
    if path is None:
        if settings.warehouse_dir not in _said_remote:
            _said_remote.add(settings.warehouse_dir)
            step_log(__name__, "lock", purpose).warning(
                "warehouse %s is remote: no writer lock (the Airflow pool is the guard)",
                settings.warehouse_dir,
            )
        yield
        return
    key = str(path)
    if _depth.get(key):  # this process holds it already (a day inside a range)
        _depth[key] += 1
        try:
            yield
        finally:
            _depth[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        refusal = _refusal(path, handle, purpose)
        handle.close()
        raise refusal from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(_holder(purpose)))
    handle.flush()
    _depth[key] = 1
    try:
        yield
    finally:
        _depth[key] = 0
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
