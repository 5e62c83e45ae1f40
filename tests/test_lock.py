"""One writer per warehouse outside Airflow: a second run is refused with a message naming
the holder, a run killed with SIGKILL leaves no lock behind, and two runs of one day
started at once leave the tables a single run leaves."""

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
    holder = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True,
                              env=env)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        settings = _settings_for(tmp_path / "wh")
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


@pytest.mark.spark
def test_two_runs_of_one_day_at_once_leave_what_one_run_leaves(built, spark, settings, days,
                                                               tmp_path):  # fmt: skip
    """Both started together: one ingests the day, the other is refused cleanly (exit 2,
    the holder named) before touching a table."""
    from pyspark.sql import functions as F

    from choirflow import tables
    from choirflow.compare import assert_warehouses_equal

    env = {**os.environ, "CHOIRFLOW__PATHS__WAREHOUSE": str(tmp_path / "wh")}
    cli = str(Path(sys.executable).parent / "choirflow")
    command = [cli, "backfill", "--start", days[0], "--end", days[0], "--tables", "ingest"]
    logs = [tmp_path / f"run{n}.log" for n in range(2)]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=log.open("w")) for log in logs]  # fmt: skip
    outcomes = sorted((run.wait(), log.read_text()) for run, log in zip(runs, logs, strict=True))
    assert [code for code, _ in outcomes] == [0, 2], outcomes[-1][1][-2000:]
    refusal = outcomes[1][1]
    assert "is being written by pid" in refusal and f"range {days[0]}..{days[0]}" in refusal
    assert "Traceback" not in refusal
    ingested = (tables.BRONZE_EVENTS, tables.BRONZE_QUARANTINE, tables.BRONZE_INGEST_RUNS)
    assert_warehouses_equal(
        spark, settings, _settings_for(tmp_path / "wh"), ingested,
        where=F.col("dt") == days[0],
        ignore=("ingested_at", "run_id", "quarantined_at", "recorded_at"),
    )  # fmt: skip
