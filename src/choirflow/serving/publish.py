"""Publish a model version for serving when it is promoted: the export, logged to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession

from choirflow.config import Settings
from choirflow.evaluate import tracking
from choirflow.logs import step_log
from choirflow.serving.export import export_model
from choirflow.train.fit import encode_for, load_checkpoint

# Rows of the evaluation day the export is traced and checked on.
EXAMPLE_ROWS = 2048
CHAMPION_FILE = "CHAMPION"


def serving_folder(settings: Settings, version: str) -> Path:
    """<models>/serving/<registered model>/<version>/ (CTR and CVR have their own registry)."""
    return Path(settings.models_dir) / "serving" / settings.tracking.registry_model / str(version)


def publish(
    spark: SparkSession,
    settings: Settings,
    dt: str,
    challenger: dict[str, Any],
    frame: pd.DataFrame,
) -> dict[str, Any]:
    """Export the challenger's checkpoint with its spec (checked against the model on the
    day's rows), log it to its MLflow run and tag the model version with where it lies.
    `settings` carries the task's registry (tracking.with_task_registry)."""
    model, vocab, meta = load_checkpoint(spark, settings, challenger["checkpoint"])
    version = str(challenger["model_version"])
    folder = serving_folder(settings, version)
    about = {
        "model": meta["model"], "model_config": meta.get("model_config"),
        "task": meta.get("task"), "registered_model": settings.tracking.registry_model,
        "version": version, "mlflow_run_id": challenger["run_id"], "evaluated_on": dt,
        "code_version": tracking.code_version(),
    }  # fmt: skip
    embeddings = (meta.get("lineage") or {}).get("silver.item_embeddings")
    example = encode_for(frame.head(EXAMPLE_ROWS), vocab, settings)
    spec = export_model(model, vocab, example, folder, about, item_embeddings_version=embeddings)
    tracking.log_serving_export(settings, challenger["run_id"], version, folder)
    step_log(__name__, "promote", dt).info(
        "exported version %s for serving to %s (parity %.1e on %d rows)",
        version, folder, spec["parity"]["max_abs_diff"], spec["parity"]["rows"],
    )  # fmt: skip
    return {"serving_path": str(folder), "parity_max_abs_diff": spec["parity"]["max_abs_diff"]}


def mark_champion(settings: Settings, version: str) -> None:
    """<models>/serving/<registered model>/CHAMPION names the version a server should load."""
    path = serving_folder(settings, version).parent / CHAMPION_FILE
    tmp = path.with_name(f".{CHAMPION_FILE}.tmp")
    tmp.write_text(f"{version}\n")
    tmp.replace(path)
