"""silver.item_embeddings on the tiny world: real MiniLM, stored projection, only new items."""

from datetime import datetime

import numpy as np
import pytest
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.features.item_embeddings import build_item_embeddings, fit_projection, project

pytestmark = pytest.mark.spark


@pytest.mark.unit
def test_projection_is_deterministic_and_unit_norm():
    rng = np.random.default_rng(0)
    fused = rng.normal(size=(50, 20)).astype(np.float32)
    mean, comps = fit_projection(fused, 8)
    out = project(fused, mean, comps)
    assert out.shape == (50, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    mean_small, comps_small = fit_projection(fused[:5], 8)  # fewer items than dims
    assert comps_small.shape == (20, 8) and np.all(comps_small[:, 5:] == 0)


def test_embeddings_cover_items_and_rerun_embeds_nothing(built, spark, settings, days):
    emb = tables.read(spark, tables.SILVER_ITEM_EMBEDDINGS, settings).toPandas()
    catalogue = tables.read_as_of(spark, tables.BRONZE_ITEM_HISTORY, settings, emb.updated_dt.max())
    assert len(emb) == catalogue.count() and emb.item_id.is_unique
    vectors = np.stack(emb.embedding.to_numpy())
    assert vectors.shape[1] == settings.features.item_embedding_dim
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    assert set(emb.encoder_version) == {settings.features.encoder_version}
    assert emb.has_image.mean() > 0.5 and not emb.has_image.all()
    # Items of the same category sit closer than items of different categories.
    cats = catalogue.select("item_id", "category_path")
    cat = emb.merge(cats.toPandas(), on="item_id")["category_path"].to_numpy()
    sims = vectors @ vectors.T
    same = cat[:, None] == cat[None, :]
    np.fill_diagonal(same, False)
    other = ~same
    np.fill_diagonal(other, False)
    assert sims[same].mean() > sims[other].mean() + 0.1
    assert build_item_embeddings(spark, settings, days[2]) == {"embedded": 0}


def test_a_changed_item_is_re_embedded_and_the_projection_kept(built, spark, settings, days):
    from delta.tables import DeltaTable

    before = (
        tables.read(spark, tables.SILVER_ITEM_EMBEDDINGS, settings).toPandas().set_index("item_id")
    )
    proj_version = tables.version(spark, tables.SILVER_ITEM_PROJECTIONS, settings)
    item = before.index[0]
    DeltaTable.forPath(spark, tables.BRONZE_ITEM_HISTORY.path(settings)).update(
        F.col("item_id") == item, {"title": F.lit("Completely different retro lamp")}
    )
    assert build_item_embeddings(spark, settings, days[2]) == {"embedded": 1}
    after = (
        tables.read(spark, tables.SILVER_ITEM_EMBEDDINGS, settings).toPandas().set_index("item_id")
    )
    assert not np.allclose(before.loc[item, "embedding"], after.loc[item, "embedding"])
    other = before.index[1]
    np.testing.assert_allclose(before.loc[other, "embedding"], after.loc[other, "embedding"])
    assert tables.version(spark, tables.SILVER_ITEM_PROJECTIONS, settings) == proj_version


def _catalogue_deliveries() -> list[dict]:
    """i1 changes on day 2 and changes back on day 4, i3 changes on day 1, i2 is new on
    day 3, i0 never changes."""
    days = ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04", "2026-10-05"]
    rows = [("i0", "A walnut desk", 0), ("i1", "A brass lamp", 0), ("i3", "A wool rug", 0),
            ("i3", "A wool rug, large", 1), ("i1", "A brass lamp, dimmable", 2),
            ("i2", "A steel kettle", 3), ("i1", "A brass lamp", 4)]  # fmt: skip
    return [
        {"item_id": item, "title": title, "category_path": "home/living", "tags": ["home"],
         "brand": "b", "price": 10.0, "image_vector": None,
         "updated_at": datetime.fromisoformat(f"{days[day]}T06:00:00"), "dt": days[day],
         "run_id": "r"}
        for item, title, day in rows
    ]  # fmt: skip


def test_a_range_embeds_each_item_once_and_stores_what_daily_runs_store(spark, settings, tmp_path):
    from choirflow.compare import assert_tables_equal
    from choirflow.dates import days_between

    def warehouse(name: str):
        local = settings.model_copy(
            update={"paths": settings.paths.model_copy(update={"warehouse": str(tmp_path / name)})}
        )
        history = tables.BRONZE_ITEM_HISTORY.frame(spark, _catalogue_deliveries())
        history.write.format("delta").partitionBy("dt").save(tables.BRONZE_ITEM_HISTORY.path(local))
        return local

    days = days_between("2026-10-01", "2026-10-05")
    daily, ranged = warehouse("daily"), warehouse("range")
    by_day = sum(build_item_embeddings(spark, daily, d)["embedded"] for d in days)
    # Day 1 alone (the projection is fitted on its items), then i1, i3 and i2 once each.
    assert build_item_embeddings(spark, ranged, days[0], days[-1]) == {"embedded": 6}
    assert by_day == 7  # i1 twice
    expected, got = (
        tables.read(spark, tables.SILVER_ITEM_EMBEDDINGS, s).toPandas() for s in (daily, ranged)
    )
    columns = ["item_id", "content_hash", "updated_dt", "has_image", "encoder_version"]
    assert_tables_equal(expected[columns], got[columns], table="silver.item_embeddings",
                        key=["item_id"])  # fmt: skip
    assert dict(zip(got.item_id, got.updated_dt, strict=True)) == {
        "i0": days[0], "i1": days[4], "i2": days[3], "i3": days[1],
    }  # fmt: skip
    pairs = expected.merge(got, on="item_id", suffixes=("_daily", "_range"))
    np.testing.assert_allclose(
        np.stack(pairs.embedding_daily), np.stack(pairs.embedding_range), atol=1e-5
    )
    # A second run of the range embeds nothing and commits nothing.
    version = tables.version(spark, tables.SILVER_ITEM_EMBEDDINGS, ranged)
    assert build_item_embeddings(spark, ranged, days[0], days[-1]) == {"embedded": 0}
    assert tables.version(spark, tables.SILVER_ITEM_EMBEDDINGS, ranged) == version


@pytest.mark.unit
def test_the_projection_does_not_depend_on_the_order_of_the_items():
    rng = np.random.default_rng(1)
    fused = rng.normal(size=(40, 12)).astype(np.float32)
    _, forward = fit_projection(fused, 6)
    _, backward = fit_projection(fused[::-1].copy(), 6)
    np.testing.assert_allclose(forward, backward, atol=1e-5)
    assert (np.abs(forward).argmax(axis=0) == np.abs(backward).argmax(axis=0)).all()


def test_items_encode_the_same_in_the_driver_and_in_python_workers(spark, settings):
    """A daily run's few items are encoded in the driver (the model stays loaded there), a
    backfill's many in Python workers (`map_batches`): both give the same fused vectors."""
    import os

    from choirflow.features.item_embeddings import _encode_partition
    from choirflow.spark import map_batches

    rng = np.random.default_rng(3)
    items = spark.createDataFrame(
        [
            (f"i{n}", f"h{n}", "2026-11-01", f"Title {n} of {w}", f"cat{n % 3}/sub{n % 5}",
             [f"tag{n % 4}", w], None if n % 4 == 0 else rng.normal(size=32).tolist())
            for n, w in enumerate(["red", "blue", "green", "slow", "fast", "old"] * 4)
        ],
        "item_id string, content_hash string, updated_dt string, title string, "
        "category_path string, tags array<string>, image_vector array<double>",
    )  # fmt: skip
    schema = "item_id string, content_hash string, updated_dt string, has_image boolean, " \
        "fused array<float>, pid long"  # fmt: skip
    encode = _encode_partition(settings.features.image_dim, 8)

    def encode_and_say_where(batches):
        for out in encode(batches):
            yield out.assign(pid=os.getpid())

    def run(driver_rows: int):
        local = settings.model_copy(
            update={"spark": settings.spark.model_copy(update={"driver_model_rows": driver_rows})}
        )
        frame = map_batches(items, encode_and_say_where, schema, 24, local).toPandas()
        return frame.sort_values("item_id").reset_index(drop=True)

    in_driver, in_workers = run(24), run(23)
    assert set(in_driver.pid) == {os.getpid()} and os.getpid() not in set(in_workers.pid)
    assert list(in_driver.item_id) == list(in_workers.item_id) and len(in_driver) == 24
    assert list(in_driver.has_image) == list(in_workers.has_image)
    np.testing.assert_allclose(
        np.stack(in_driver.fused), np.stack(in_workers.fused), rtol=0, atol=1e-5
    )
