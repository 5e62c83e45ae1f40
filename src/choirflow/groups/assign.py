"""Profile text -> text encoder -> normalised vector -> RQ-KMeans codes, and the group priors.

silver.user_groups[dt] is every user's codes at the end of dt: a daily run carries yesterday's
codes and encodes only users whose profile or codebook changed. A refit (its own step, weekly
in choirflow_groups_refresh) writes a new codebook version; the next assignment recodes all.

Group priors (ChoirRec §4.3) live in silver.group_priors[dt], one row per group at each level
of the hierarchy: majority-vote attributes and the group behaviour sequence. A user reads the
priors of the deepest group on its path with at least `min_group_members` members.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import Settings
from choirflow.dates import day_offset
from choirflow.encoders import text_encoder
from choirflow.groups import rqkmeans
from choirflow.groups.codes import code_prefix
from choirflow.groups.inputs import profiles_as_of
from choirflow.logs import step_log
from choirflow.spark import map_batches


def encode_profiles(texts: list[str], dim: int) -> np.ndarray:
    """[N, dim] L2-normalised text vectors (truncated Matryoshka-style, then renormalised)."""
    vectors = text_encoder().encode(texts, batch_size=128, show_progress_bar=False)
    return rqkmeans.l2_normalise(np.asarray(vectors)[:, :dim])


def latest_codebook(
    spark: SparkSession, settings: Settings, as_of: str | None = None
) -> tuple[str, list[np.ndarray]] | None:
    """The newest codebook fitted on or before `as_of`: rebuilding a past day after a refit
    assigns the codes that day had (point in time, so backfills equal the daily runs)."""
    if not tables.exists(spark, tables.SILVER_GROUP_CODEBOOKS, settings):
        return None
    rows = tables.read(spark, tables.SILVER_GROUP_CODEBOOKS, settings)
    if as_of is not None:
        rows = rows.where(F.col("fitted_dt") <= as_of)
    newest = (
        rows.orderBy(F.desc("fitted_dt"), F.desc("created_at")).select("codebook_version").first()
    )
    if newest is None:
        return None
    version = newest[0]
    frame = rows.where(F.col("codebook_version") == version).toPandas()
    books = [
        np.stack(part.sort_values("code")["centroid"].to_numpy()).astype(np.float32)
        for _, part in frame.groupby("stage", sort=True)
    ]
    return version, books


def refit_codebooks(spark: SparkSession, settings: Settings, dt: str) -> str:
    """Fit a new codebook version on every current profile; returns the version."""
    cfg = settings.groups
    # Sorted: K-means++ seeding depends on the input order, and the order must not depend on
    # how the table happens to be laid out in files.
    profiles = (
        profiles_as_of(spark, settings, dt)
        .select("user_id", "profile_text")
        .toPandas()
        .sort_values("user_id")
    )
    if profiles.empty:
        raise ValueError("silver.user_profiles is empty: label profiles before fitting groups")
    vectors = encode_profiles(profiles["profile_text"].tolist(), cfg.profile_dim)
    books = rqkmeans.fit(vectors, tuple(cfg.centroids), seed=cfg.seed)
    digest = hashlib.sha256(b"".join(b.tobytes() for b in books)).hexdigest()[:8]
    version = f"rq{'x'.join(str(len(b)) for b in books)}-{dt}-{digest}"
    created = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {
            "codebook_version": version,
            "stage": s,
            "code": c,
            "centroid": book[c].tolist(),
            "fitted_dt": dt,
            "users_fitted": len(vectors),
            "created_at": created,
        }
        for s, book in enumerate(books)
        for c in range(len(book))
    ]
    frame = spark.createDataFrame(
        rows,
        "codebook_version string, stage int, code int, centroid array<float>, fitted_dt string, "
        "users_fitted long, created_at timestamp",
    )
    tables.merge_upsert(spark, frame, tables.SILVER_GROUP_CODEBOOKS, settings)
    errors = rqkmeans.reconstruction_error(vectors, books)
    step_log(__name__, "groups", dt).info(
        "fitted %s on %d profiles; residual by stage %s", version, len(vectors), errors
    )
    return version


def _assign_partition(books: list[np.ndarray], dim: int):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            codes = rqkmeans.assign(encode_profiles(batch["profile_text"].tolist(), dim), books)
            out = batch[["user_id", "profile_fingerprint", "profile_source"]].copy()
            out["codes"] = [list(map(int, row)) for row in codes]
            yield out

    return run


def _previous_groups(spark: SparkSession, settings: Settings, dt: str) -> DataFrame | None:
    if not tables.exists(spark, tables.SILVER_USER_GROUPS, settings):
        return None
    groups = tables.read(spark, tables.SILVER_USER_GROUPS, settings).where(F.col("dt") < dt)
    last = groups.agg(F.max("dt")).first()[0]
    return None if last is None else groups.where(F.col("dt") == last)


def _changed_profiles(
    spark: SparkSession, settings: Settings, dt: str, previous: DataFrame | None, version: str
) -> tuple[DataFrame, DataFrame | None]:
    """(profiles to encode, users whose carried codes still hold): a user keeps their codes
    while their profile's fingerprint and source and the codebook version are unchanged."""
    profiles = profiles_as_of(spark, settings, dt).select(
        "user_id",
        F.col("input_fingerprint").alias("profile_fingerprint"),
        F.col("source").alias("profile_source"),
        "profile_text",
    )
    if previous is None:
        return profiles, None
    prev = previous.select(
        "user_id", "codes", F.col("profile_fingerprint").alias("p_fp"),
        F.col("profile_source").alias("p_src"), F.col("codebook_version").alias("p_ver"),
    )  # fmt: skip
    joined = profiles.join(prev, "user_id", "left")
    same = F.coalesce(
        (F.col("p_fp") == F.col("profile_fingerprint"))
        & (F.col("p_src") == F.col("profile_source"))
        & (F.col("p_ver") == version),
        F.lit(False),
    )
    changed = joined.where(~same).select(*profiles.columns)
    kept = joined.where(same).select("user_id", "profile_fingerprint", "profile_source", "codes")
    return changed, kept


