"""One writer per warehouse outside Airflow: a second run is refused with a message naming
the holder, and a run killed with SIGKILL leaves no lock behind. (A backfill refused while
another runs over the same days, the tables left as one run leaves them:
tests/test_range_engine.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from choirflow.lock import WarehouseBusy, warehouse_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from choirflow.config import load_settings
    from choirflow.lock import warehouse_lock
    with warehouse_lock(load_settings(), "step ingest 2026-11-01"):
        print("held", flush=True)
        time.sleep(600)
    """
)


def _settings_for(warehouse: Path):
    from choirflow.config import load_settings

    return load_settings(environ={**os.environ, "CHOIRFLOW__PATHS__WAREHOUSE": str(warehouse)})


@pytest.mark.unit
def test_a_second_writer_is_refused_by_name_until_the_holder_dies(tmp_path):
    env = {**os.environ, "CHOIRFLOW__PATHS__WAREHOUSE": str(tmp_path / "wh")}
    settings = _settings_for(tmp_path / "wh")
    holder = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True,
                              env=env)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(WarehouseBusy) as refused, warehouse_lock(settings, "day 2026-11-02"):
            pass
        message = str(refused.value)
        assert f"pid {holder.pid} " in message and "step ingest 2026-11-01" in message
        assert "day 2026-11-02 was not started" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel dropped the dead holder's lock: nothing to clean up. Re-entrant in-process.
    with warehouse_lock(settings, "range"), warehouse_lock(settings, "day inside it"):
        pass
    with warehouse_lock(settings, "the next run"):
        pass
