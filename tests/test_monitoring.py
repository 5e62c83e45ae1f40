"""choirflow_quality's checks: PSI against known answers, and a run over the tiny world."""

import numpy as np
import pandas as pd
import pytest

from choirflow.quality.monitoring import categorical_psi, numeric_psi


@pytest.mark.unit
def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    a = pd.Series(rng.normal(size=5000))
    assert numeric_psi(a, pd.Series(rng.normal(size=5000))) < 0.02
    assert numeric_psi(a, pd.Series(rng.normal(1.0, 1, size=5000))) > 0.2
    cats = pd.Series(rng.choice(["low", "mid", "high"], 3000, p=[0.7, 0.2, 0.1]))
    same = pd.Series(rng.choice(["low", "mid", "high"], 3000, p=[0.7, 0.2, 0.1]))
    moved = pd.Series(rng.choice(["low", "mid", "high"], 3000, p=[0.2, 0.3, 0.5]))
    assert categorical_psi(cats, same) < 0.02 < 0.2 < categorical_psi(cats, moved)


@pytest.mark.spark
def test_monitor_writes_freshness_volume_and_drift(built, spark, settings, days):
    from pyspark.sql import functions as F

    from choirflow import tables
    from choirflow.steps import run_step

    results = pd.DataFrame(run_step("monitor", days[2], settings))
    assert {"freshness", "volume", "drift_psi"} <= set(results["check"])
    fresh = results[(results["check"] == "freshness") & (results["table"] == "gold.samples")]
    assert fresh["status"].iloc[0] == "ok"
    stored = tables.read(spark, tables.QUALITY_MONITORING, settings).where(F.col("dt") == days[2])
    assert stored.count() == len(results)
    late = pd.DataFrame(run_step("monitor", "2026-12-30", settings))
    stale = late[(late["check"] == "freshness") & (late["table"] == "gold.samples")]
    assert stale["status"].iloc[0] == "warn" and stale["value"].iloc[0] > 20
