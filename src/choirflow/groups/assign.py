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
from choirflow.dates import day_offset, days_between
from choirflow.encoders import text_encoder
from choirflow.groups import rqkmeans
from choirflow.groups.codes import code_prefix
from choirflow.groups.inputs import in_window, profiles_as_of
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
    return version, _centroids(rows.where(F.col("codebook_version") == version).toPandas())


def _centroids(rows: pd.DataFrame) -> list[np.ndarray]:
    """One codebook version's rows as its stages' centroid matrices, in stage order."""
    return [
        np.stack(part.sort_values("code")["centroid"].to_numpy()).astype(np.float32)
        for _, part in rows.groupby("stage", sort=True)
    ]


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
            f"n{level}", F.count(F.lit(1)).over(Window.partitionBy("dt", f"g{level}"))
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
        fresh.withColumn("codebook_version", F.lit(version)).withColumn("dt", F.lit(dt)),
        levels,
        cfg.min_group_members,
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
        "dt",
    )
    tables.replace_partition(out, tables.SILVER_USER_GROUPS, settings, tables.partition(dt))
    today = tables.read(spark, tables.SILVER_USER_GROUPS, settings).where(F.col("dt") == dt)
    stats = {
        "codebook_version": version,
        "assigned": n_changed,
        "users": today.count(),
        "leaf_groups": today.select("leaf_group").distinct().count(),
    }
    stats["priors"] = build_group_priors(spark, settings, dt).get(dt, 0)
    step_log(__name__, "groups", dt).info(" ".join(f"{k}={v}" for k, v in stats.items()))
    return stats


def _voted_attributes(with_attrs: DataFrame) -> DataFrame:
    """Per group and day: its members and each attribute's most common value (ties: the
    smallest)."""
    key = ("group_id", "dt")
    priors = with_attrs.groupBy(*key).agg(F.countDistinct("user_id").alias("members"))
    for attr in ("age_band", "gender", "city_tier"):
        votes = (
            with_attrs.where(F.col(attr).isNotNull())
            .groupBy(*key, attr)
            .count()
            .withColumn(
                "r",
                F.row_number().over(Window.partitionBy(*key).orderBy(F.desc("count"), F.asc(attr))),
            )
            .where("r = 1")
            .select(*key, F.col(attr).alias(f"voted_{attr}"))
        )
        priors = priors.join(votes, list(key), "left")
    return priors


def _group_sequence(behaviour: DataFrame, key: Column, length: int) -> DataFrame:
    """Per group and day: its `length` strongest keys (purchases, then clicks), least strong
    first and strongest last: the same right-aligned order as a behaviour history."""
    return (
        behaviour.groupBy("group_id", "dt", key.alias("key"))
        .agg(F.sum("purchases").alias("p"), F.sum("clicks").alias("c"))
        .withColumn(
            "r",
            F.row_number().over(
                Window.partitionBy("group_id", "dt").orderBy(F.desc("p"), F.desc("c"), F.asc("key"))
            ),
        )
        .where(F.col("r") <= length)
        .groupBy("group_id", "dt")
        .agg(F.array_sort(F.collect_list(F.struct(F.negative("r").alias("o"), "key"))).alias("s"))
        .select("group_id", "dt", F.transform("s", lambda e: e["key"]).alias("seq"))
    )


def build_group_priors(
    spark: SparkSession, settings: Settings, start: str, end: str | None = None
) -> dict[str, int]:
    """silver.group_priors of each day of [start, end]: per group at every level, voted
    attributes and the top categories its members clicked and bought in the 365 days up to
    the day. Returns the groups per day."""
    end = end or start
    cfg = settings.groups
    days = tables.day_range(start, end)
    members = tables.read(spark, tables.SILVER_USER_GROUPS, settings).where(days)
    levels = members.select(F.max(F.size("codes"))).first()[0] or 0
    prefixes = [
        F.when(F.size("codes") >= lv, code_prefix("codes", lv)) for lv in range(1, levels + 1)
    ]
    member_groups = (
        members.select("user_id", "dt", F.explode(F.array(*prefixes)).alias("group_id"))
        .where(F.col("group_id").isNotNull())
        .cache()
    )
    users = tables.read_as_of_days(spark, tables.BRONZE_USER_HISTORY, settings, start, end).select(
        "user_id", F.col("as_of").alias("dt"), "age_band", "gender", "city_tier"
    )
    priors = _voted_attributes(member_groups.join(users, ["user_id", "dt"], "left"))
    daily = tables.read(spark, tables.SILVER_USER_CATEGORY_DAILY, settings).where(
        (F.col("dt") > day_offset(start, -365)) & (F.col("dt") <= end)
    )
    behaviour = in_window(daily, member_groups, 365)
    for column, key in (
        ("group_hist_categories", F.col("category")),
        ("group_hist_top_categories", F.split("category", "/").getItem(0)),
    ):
        top = _group_sequence(behaviour, key, cfg.group_seq_len).withColumnRenamed("seq", column)
        priors = priors.join(top, ["group_id", "dt"], "left")
    tables.replace_partition(priors, tables.SILVER_GROUP_PRIORS, settings, days)
    member_groups.unpersist()
    counts = tables.read(spark, tables.SILVER_GROUP_PRIORS, settings).where(days).groupBy("dt")
    return {r["dt"]: int(r["count"]) for r in counts.count().collect()}


