"""silver.item_embeddings on the tiny world: real MiniLM, stored projection, only new items."""

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
