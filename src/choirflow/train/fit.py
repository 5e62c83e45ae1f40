"""Fit one model on a samples frame and score another; score a saved checkpoint.

Everything here works on pandas frames the caller has read (train.inputs): no tracking, no
metrics tables, so evaluation and promotion build on it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pyspark.sql import SparkSession

from choirflow.config import Settings
from choirflow.models import build_model
from choirflow.train.data import EncodedSamples, Vocabulary, encode
from choirflow.train.inputs import load_item_vectors
from choirflow.train.loop import (
    ModelConfig,
    load_model_config,
    pick_device,
    predict,
    train,
    warm_start,
)

TASK_LABELS = {"ctr": "click", "cvr": "conversion"}


def task_label(task: str) -> str:
    return TASK_LABELS[task]


def task_rows(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """CVR trains and evaluates on clicked impressions only (post-click conversion)."""
    return frame[frame["click"] == 1].reset_index(drop=True) if task == "cvr" else frame


def encode_for(frame: pd.DataFrame, vocab: Vocabulary, settings: Settings) -> EncodedSamples:
    """Encode with the sequence lengths the settings name (behaviour and group sequences)."""
    return encode(
        frame,
        vocab,
        settings.features.max_seq_len,
        group_seq_len=settings.groups.group_seq_len,
    )


@dataclass
class Fit:
    """One trained model, its scores on the evaluation frame and what a run records."""

    model: torch.nn.Module
    model_config: str
    params: dict[str, Any]
    train_opts: dict[str, Any]
    vocab: Vocabulary
    eval_data: EncodedSamples
    scores: np.ndarray
    train_rows: int
    losses: list[float]
    epoch_losses: list[float]
    valid_aucs: list[float]
    best_epoch: int | None
    samples_per_second: float
    embeddings_version: int | None
    warm_start: str | None


def fit_and_score(
    spark: SparkSession,
    settings: Settings,
    model_name: str,
    train_frame: pd.DataFrame,
    eval_frame: pd.DataFrame,
    checkpoint_dir: Path | None = None,
    warm_from: tuple[str, str] | None = None,
) -> Fit:
    """Train one model on train_frame and score eval_frame. The last training day is the
    validation day (early stopping, learning-rate plateau). `warm_from` is (version, path) of
    a checkpoint of the same model to start from."""
    cfg = settings.train
    model_cfg = load_model_config(model_name)
    params, train_opts = model_options(settings, model_cfg)
    vocab = Vocabulary.fit(train_frame)
    train_data, valid = _train_and_validation(train_frame, vocab, settings)
    eval_data = encode_for(eval_frame, vocab, settings)
    device = pick_device(cfg.device)
    sizes = {name: vocab.size(name) for name in vocab.values}
    item_vectors, embeddings_version = load_item_vectors(spark, settings, vocab)
    model = build_model(model_cfg.model, sizes, item_vectors, **params)
    if warm_from is not None:
        warm_start(model, vocab, warm_from[1])
    result = train(
        model,
        train_data,
        seed=cfg.seed,
        device=device,
        valid=valid,
        patience=cfg.patience,
        label=task_label(cfg.task),
        checkpoint_dir=checkpoint_dir,
        **train_opts,
    )
    scores = predict(model, eval_data, device)
    steps = max(1, -(-len(train_data) // train_opts["batch_size"]))
    epoch_losses = [
        float(np.mean(result.losses[i : i + steps])) for i in range(0, len(result.losses), steps)
    ]
    return Fit(
        model=model,
        model_config=model_cfg.model,
        params=params,
        train_opts=train_opts,
        vocab=vocab,
        eval_data=eval_data,
        scores=scores,
        train_rows=len(train_data),
        losses=result.losses,
        epoch_losses=epoch_losses,
        valid_aucs=result.valid_aucs,
        best_epoch=result.best_epoch,
        samples_per_second=result.samples_per_second,
        embeddings_version=embeddings_version,
        warm_start=warm_from[0] if warm_from else None,
    )


def model_options(settings: Settings, model_cfg: ModelConfig) -> tuple[dict, dict]:
    """(model parameters, training options): the model config's own values over the
    pipeline's defaults."""
    cfg = settings.train
    params = {"embedding_dim": cfg.embedding_dim, **model_cfg.params}
    defaults = {"epochs": cfg.epochs, "batch_size": cfg.batch_size,
                "learning_rate": cfg.learning_rate}  # fmt: skip
    return params, {**defaults, **model_cfg.train}


def _train_and_validation(
    frame: pd.DataFrame, vocab: Vocabulary, settings: Settings
) -> tuple[EncodedSamples, EncodedSamples | None]:
    """The training rows and, when the window has several days and validation is on, the
    last day held out for validation."""
    if not (settings.train.validation_day and "dt" in frame and frame["dt"].nunique() > 1):
        return encode_for(frame, vocab, settings), None
    last = frame["dt"] == frame["dt"].max()
    return encode_for(frame[~last], vocab, settings), encode_for(frame[last], vocab, settings)


def load_checkpoint(
    spark: SparkSession, settings: Settings, path: str | Path
) -> tuple[torch.nn.Module, Vocabulary, dict[str, Any]]:
    """A saved model with its vocabulary and the item vectors of the table version it was
    trained with (its lineage), and the checkpoint's meta."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    meta = checkpoint["meta"]
    vocab = Vocabulary(meta["vocab"])
    trained_with = (meta.get("lineage") or {}).get("silver.item_embeddings")
    item_vectors, _ = load_item_vectors(spark, settings, vocab, version=trained_with)
    sizes = {name: vocab.size(name) for name in vocab.values}
    model = build_model(
        meta.get("model_config", meta["model"]), sizes, item_vectors, **meta["params"]
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model, vocab, meta


def score_checkpoint(
    spark: SparkSession, settings: Settings, path: str | Path, frame: pd.DataFrame
) -> np.ndarray:
    """Scores of a saved model (its own vocabulary and item vectors) on a samples frame."""
    model, vocab, _ = load_checkpoint(spark, settings, path)
    data = encode_for(frame, vocab, settings)
    return predict(model, data, pick_device(settings.train.device))