def _codebooks_by_day(
    spark: SparkSession, settings: Settings, start: str, end: str
) -> tuple[dict[str, str], dict[str, list[np.ndarray]]]:
    """The codebook version each day of [start, end] assigns with (latest_codebook's rule),
    and the centroids of those versions."""
    fitted = [
        (r["fitted_dt"], r["created_at"], r["codebook_version"])
        for r in tables.read(spark, tables.SILVER_GROUP_CODEBOOKS, settings)
        .where(F.col("fitted_dt") <= end)
        .select("fitted_dt", "created_at", "codebook_version")
        .distinct()
        .collect()
    ]
    by_day = {}
    for dt in days_between(start, end):
        candidates = [f for f in fitted if f[0] <= dt]
        if not candidates:
            raise ValueError(f"no RQ-KMeans codebook fitted on or before {dt}")
        by_day[dt] = max(candidates)[2]
    frame = (
        tables.read(spark, tables.SILVER_GROUP_CODEBOOKS, settings)
        .where(F.col("codebook_version").isin(sorted(set(by_day.values()))))
        .toPandas()
    )
    books = {version: _centroids(rows) for version, rows in frame.groupby("codebook_version")}
    return by_day, books


def _code_texts(books: dict[str, list[np.ndarray]], dim: int):
    """mapInPandas body: (profile_text, codebook_version) -> codes under that version."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            vectors = encode_profiles(batch["profile_text"].tolist(), dim)
            codes = np.zeros((len(batch), 0), dtype=int).tolist()
            versions = batch["codebook_version"].to_numpy()
            for version in set(versions):
                rows = np.flatnonzero(versions == version)
                for row, code in zip(rows, rqkmeans.assign(vectors[rows], books[version]),
                                     strict=True):  # fmt: skip
                    codes[row] = [int(c) for c in code]
            out = batch[["profile_text", "codebook_version"]].copy()
            out["codes"] = codes
            yield out

    return run


# What a user's codes are carried on: unchanged from the day before, the codes stand.
CARRY_KEY = ("profile_fingerprint", "profile_source", "codebook_version")


def _carry_decisions(
    spark: SparkSession, settings: Settings, start: str, end: str, version_of: dict[str, str]
) -> DataFrame:
    """Every (user, day) of [start, end] with a profile: `changed` when its carry key
    differs from the day before (the last partition before start for the first day), and
    `change_day`, the day of its last change in the range (null: the seed's codes stand)."""
    versions = spark.createDataFrame(list(version_of.items()), "dt string, codebook_version string")
    profiles = (
        tables.read_as_of_days(spark, tables.SILVER_USER_PROFILES, settings, start, end, ())
        .select(
            "user_id", F.col("as_of").alias("dt"),
            F.col("input_fingerprint").alias("profile_fingerprint"),
            F.col("source").alias("profile_source"), "profile_text",
        )
        .join(F.broadcast(versions), "dt")
    )  # fmt: skip
    previous = _previous_groups(spark, settings, start)
    if previous is None:
        previous = spark.createDataFrame(
            [], "user_id string, codes array<int>, profile_fingerprint string, "
            "profile_source string, codebook_version string, assigned_dt string",
        )  # fmt: skip
    seed = previous.select(
        "user_id", *[F.col(c).alias(f"seed_{c}") for c in (*CARRY_KEY, "codes", "assigned_dt")]
    )
    days = Window.partitionBy("user_id").orderBy("dt")
    same = [
        F.when(F.col("dt") == start, F.col(f"seed_{c}")).otherwise(F.lag(c).over(days)) == F.col(c)
        for c in CARRY_KEY
    ]
    unchanged = F.coalesce(same[0] & same[1] & same[2], F.lit(False))
    last_change = F.last(F.when(F.col("changed"), F.col("dt")), ignorenulls=True)
    return (
        profiles.join(seed, "user_id", "left")
        .withColumn("changed", ~unchanged)
        .withColumn("change_day", last_change.over(days.rowsBetween(Window.unboundedPreceding, 0)))
        .localCheckpoint(eager=True)
    )


def _codes_of(
    decided: DataFrame, books: dict[str, list[np.ndarray]], settings: Settings
) -> tuple[DataFrame, int]:
    """Each (user, day)'s codes: the changed profile texts encoded once each, the codes of
    a user's last change carried to the days after it. Also how many texts were encoded."""
    texts = decided.where("changed").select("profile_text", "codebook_version").distinct()
    n_texts = texts.count()
    coded = map_batches(
        texts, _code_texts(books, settings.groups.profile_dim),
        "profile_text string, codebook_version string, codes array<int>", n_texts, settings,
    )  # fmt: skip
    new_codes = (
        decided.where("changed")
        .join(coded, ["profile_text", "codebook_version"])
        .select("user_id", F.col("dt").alias("change_day"), F.col("codes").alias("new_codes"))
    )
    assigned = decided.join(new_codes, ["user_id", "change_day"], "left").select(
        "user_id", "dt", *CARRY_KEY,
        F.coalesce("new_codes", "seed_codes").alias("codes"),
        F.coalesce("change_day", "seed_assigned_dt").alias("assigned_dt"),
        "changed",
    )  # fmt: skip
    return assigned, n_texts


def _write_groups(
    spark: SparkSession, settings: Settings, assigned: DataFrame, levels: int, start: str,
    end: str,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """silver.user_groups of [start, end] in one commit; users, leaf groups and new codes
    per day."""
    groups, prior = _with_levels(assigned, levels, settings.groups.min_group_members)
    out = groups.select(
        "user_id",
        *[F.try_element_at("codes", F.lit(s + 1)).alias(f"c{s + 1}") for s in range(3)],
        "codes",
        code_prefix("codes", levels).alias("leaf_group"),
        prior.alias("prior_group"),
        *CARRY_KEY,
        "assigned_dt",
        "dt",
    )
    range_days = tables.day_range(start, end)
    tables.replace_partition(out, tables.SILVER_USER_GROUPS, settings, range_days)
    figures = {
        r["dt"]: {"users": int(r["users"]), "leaf_groups": int(r["leaf_groups"])}
        for r in tables.read(spark, tables.SILVER_USER_GROUPS, settings)
        .where(range_days)
        .groupBy("dt")
        .agg(F.count(F.lit(1)).alias("users"), F.countDistinct("leaf_group").alias("leaf_groups"))
        .collect()
    }
    for r in assigned.groupBy("dt").agg(F.sum(F.col("changed").cast("long")).alias("n")).collect():
        figures[r["dt"]]["assigned"] = int(r["n"])
    return figures


def assign_groups_days(
    spark: SparkSession, settings: Settings, start: str, end: str
) -> dict[str, dict[str, Any]]:
    """assign_groups for every day of [start, end] in one pass: the daily rule (a user keeps
    their codes while their profile and the codebook stay the same; new codes otherwise,
    assigned_dt that day) read along each user's days, and each changed profile text encoded
    once. Returns each day's figures."""
    if latest_codebook(spark, settings, as_of=start) is None:
        refit_codebooks(spark, settings, start)  # the first day ever, as the daily run does
    version_of, books = _codebooks_by_day(spark, settings, start, end)
    decided = _carry_decisions(spark, settings, start, end, version_of)
    assigned, n_texts = _codes_of(decided, books, settings)
    levels = max(len(b) for b in books.values())
    figures = _write_groups(spark, settings, assigned, levels, start, end)
    for dt, n in build_group_priors(spark, settings, start, end).items():
        figures[dt]["priors"] = n
    for dt, figure in figures.items():
        figure["codebook_version"] = version_of[dt]
    step_log(__name__, "groups", f"{start}..{end}").info(
        "users=%d assigned=%d over %d days; texts encoded=%d",
        sum(f["users"] for f in figures.values()),
        sum(f.get("assigned", 0) for f in figures.values()),
        len(figures),
        n_texts,
    )
    return figures
