"""The daily pipeline's steps as plain functions: DAG tasks and the CLI both call these."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from choirflow import tables
from choirflow.config import Settings, load_settings
from choirflow.evaluate import metrics
from choirflow.features.activity import (
    build_daily_activity,
    build_user_category_exposure,
    build_user_category_state,
    build_user_features,
)
from choirflow.features.item_embeddings import build_item_embeddings
from choirflow.features.samples import build_behaviors, build_samples
from choirflow.groups.inputs import build_user_category_daily
from choirflow.ingest.raw import ingest_day
from choirflow.models import build_model
from choirflow.spark import get_spark
from choirflow.train.data import SAMPLE_COLUMNS, Vocabulary, encode
from choirflow.train.loop import (
    load_model_config,
    pick_device,
    predict,
    save_checkpoint,
    train,
)


def days_between(start: str, end: str) -> list[str]:
    """Inclusive list of ISO dates."""
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    if d1 < d0:
        raise ValueError(f"end {end} is before start {start}")
    return [(d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def _context(settings: Settings | None) -> tuple[SparkSession, Settings]:
    settings = settings or load_settings()
    return get_spark(settings), settings


def ingest(dt: str, settings: Settings | None = None) -> dict[str, Any]:
    spark, settings = _context(settings)
    counts = ingest_day(spark, settings, dt)
    return {c.source: c.bronze_rows for c in counts}


def quality_gate(stage: str, dt: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """`bronze` after ingest, `gold` after features; raises QualityGateError on a hard failure."""
    from choirflow.quality.checks import bronze_gate, gold_gate

    spark, settings = _context(settings)
    return {"bronze": bronze_gate, "gold": gold_gate}[stage](spark, settings, dt)


# Samples of day D read the groups as of D-1 (point in time), the groups of D come first.
FEATURE_STEPS = ("behaviors", "item_embeddings", "user_features", "groups", "samples")


def monitor(dt: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """choirflow_quality: freshness, volume and drift across tables (quality.monitoring)."""
    from choirflow.quality.monitoring import monitor as run_monitor

    spark, settings = _context(settings)
    return run_monitor(spark, settings, dt).to_dict(orient="records")


def build_features(
    dt: str, settings: Settings | None = None, steps: tuple[str, ...] = FEATURE_STEPS
) -> dict[str, int]:
    """The silver tables and gold.samples of one day, in order; `steps` picks a subset."""
    unknown = set(steps) - set(FEATURE_STEPS)
    if unknown:
        raise ValueError(f"unknown feature steps {sorted(unknown)}; choose from {FEATURE_STEPS}")
    spark, settings = _context(settings)
    out: dict[str, int] = {}
    seconds: dict[str, float] = {}
    if "behaviors" in steps:
        with _timed(seconds, "behaviors"):
            out["silver.behaviors"] = build_behaviors(spark, settings, dt)
            build_daily_activity(spark, settings, dt)
            exposure = build_user_category_exposure(spark, settings, dt)
            out["silver.user_category_exposure"] = exposure
            out["silver.user_category_state"] = build_user_category_state(spark, settings, dt)
            out["silver.user_category_daily"] = build_user_category_daily(spark, settings, dt)
    if "item_embeddings" in steps:
        with _timed(seconds, "item_embeddings"):
            embedded = build_item_embeddings(spark, settings, dt)["embedded"]
            out["silver.item_embeddings"] = embedded
    if "user_features" in steps:
        with _timed(seconds, "user_features"):
            build_user_features(spark, settings, dt)
    if "groups" in steps:
        with _timed(seconds, "groups"):
            out.update(build_groups(dt, settings))
    if "samples" in steps:
        with _timed(seconds, "samples"):
            out["gold.samples"] = build_samples(spark, settings, dt)
    print(
        f"[features dt={dt}] "
        + " ".join(f"{k}={v}" for k, v in out.items())
        + " | seconds: "
        + " ".join(f"{k}={v}" for k, v in seconds.items()),
        flush=True,
    )
    return out


def build_groups(
    dt: str, settings: Settings | None = None, refit: bool = False, relabel_all: bool = False
) -> dict[str, int]:
    """Semantic user groups of one day: budgeted LLM labelling of changed users, then RQ-KMeans
    codes for changed profiles and the group priors. choirflow_groups_refresh passes `refit`
    (a new codebook version) and `relabel_all` (every user's inputs rebuilt)."""
    from choirflow.groups.assign import assign_groups
    from choirflow.groups.labelling import label_profiles
    from choirflow.quality.checks import groups_gate

    spark, settings = _context(settings)
    profiles = label_profiles(spark, settings, dt, everyone=relabel_all)
    groups = assign_groups(spark, settings, dt, refit=refit)
    groups_gate(spark, settings, dt)  # raises QualityGateError on a hard failure
    return {
        "silver.user_profiles": profiles["users_considered"] - profiles["cache_hits"],
        "llm_calls": profiles["calls"],
        "silver.user_groups": groups["users"],
        "silver.group_priors": groups["priors"],
    }


def table_snapshots(dt: str, settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """Per warehouse table: its Delta version and row count (of partition dt where the table is
    partitioned by day): the extras of the Airflow Asset events choirflow_daily emits."""
    spark, settings = _context(settings)
    out: dict[str, dict[str, Any]] = {}
    for table in tables.ALL_TABLES:
        version = tables.version(spark, table, settings)
        if version is None:
            continue
        df = tables.read(spark, table, settings, version=version)
        by_day = "dt" in table.partition_by
        rows = (df.where(F.col("dt") == dt) if by_day else df).count()
        out[table.full_name] = {
            "delta_version": version,
            "rows": int(rows),
            "partition": f"dt={dt}" if by_day else "all",
            "path": table.path(settings),
        }
    return out


def load_samples(
    spark: SparkSession, settings: Settings, days: list[str]
) -> tuple[pd.DataFrame, int | None]:
    """gold.samples rows of the given days as pandas, with the table version read.

    Each day is read from Delta once per table version and kept as a local parquet file
    (`<models>/cache/gold.samples/v<version>/`), so the training window, the evaluation day,
    promotion and `compare` of several models share one read. A write to the table makes a
    new version, hence a new cache; only the newest versions are kept."""
    version = tables.version(spark, tables.GOLD_SAMPLES, settings)
    if version is None or not days:
        return pd.DataFrame(columns=SAMPLE_COLUMNS), version
    cache = _samples_cache_dir(settings, version)
    wanted = sorted(set(days))
    missing = [d for d in wanted if cache is None or not (cache / f"dt={d}.parquet").exists()]
    fresh = pd.DataFrame()
    if missing:
        table = tables.read(spark, tables.GOLD_SAMPLES, settings, version=version)
        # Older partitions (and imported datasets) may lack the group columns: encode fills them.
        columns = [c for c in (*SAMPLE_COLUMNS, "activity_bucket") if c in table.columns]
        fresh = table.where(F.col("dt").isin(missing)).select(*columns).toPandas()
        fresh = fresh.loc[:, ~fresh.columns.duplicated()]
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            for day in missing:
                part = fresh[fresh["dt"] == day]
                tmp = cache / f".dt={day}.parquet.tmp"
                part.to_parquet(tmp, index=False)
                tmp.replace(cache / f"dt={day}.parquet")
    if cache is None:
        return fresh.reset_index(drop=True), version
    parts = [pd.read_parquet(cache / f"dt={d}.parquet") for d in wanted]
    frame = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    return frame, version


SAMPLES_CACHE_VERSIONS = 2


def _samples_cache_dir(settings: Settings, version: int) -> Path | None:
    """Local cache folder of one gold.samples version (None when models live in object
    storage); older versions beyond the newest few are removed."""
    if "://" in settings.models_dir:
        return None
    root = Path(settings.models_dir) / "cache" / "gold.samples"
    if root.exists():
        old = sorted(
            (p for p in root.glob("v*") if p.name[1:].isdigit()), key=lambda p: int(p.name[1:])
        )
        for stale in old[: max(0, len(old) - SAMPLES_CACHE_VERSIONS + 1)]:
            if stale.name != f"v{version}":
                shutil.rmtree(stale, ignore_errors=True)
    return root / f"v{version}"


def load_item_vectors(
    spark: SparkSession, settings: Settings, vocab: Vocabulary
) -> tuple[torch.Tensor | None, int | None]:
    """Frozen item vectors as one tensor whose rows follow the item_id vocabulary (0 = pad,
    1 = out of vocabulary, missing items: zeros), and the table version read."""
    version = tables.version(spark, tables.SILVER_ITEM_EMBEDDINGS, settings)
    if version is None:
        return None, None
    emb = (
        tables.read(spark, tables.SILVER_ITEM_EMBEDDINGS, settings, version=version)
        .select("item_id", "embedding")
        .toPandas()
    )
    if emb.empty:
        return None, version
    width = len(emb["embedding"].iloc[0])
    matrix = np.zeros((vocab.size("item_id"), width), dtype=np.float32)
    rows = vocab.index("item_id").get_indexer(emb["item_id"])
    known = rows >= 0
    matrix[rows[known] + 2] = np.stack(emb["embedding"].to_numpy()[known])
    return torch.from_numpy(matrix), version


def _train_window(dt: str, days: int) -> list[str]:
    return [(date.fromisoformat(dt) - timedelta(days=i)).isoformat() for i in range(days, 0, -1)]


def fit_and_score(
    spark: SparkSession,
    settings: Settings,
    model_name: str,
    train_frame: pd.DataFrame,
    eval_frame: pd.DataFrame,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Train one model on train_frame and score eval_frame; everything the caller records.
    The last training day is the validation day (early stopping, learning-rate plateau)."""
    cfg = settings.train
    model_cfg = load_model_config(model_name)
    params = {"embedding_dim": cfg.embedding_dim, **model_cfg.params}
    train_opts = {
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        **model_cfg.train,
    }
    vocab = Vocabulary.fit(train_frame)
    max_len = settings.features.max_seq_len
    train_data = encode(train_frame, vocab, max_len)
    eval_data = encode(eval_frame, vocab, max_len)
    device = pick_device(cfg.device)
    sizes = {name: vocab.size(name) for name in vocab.values}
    item_vectors, embeddings_version = load_item_vectors(spark, settings, vocab)
    model = build_model(model_cfg.model, sizes, item_vectors, **params)
    warm = _warm_start_from_champion(settings, model, vocab, model_name) if cfg.warm_start else None
    valid = None
    if cfg.validation_day and "dt" in train_frame and train_frame["dt"].nunique() > 1:
        last = train_frame["dt"] == train_frame["dt"].max()
        valid = encode(train_frame[last], vocab, max_len)
        train_data = encode(train_frame[~last], vocab, max_len)
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
    return {
        "warm_start": warm,
        "valid_aucs": result.valid_aucs,
        "best_epoch": result.best_epoch,
        "model": model,
        "model_config": model_cfg.model,
        "params": params,
        "train_opts": train_opts,
        "vocab": vocab,
        "eval_data": eval_data,
        "scores": scores,
        "train_rows": len(train_data),
        "losses": result.losses,
        "epoch_losses": epoch_losses,
        "samples_per_second": result.samples_per_second,
        "embeddings_version": embeddings_version,
    }


def task_label(task: str) -> str:
    return {"ctr": "click", "cvr": "conversion"}[task]


def with_task_registry(settings: Settings) -> Settings:
    """A CVR model has its own registered model (`<registry_model>_cvr`) and champion."""
    if settings.train.task == "ctr":
        return settings
    name = f"{settings.tracking.registry_model}_{settings.train.task}"
    return settings.model_copy(
        update={"tracking": settings.tracking.model_copy(update={"registry_model": name})}
    )


def task_rows(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """CVR trains and evaluates on clicked impressions only (post-click conversion)."""
    return frame[frame["click"] == 1].reset_index(drop=True) if task == "cvr" else frame


def train_and_evaluate(
    dt: str, settings: Settings | None = None, model_name: str | None = None
) -> dict[str, Any]:
    """Train on the days before dt, evaluate on dt (the next day), record metrics, track the
    run in MLflow and register the model as a challenger."""
    from choirflow.evaluate import tracking

    spark, settings = _context(settings)
    settings = with_task_registry(settings)
    model_name = model_name or settings.train.model
    task, label = settings.train.task, task_label(settings.train.task)
    train_days = _train_window(dt, settings.train.train_days)
    train_frame, version = load_samples(spark, settings, train_days)
    eval_frame, _ = load_samples(spark, settings, [dt])
    train_frame, eval_frame = task_rows(train_frame, task), task_rows(eval_frame, task)
    if train_frame.empty or eval_frame.empty or train_frame[label].nunique() < 2:
        reason = f"no training samples before {dt}" if train_frame.empty else "no evaluation rows"
        print(f"[train dt={dt}] skipped: {reason}", flush=True)
        return {"status": "skipped", "reason": reason, "dt": dt}

    record_name = model_name if task == "ctr" else f"{model_name}-{task}"
    out_dir = Path(settings.models_dir) / record_name / dt
    if (out_dir / "model.pt").exists():  # a finished run: start over, not resume
        shutil.rmtree(out_dir / "train_state", ignore_errors=True)
    fit = fit_and_score(
        spark, settings, model_name, train_frame, eval_frame, checkpoint_dir=out_dir / "train_state"
    )
    eval_data, scores = fit["eval_data"], fit["scores"]
    run_id = uuid.uuid4().hex[:12]
    labels = getattr(eval_data, label)
    rows = _metric_rows(record_name, run_id, dt, labels, scores, eval_data)
    lineage = {
        "gold.samples": version,
        "silver.item_embeddings": fit["embeddings_version"],
        "train_days": train_days,
    }
    meta = {
        "model": model_name,
        "task": task,
        "model_config": fit["model_config"],
        "run_id": run_id,
        "dt": dt,
        "params": fit["params"],
        "train": fit["train_opts"],
        "lineage": lineage,
        "vocab": fit["vocab"].values,
        "train_rows": fit["train_rows"],
        "samples_per_second": fit["samples_per_second"],
        "warm_start_from": fit["warm_start"],
        "valid_aucs": fit["valid_aucs"],
        "best_epoch": fit["best_epoch"],
    }
    ckpt = out_dir / "model.pt"
    save_checkpoint(ckpt, fit["model"], meta)
    pd.DataFrame(
        {
            "user_id": eval_data.users,
            "activity_bucket": eval_data.activity_bucket,
            "click": labels,  # the task's label (conversion for cvr)
            "score": scores,
            "event_id": eval_frame["event_id"].to_numpy(),
        }
    ).to_parquet(out_dir / "eval_predictions.parquet", index=False)
    (out_dir / "training_curve.json").write_text(
        json.dumps({"losses": fit["losses"], "epoch_losses": fit["epoch_losses"]})
    )
    overall = {r["metric"]: r["value"] for r in rows if r["slice"] == "all"}
    tracked = tracking.log_training_run(
        settings,
        model_name=record_name,
        dt=dt,
        params={**fit["params"], **fit["train_opts"], "train_rows": fit["train_rows"]},
        config=meta | {"vocab": None},
        lineage=lineage,
        epoch_losses=fit["epoch_losses"],
        eval_metrics={k: v for k, v in overall.items() if isinstance(v, float)},
        checkpoint=ckpt,
    )
    for row in rows:
        row["model_version"] = tracked["model_version"]
    _write_metrics(spark, settings, rows, dt, record_name)
    print(
        f"[train dt={dt}] {model_name} on {fit['train_rows']} rows "
        f"({fit['samples_per_second']:,.0f} samples/s): next-day AUC={overall['auc']:.4f} "
        f"GAUC={overall['gauc_impression_weighted']:.4f} on {len(eval_data)} rows; "
        f"registered version {tracked['model_version']}",
        flush=True,
    )
    return {
        "status": "trained",
        "dt": dt,
        "model": record_name,
        "run_id": run_id,
        "checkpoint": str(ckpt),
        **tracked,
        **overall,
    }


def _warm_start_from_champion(settings: Settings, model, vocab, model_name: str) -> str | None:
    """Start from the champion's weights when it is the same kind of model."""
    from choirflow.evaluate import tracking
    from choirflow.train.loop import warm_start

    current = tracking.champion(settings)
    if current is None or current["tags"].get("model") != model_name:
        return None
    warm_start(model, vocab, current["path"])
    return str(current["version"])


def score_checkpoint(
    spark: SparkSession, settings: Settings, path: str | Path, frame: pd.DataFrame
) -> np.ndarray:
    """Scores of a saved model (its own vocabulary and item vectors) on a samples frame."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    meta = checkpoint["meta"]
    vocab = Vocabulary(meta["vocab"])
    data = encode(frame, vocab, settings.features.max_seq_len)
    item_vectors, _ = load_item_vectors(spark, settings, vocab)
    sizes = {name: vocab.size(name) for name in vocab.values}
    model = build_model(
        meta.get("model_config", meta["model"]), sizes, item_vectors, **meta["params"]
    )
    model.load_state_dict(checkpoint["state_dict"])
    return predict(model, data, pick_device(settings.train.device))


PROMOTIONS_SCHEMA = T.StructType(
    [
        T.StructField("challenger_model", T.StringType()),
        T.StructField("challenger_version", T.StringType()),
        T.StructField("champion_version", T.StringType()),
        T.StructField("promoted", T.BooleanType()),
        T.StructField("gain", T.DoubleType()),
        T.StructField("ci_low", T.DoubleType()),
        T.StructField("ci_high", T.DoubleType()),
        T.StructField("reasons", T.StringType()),
        T.StructField("dt", T.StringType()),
    ]
)


def promote(
    dt: str, challenger: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """Compare the day's challenger with the champion on the same next-day samples; move the
    `champion` alias only when the gain holds (bootstrap over users) and no bucket regresses."""
    from choirflow.evaluate import tracking
    from choirflow.evaluate.promotion import decide

    spark, settings = _context(settings)
    settings = with_task_registry(settings)
    if not challenger or challenger.get("status") != "trained":
        return {"status": "skipped", "reason": "no challenger trained for this day", "dt": dt}
    out_dir = Path(challenger["checkpoint"]).parent
    preds = pd.read_parquet(out_dir / "eval_predictions.parquet")
    current = tracking.champion(settings)
    champion_scores = None
    if current is not None and current["version"] == challenger["model_version"]:
        return {"status": "skipped", "reason": "challenger is already champion", "dt": dt}
    if current is not None:
        frame, _ = load_samples(spark, settings, [dt])
        scored = pd.Series(score_checkpoint(spark, settings, current["path"], frame),
                           index=frame["event_id"].to_numpy())  # fmt: skip
        champion_scores = scored.reindex(preds["event_id"]).to_numpy()
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
    if decision.promote:
        tracking.set_champion(settings, challenger["model_version"])
    row = (
        challenger["model"], challenger["model_version"],
        current["version"] if current else None, decision.promote,
        decision.gain, decision.ci_low, decision.ci_high, "; ".join(decision.reasons), dt,
    )  # fmt: skip
    df = spark.createDataFrame([row], PROMOTIONS_SCHEMA).withColumn(
        "decided_at", F.current_timestamp()
    )
    where = f"dt = '{dt}' AND challenger_model = '{challenger['model']}'"
    tables.replace_partition(df, tables.GOLD_PROMOTIONS, settings, where)
    verdict = "promoted" if decision.promote else "kept the champion"
    print(f"[promote dt={dt}] {verdict}: " + "; ".join(decision.reasons), flush=True)
    return {"status": "decided", "promoted": decision.promote, "dt": dt, **decision.as_dict()}


def compare(models: list[str], dt: str, settings: Settings | None = None) -> pd.DataFrame:
    """Train the listed models on the same samples, evaluate on dt; return the leaderboard."""
    settings = settings or load_settings()
    results = [train_and_evaluate(dt, settings, m) for m in models]
    board = pd.DataFrame([r for r in results if r.get("status") == "trained"])
    if board.empty:
        return board
    cols = [
        "model",
        "auc",
        "gauc_impression_weighted",
        "user_averaged_auc",
        "logloss",
        "model_version",
    ]
    board = board[cols].sort_values("gauc_impression_weighted", ascending=False)
    out = Path(settings.reports_dir) / dt
    out.mkdir(parents=True, exist_ok=True)
    board.to_csv(out / "leaderboard.csv", index=False)
    return board


def report(dt: str, settings: Settings | None = None) -> str:
    from choirflow.evaluate.report import build_report

    spark, settings = _context(settings)
    path = build_report(spark, settings, dt)
    print(f"[report dt={dt}] {path}", flush=True)
    return str(path)


def _metric_rows(
    model_name: str, run_id: str, dt: str, labels: np.ndarray, scores: np.ndarray, data
) -> list[dict[str, Any]]:
    rows = []
    slices = {"all": np.ones(len(labels), dtype=bool)}
    for bucket in ("low", "mid", "high"):
        slices[f"activity={bucket}"] = data.activity_bucket == bucket
    for name, mask in slices.items():
        if not mask.any():
            continue
        for metric, value in metrics.summary(labels[mask], scores[mask], data.users[mask]).items():
            rows.append(
                {
                    "model": model_name,
                    "run_id": run_id,
                    "slice": name,
                    "metric": metric,
                    "value": None if value is None or np.isnan(value) else float(value),
                    "dt": dt,
                }
            )
    return rows


METRICS_SCHEMA = T.StructType(
    [
        T.StructField("model", T.StringType()),
        T.StructField("run_id", T.StringType()),
        T.StructField("model_version", T.StringType()),
        T.StructField("slice", T.StringType()),
        T.StructField("metric", T.StringType()),
        T.StructField("value", T.DoubleType()),
        T.StructField("dt", T.StringType()),
    ]
)


def _write_metrics(
    spark: SparkSession, settings: Settings, rows: list[dict[str, Any]], dt: str, model: str
) -> None:
    df = spark.createDataFrame(
        [tuple(r[f.name] for f in METRICS_SCHEMA.fields) for r in rows], METRICS_SCHEMA
    )
    df = df.withColumn("recorded_at", F.current_timestamp())
    tables.replace_partition(
        df, tables.GOLD_METRICS, settings, f"dt = '{dt}' AND model = '{model}'"
    )


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Records the seconds the block took under `step` (the per-step progress lines)."""
    t0 = time.perf_counter()
    yield
    seconds[step] = round(time.perf_counter() - t0, 1)


def run_day(dt: str, settings: Settings | None = None, train: bool = True) -> dict[str, Any]:
    """All daily steps of one day in this process; `train=False` stops after the gold gate
    (a warm-up day whose model nobody would look at). Prints each step's seconds."""
    settings = settings or load_settings()
    out: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    with _timed(seconds, "ingest"):
        out["ingest"] = ingest(dt, settings)
    with _timed(seconds, "bronze_gate"):
        out["bronze_gate"] = quality_gate("bronze", dt, settings)
    with _timed(seconds, "features"):
        out["features"] = build_features(dt, settings)
    with _timed(seconds, "gold_gate"):
        out["gold_gate"] = quality_gate("gold", dt, settings)
    if train:
        with _timed(seconds, "train_promote_report"):
            out.update(_train_promote_report(dt, settings))
    print(f"[day dt={dt}] " + " ".join(f"{k}={v}s" for k, v in seconds.items()), flush=True)
    return {**out, "step_seconds": seconds}


def _train_promote_report(dt: str, settings: Settings) -> dict[str, Any]:
    trained = train_and_evaluate(dt, settings)
    return {
        "train": trained,
        "promotion": promote(dt, trained, settings),
        "report": report(dt, settings),
    }


def run_range(
    start: str, end: str, settings: Settings | None = None, train_from: str | None = None
) -> list[dict[str, Any]]:
    """Run the daily steps in date order, in this process (development, backfills).
    Days before `train_from` build tables only (no training, promotion or report)."""
    settings = settings or load_settings()
    out = []
    for dt in days_between(start, end):
        t0 = time.perf_counter()
        result = run_day(dt, settings, train=train_from is None or dt >= train_from)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        out.append(result)
    return out


BACKFILL_STEPS = ("ingest", "features", "train")


def backfill(
    start: str,
    end: str,
    steps: tuple[str, ...] = ("ingest", "features"),
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Rebuild a date range in order. Each step replaces its partitions, so this is idempotent,
    and the carried sequence state is rebuilt day by day from the first day of the range."""
    unknown = set(steps) - set(BACKFILL_STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from {BACKFILL_STEPS}")
    settings = settings or load_settings()
    out = []
    for dt in days_between(start, end):
        t0 = time.perf_counter()
        result: dict[str, Any] = {"dt": dt}
        if "ingest" in steps:
            result["ingest"] = ingest(dt, settings)
        if "features" in steps:
            result["features"] = build_features(dt, settings)
        if "train" in steps:
            result["train"] = train_and_evaluate(dt, settings)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[backfill] {dt} done in {result['seconds']}s", flush=True)
        out.append(result)
    return out