def _with_levels(groups: DataFrame, levels: int, min_members: int) -> tuple[DataFrame, Column]:
    """The group of each level (g1..gL), its size (n1..nL), and the prior group: the deepest
    level whose group has at least `min_members` members."""
    for level in range(1, levels + 1):
        groups = groups.withColumn(f"g{level}", code_prefix("codes", level))
    for level in range(1, levels + 1):
        groups = groups.withColumn(
            f"n{level}", F.count(F.lit(1)).over(Window.partitionBy(f"g{level}"))
        )
    prior = F.col("g1")
    for level in range(2, levels + 1):
        prior = F.when(F.col(f"n{level}") >= min_members, F.col(f"g{level}")).otherwise(prior)
    return groups, prior


def assign_groups(
    spark: SparkSession, settings: Settings, dt: str, refit: bool = False
) -> dict[str, Any]:
    """silver.user_groups[dt]: carried codes plus new codes for changed profiles."""
    cfg = settings.groups
    current = None if refit else latest_codebook(spark, settings, as_of=dt)
    if current is None:
        refit_codebooks(spark, settings, dt)
        current = latest_codebook(spark, settings, as_of=dt)
    version, books = current
    previous = _previous_groups(spark, settings, dt)
    changed, kept = _changed_profiles(spark, settings, dt, previous, version)
    n_changed = changed.count()
    fresh = map_batches(
        changed,
        _assign_partition(books, cfg.profile_dim),
        "user_id string, profile_fingerprint string, profile_source string, codes array<int>",
        n_changed,
        settings,
    )
    fresh = fresh.withColumn("assigned_dt", F.lit(dt))
    if kept is not None:
        carried = previous.select("user_id", "assigned_dt")
        fresh = fresh.unionByName(kept.join(carried, "user_id", "left"))
    levels = len(books)
    groups, prior = _with_levels(
        fresh.withColumn("codebook_version", F.lit(version)), levels, cfg.min_group_members
    )
    out = groups.select(
        "user_id",
        *[F.try_element_at("codes", F.lit(s + 1)).alias(f"c{s + 1}") for s in range(3)],
        "codes",
        F.col(f"g{levels}").alias("leaf_group"),
        prior.alias("prior_group"),
        "codebook_version",
        "profile_fingerprint",
        "profile_source",
        "assigned_dt",
        F.lit(dt).alias("dt"),
    )
    tables.replace_partition(out, tables.SILVER_USER_GROUPS, settings, tables.partition(dt))
    today = tables.read(spark, tables.SILVER_USER_GROUPS, settings).where(F.col("dt") == dt)
    stats = {
        "codebook_version": version,
        "assigned": n_changed,
        "users": today.count(),
        "leaf_groups": today.select("leaf_group").distinct().count(),
    }
    stats["priors"] = build_group_priors(spark, settings, dt)
    step_log(__name__, "groups", dt).info(" ".join(f"{k}={v}" for k, v in stats.items()))
    return stats


