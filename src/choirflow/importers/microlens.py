"""MM-CTR challenge data (MicroLens_1M_x1 parquet files) -> gold.samples + silver.item_embeddings.

The challenge ships finished samples (user_id, item_seq left-padded with 0, likes_level,
views_level, item_id, label) and item_info (item_tags, item_emb_d128). They go straight into
the gold and silver tables, so every model trains on them unchanged: train.parquet becomes
day `start`, valid.parquet the next day (the evaluation day). test.parquet has no labels and
is not imported. The first item tag stands in for the category. Import into a warehouse of
its own (CHOIRFLOW__PATHS__WAREHOUSE): its samples carry fewer columns than the synthetic ones.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from choirflow import tables
from choirflow.buckets import activity_bucket_array
from choirflow.config import Settings

ENCODER_VERSION = "microlens-mmctr-item_emb_d128"
SPLITS = ("train", "valid")


def _items(path: Path) -> pd.DataFrame:
    info = pd.read_parquet(path / "item_info.parquet")
    info = info[info["item_id"] > 0]
    first_tag = info["item_tags"].map(lambda t: str(int(t[0])) if len(t) and t[0] else "0")
    return pd.DataFrame(
        {"item_id": info["item_id"].astype(str), "category": "tag/" + first_tag,
         "embedding": info["item_emb_d128"]}
    )  # fmt: skip


def _samples(frame: pd.DataFrame, split: str, dt: str, categories: pd.Series) -> pd.DataFrame:
    seqs = [
        [str(int(i)) for i in seq if i > 0] for seq in frame["item_seq"]
    ]  # left-padded with 0: keep real ids, oldest first
    lookup = categories.to_dict()
    n = len(frame)
    return pd.DataFrame(
        {
            "event_id": [f"mm-{split}-{i}" for i in range(n)],
            "request_id": [f"mm-{split}-{i}" for i in range(n)],
            "user_id": frame["user_id"].astype(str),
            "item_id": frame["item_id"].astype(str),
            "click": frame["label"].astype(int),
            "conversion": 0,
            "item_category": [lookup.get(i, "tag/0") for i in frame["item_id"].astype(str)],
            "views_level": frame["views_level"].astype(int),
            "likes_level": frame["likes_level"].astype(int),
            "hist_item_ids": seqs,
            "hist_categories": [[lookup.get(i, "tag/0") for i in s] for s in seqs],
            "hist_gap_seconds": [[0.0] * len(s) for s in seqs],  # no times in the data
            "hist_len": [len(s) for s in seqs],
            "dt": dt,
        }
    )


def import_microlens(
    spark: SparkSession, settings: Settings, path: str | Path, start: str = "2025-03-01"
) -> dict[str, int]:
    path = Path(path)
    items = _items(path)
    categories = items.set_index("item_id")["category"]
    counts: dict[str, int] = {}
    for offset, split in enumerate(SPLITS):
        dt = (date.fromisoformat(start) + timedelta(days=offset)).isoformat()
        frame = pd.read_parquet(path / f"{split}.parquet")
        samples = _samples(frame, split, dt, categories)
        clicks_30d = samples["hist_len"]  # activity proxy: the history the data set gives
        samples["activity_bucket"] = activity_bucket_array(
            clicks_30d.to_numpy(),
            settings.features.activity_low_max,
            settings.features.activity_mid_max,
        )
        df = spark.createDataFrame(samples)
        for column in ("event_time", "seconds_since_last_click"):
            df = df.withColumn(
                column, F.lit(None).cast("timestamp" if column == "event_time" else "double")
            )
        for column in ("position", "hour", "weekday"):
            df = df.withColumn(column, F.lit(None).cast("int"))
        for column in ("device", "surface", "age_band", "gender", "city_tier",
                       "item_top_category", "item_brand", "price_bucket"):  # fmt: skip
            df = df.withColumn(column, F.lit(None).cast("string"))
        for column in ("click", "conversion", "views_level", "likes_level", "hist_len"):
            df = df.withColumn(column, F.col(column).cast("int"))
        tables.replace_partition(df, tables.GOLD_SAMPLES, settings, tables.partition(dt))
        counts[split] = len(samples)
    schema = T.StructType(
        [
            T.StructField("item_id", T.StringType()),
            T.StructField("content_hash", T.StringType()),
            T.StructField("has_image", T.BooleanType()),
            T.StructField("embedding", T.ArrayType(T.FloatType())),
            T.StructField("encoder_version", T.StringType()),
            T.StructField("updated_dt", T.StringType()),
        ]
    )
    rows = [
        (i, None, True, [float(x) for x in e], ENCODER_VERSION, start)
        for i, e in zip(items["item_id"], items["embedding"], strict=True)
    ]
    tables.merge_upsert(
        spark, spark.createDataFrame(rows, schema), tables.SILVER_ITEM_EMBEDDINGS, settings
    )
    counts["items"] = len(items)
    return counts
