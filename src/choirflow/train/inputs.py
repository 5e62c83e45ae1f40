"""What training reads from the warehouse: gold.samples days and the frozen item vectors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.train.data import FIRST_VALUE, SAMPLE_COLUMNS, Vocabulary

SAMPLES_CACHE_VERSIONS = 2


def load_samples(
    spark: SparkSession, settings: Settings, days: list[str], version: int | None = None
) -> tuple[pd.DataFrame, int | None]:
    """gold.samples rows of the given days as pandas, with the table version read.

    Each day is read from Delta once per table version and kept as a local parquet file
    (`<models>/cache/gold.samples/v<version>/`), so the training window, the evaluation day,
    promotion and `compare` of several models share one read. A write to the table makes a
    new version, hence a new cache; only the newest versions are kept. Pass `version` to read
    several sets of days from one snapshot of the table."""
    if version is None:
        version = tables.version(spark, tables.GOLD_SAMPLES, settings)
    if version is None or not days:
        return pd.DataFrame(columns=SAMPLE_COLUMNS), version
    cache = _samples_cache_dir(settings, version)
    wanted = sorted(set(days))
    missing = [d for d in wanted if cache is None or not _cached_day(cache, d).exists()]
    fresh = pd.DataFrame()
    if missing:
        table = tables.read(spark, tables.GOLD_SAMPLES, settings, version=version)
        # Older partitions (and imported datasets) may lack the group columns: encode fills them.
        columns = [c for c in SAMPLE_COLUMNS if c in table.columns]
        fresh = table.where(F.col("dt").isin(missing)).select(*columns).toPandas()
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            for day in missing:
                part = fresh[fresh["dt"] == day]
                tmp = cache / f".dt={day}.parquet.tmp"
                part.to_parquet(tmp, index=False)
                tmp.replace(_cached_day(cache, day))
    if cache is None:
        return fresh.reset_index(drop=True), version
    parts = [pd.read_parquet(_cached_day(cache, d)) for d in wanted]
    frame = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    return frame, version


def _cached_day(cache: Path, day: str) -> Path:
    return cache / f"dt={day}.parquet"


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
    spark: SparkSession, settings: Settings, vocab: Vocabulary, version: int | None = None
) -> tuple[torch.Tensor | None, int | None]:
    """Frozen item vectors as one tensor whose rows follow the item_id vocabulary (PAD and OOV
    rows and items without a vector: zeros), and the table version read (`version`: that
    one, as a model trained with it saw them; else the latest)."""
    if version is None:
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
    matrix[rows[known] + FIRST_VALUE] = np.stack(emb["embedding"].to_numpy()[known])
    return torch.from_numpy(matrix), version