def _voted_attributes(with_attrs: DataFrame) -> DataFrame:
    """Per group: its members and each attribute's most common value (ties: the smallest)."""
    priors = with_attrs.groupBy("group_id").agg(F.countDistinct("user_id").alias("members"))
    for attr in ("age_band", "gender", "city_tier"):
        votes = (
            with_attrs.where(F.col(attr).isNotNull())
            .groupBy("group_id", attr)
            .count()
            .withColumn(
                "r",
                F.row_number().over(
                    Window.partitionBy("group_id").orderBy(F.desc("count"), F.asc(attr))
                ),
            )
            .where("r = 1")
            .select("group_id", F.col(attr).alias(f"voted_{attr}"))
        )
        priors = priors.join(votes, "group_id", "left")
    return priors


def _group_sequence(behaviour: DataFrame, key: Column, length: int) -> DataFrame:
    """Per group: its `length` strongest keys (purchases, then clicks), least strong first
    and strongest last: the same right-aligned order as a behaviour history."""
    return (
        behaviour.groupBy("group_id", key.alias("key"))
        .agg(F.sum("purchases").alias("p"), F.sum("clicks").alias("c"))
        .withColumn(
            "r",
            F.row_number().over(
                Window.partitionBy("group_id").orderBy(F.desc("p"), F.desc("c"), F.asc("key"))
            ),
        )
        .where(F.col("r") <= length)
        .groupBy("group_id")
        .agg(F.array_sort(F.collect_list(F.struct(F.negative("r").alias("o"), "key"))).alias("s"))
        .select("group_id", F.transform("s", lambda e: e["key"]).alias("seq"))
    )


def build_group_priors(spark: SparkSession, settings: Settings, dt: str) -> int:
    """silver.group_priors[dt]: per group at every level, voted attributes and the top
    categories its members clicked and bought in the last 365 days (up to dt)."""
    cfg = settings.groups
    members = tables.read(spark, tables.SILVER_USER_GROUPS, settings).where(F.col("dt") == dt)
    levels = members.select(F.max(F.size("codes"))).first()[0] or 0
    member_groups = members.select(
        "user_id",
        F.explode(F.array(*[code_prefix("codes", lv) for lv in range(1, levels + 1)])).alias(
            "group_id"
        ),
    )
    users = tables.read_as_of(spark, tables.BRONZE_USER_HISTORY, settings, dt).select(
        "user_id", "age_band", "gender", "city_tier"
    )
    priors = _voted_attributes(member_groups.join(users, "user_id", "left"))
    behaviour = (
        tables.read(spark, tables.SILVER_USER_CATEGORY_DAILY, settings)
        .where((F.col("dt") > day_offset(dt, -365)) & (F.col("dt") <= dt))
        .join(member_groups, "user_id")
    )
    for column, key in (
        ("group_hist_categories", F.col("category")),
        ("group_hist_top_categories", F.split("category", "/").getItem(0)),
    ):
        top = _group_sequence(behaviour, key, cfg.group_seq_len).withColumnRenamed("seq", column)
        priors = priors.join(top, "group_id", "left")
    priors = priors.withColumn("dt", F.lit(dt))
    tables.replace_partition(priors, tables.SILVER_GROUP_PRIORS, settings, tables.partition(dt))
    return tables.read(spark, tables.SILVER_GROUP_PRIORS, settings).where(F.col("dt") == dt).count()
