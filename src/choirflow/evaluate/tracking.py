"""Experiment tracking and the model registry with MLflow.

Every training run logs its parameters, per-epoch metrics, config, code version and lineage
(the Delta version of every table it read). The registry holds one model,
`<registry_model>`, whose `champion` alias points at the version serving now. Local by
default (SQLite under paths.models); any tracking server by `tracking.uri`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from choirflow.config import Settings, project_root
from choirflow.train.artifacts import CHECKPOINT

CHAMPION = "champion"


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=project_root(), capture_output=True,
            text=True, timeout=10,
        )  # fmt: skip
        sha = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    from choirflow import __version__

    return f"{__version__}+{sha}" if sha else __version__


def _client(settings: Settings):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    uri = settings.tracking.uri or f"sqlite:///{Path(settings.models_dir) / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow, mlflow.MlflowClient(uri)


def _experiment(mlflow, client, settings: Settings) -> str:
    name = settings.tracking.experiment
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    artifacts = Path(settings.models_dir) / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=artifacts.resolve().as_uri())


def log_training_run(
    settings: Settings,
    *,
    model_name: str,
    dt: str,
    params: dict[str, Any],
    config: dict[str, Any],
    lineage: dict[str, Any],
    epoch_losses: list[float],
    eval_metrics: dict[str, float],
    checkpoint: Path,
) -> dict[str, str]:
    """One MLflow run plus a registered model version; returns run id and version."""
    mlflow, client = _client(settings)
    experiment_id = _experiment(mlflow, client, settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{model_name}-{dt}") as run:
        mlflow.set_tags(
            {
                "model": model_name,
                "eval_day": dt,
                "code_version": code_version(),
                "pipeline": "choirflow",
            }
        )
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for key, version in lineage.items():
            mlflow.set_tag(f"lineage.{key}", str(version))
        mlflow.log_dict(config, "config.json")
        mlflow.log_dict(lineage, "lineage.json")
        for epoch, loss in enumerate(epoch_losses, start=1):
            mlflow.log_metric("train_loss", loss, step=epoch)
        mlflow.log_metrics({k: v for k, v in eval_metrics.items() if v is not None and v == v})
        mlflow.log_artifact(str(checkpoint), artifact_path="model")
        run_id = run.info.run_id
        artifact_uri = mlflow.get_artifact_uri("model")
    name = settings.tracking.registry_model
    try:
        client.get_registered_model(name)
    except Exception:  # not registered yet
        client.create_registered_model(name, description="choirflow CTR model; alias champion")
    version = client.create_model_version(
        name, source=artifact_uri, run_id=run_id, tags={"model": model_name, "eval_day": dt}
    )
    return {"run_id": run_id, "model_version": str(version.version)}


def with_task_registry(settings: Settings) -> Settings:
    """A CVR model has its own registered model (`<registry_model>_cvr`) and champion."""
    if settings.train.task == "ctr":
        return settings
    name = f"{settings.tracking.registry_model}_{settings.train.task}"
    return settings.model_copy(
        update={"tracking": settings.tracking.model_copy(update={"registry_model": name})}
    )


def champion(settings: Settings) -> dict[str, Any] | None:
    """The current champion: version, run id, tags and the local checkpoint path; or None."""
    mlflow, client = _client(settings)
    try:
        version = client.get_model_version_by_alias(settings.tracking.registry_model, CHAMPION)
    except Exception:
        return None
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"{version.source}/{CHECKPOINT}")
    return {
        "version": version.version,
        "run_id": version.run_id,
        "tags": version.tags,
        "path": local,
    }


def set_champion(settings: Settings, version: str) -> None:
    _, client = _client(settings)
    client.set_registered_model_alias(settings.tracking.registry_model, CHAMPION, version)


def log_serving_export(settings: Settings, run_id: str, version: str, folder: Path) -> None:
    """The serving export as artifacts of the version's run (`serving/`), and a tag on the
    model version saying where the local copy lies."""
    _, client = _client(settings)
    client.log_artifacts(run_id, str(folder), artifact_path="serving")
    client.set_model_version_tag(
        settings.tracking.registry_model, version, "serving_path", str(folder)
    )
