"""The promotion step: the day's challenger against the champion on the same next-day rows."""

from __future__ import annotations

from typing import Any

import pandas as pd
from pyspark.sql import SparkSession

from choirflow import tables
from choirflow.config import Settings
from choirflow.evaluate import tracking
from choirflow.evaluate.promotion import decide
from choirflow.evaluate.records import metric_rows, write_metrics
from choirflow.logs import step_log
from choirflow.serving.publish import mark_champion, publish
from choirflow.train.artifacts import RunFiles
from choirflow.train.fit import score_checkpoint, task_rows
from choirflow.train.inputs import load_samples


def promote(
    spark: SparkSession, settings: Settings, dt: str, challenger: dict[str, Any]
) -> dict[str, Any]:
    """Move the `champion` alias only when the challenger's GAUC gain holds (bootstrap over
    users) and no activity bucket regresses; record the decision in gold.promotions."""
    settings = tracking.with_task_registry(settings)
    if not challenger or challenger.get("status") != "trained":
        return {"status": "skipped", "reason": "no challenger trained for this day", "dt": dt}
    preds = pd.read_parquet(RunFiles.beside(challenger["checkpoint"]).predictions)
    current = tracking.champion(settings)
    if current is not None and current["version"] == challenger["model_version"]:
        return {"status": "skipped", "reason": "challenger is already champion", "dt": dt}
    champion_scores = None
    frame, _ = load_samples(spark, settings, [dt])
    if current is not None:
        scored = pd.Series(score_checkpoint(spark, settings, current["path"], frame),
                           index=frame["event_id"].to_numpy())  # fmt: skip
        champion_scores = scored.reindex(preds["event_id"]).to_numpy()
        _record_champion(spark, settings, dt, current, preds, champion_scores)
    p = settings.promotion
    decision = decide(
        preds["click"].to_numpy(dtype=int),
        preds["score"].to_numpy(),
        champion_scores,
        preds["user_id"].to_numpy(),
        preds["activity_bucket"].to_numpy(),
        confidence=p.confidence,
        bucket_tolerance=p.bucket_tolerance,
        min_gain=p.min_gain,
        draws=p.bootstrap_draws,
    )
    served: dict[str, Any] = {}
    if decision.promote:  # exported first: a model that cannot be served is not promoted
        served = publish(spark, settings, dt, challenger, task_rows(frame, settings.train.task))
        tracking.set_champion(settings, challenger["model_version"])
        mark_champion(settings, str(challenger["model_version"]))
    row = {
        "challenger_model": challenger["model"],
        "challenger_version": challenger["model_version"],
        "champion_version": current["version"] if current else None,
        "promoted": decision.promote,
        "gain": decision.gain,
        "ci_low": decision.ci_low,
        "ci_high": decision.ci_high,
        "reasons": "; ".join(decision.reasons),
        "dt": dt,
    }
    table = tables.GOLD_PROMOTIONS
    df = table.frame(spark, [row])
    where = tables.partition(dt, challenger_model=challenger["model"])
    tables.replace_partition(df, table, settings, where)
    verdict = "promoted" if decision.promote else "kept the champion"
    step_log(__name__, "promote", dt).info("%s: %s", verdict, "; ".join(decision.reasons))
    return {
        "status": "decided",
        "promoted": decision.promote,
        "dt": dt,
        **decision.as_dict(),
        **served,
    }


def champion_record_name(settings: Settings) -> str:
    """gold.metrics' model name for the champion's figures (CVR has its own champion)."""
    task = settings.train.task
    return CHAMPION_METRICS if task == "ctr" else f"{CHAMPION_METRICS}-{task}"


CHAMPION_METRICS = "champion"


def _record_champion(
    spark: SparkSession,
    settings: Settings,
    dt: str,
    current: dict[str, Any],
    preds: pd.DataFrame,
    scores,
) -> None:
    """The champion's metrics on the challenger's rows, so the report shows both side by
    side (the same rows, the same slices)."""
    name = champion_record_name(settings)
    rows = metric_rows(
        name, str(current["run_id"]), dt, preds["click"].to_numpy(dtype=int), scores,
        preds["user_id"].to_numpy(), preds["activity_bucket"].to_numpy(),
    )  # fmt: skip
    for row in rows:
        row["model_version"] = str(current["version"])
    write_metrics(spark, settings, rows, dt, name)
