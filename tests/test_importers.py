"""Importers, each on a small file written in the public data set's own layout."""

import json

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.config import load_settings
from choirflow.importers.movielens import ML100K_GENRES, import_movielens
from choirflow.steps import run_step

DAY = 86400
T0 = 1_700_000_000 - 1_700_000_000 % DAY  # a UTC midnight


def _ml100k(folder, rng):
    folder.mkdir()
    rows = [
        (u, i, int(rng.integers(1, 6)), T0 + d * DAY + int(rng.integers(0, DAY)))
        for d in range(3)
        for u in range(1, 21)
        for i in rng.choice(np.arange(1, 31), 4, replace=False)
    ]
    pd.DataFrame(rows).to_csv(folder / "u.data", sep="\t", header=False, index=False)
    users = [f"{u}|{20 + u}|{'F' if u % 2 else 'M'}|student|0{u:04d}" for u in range(1, 21)]
    (folder / "u.user").write_text("\n".join(users) + "\n", encoding="latin-1")
    movies = []
    for i in range(1, 31):
        flags = ["0"] * len(ML100K_GENRES)
        flags[1 + i % 5] = "1"
        movies.append(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|" + "|".join(flags))
    (folder / "u.item").write_text("\n".join(movies) + "\n", encoding="latin-1")


@pytest.mark.unit
def test_movielens_1m_layout_becomes_raw_contract(tmp_path):
    src = tmp_path / "ml-1m"
    src.mkdir()
    (src / "ratings.dat").write_text(f"1::10::5::{T0}\n1::11::3::{T0 + 5}\n2::10::4::{T0 + DAY}\n")
    (src / "users.dat").write_text("1::F::25::4::12345\n2::M::1::0::54321\n")
    (src / "movies.dat").write_text("10::Heat (1995)::Action|Crime\n11::Babe (1995)::Comedy\n")
    counts = import_movielens(src, tmp_path / "raw")
    assert counts["events"] == 3 + 2 + 1  # 3 impressions, 2 clicks (>=4), 1 conversion (5)
    files = sorted((tmp_path / "raw" / "events").glob("dt=*/part-*.jsonl"))
    assert len(files) == 2
    first = [json.loads(line) for line in files[0].read_text().splitlines()]
    kinds = sorted(e["event_type"] for e in first)
    assert kinds == ["click", "conversion", "impression", "impression"]
    users = [
        json.loads(line)
        for line in (tmp_path / "raw" / "users")
        .glob("dt=*/*.jsonl")
        .__next__()
        .read_text()
        .splitlines()
    ]
    assert {u["age_band"] for u in users} == {"25-34", None}
    assert all("zip" not in u for u in users)


@pytest.mark.unit
def test_movielens_100k_classic_layout_becomes_raw_contract(tmp_path):
    """u.data/u.user/u.item (the classic ml-100k files); the real files go through the whole
    pipeline in tests/test_datasets.py."""
    rng = np.random.default_rng(0)
    _ml100k(tmp_path / "ml-100k", rng)
    ratings = pd.read_csv(tmp_path / "ml-100k" / "u.data", sep="\t", header=None)
    counts = import_movielens(tmp_path / "ml-100k", tmp_path / "raw")
    assert (counts["users"], counts["items"], counts["days"]) == (20, 30, 3)
    assert counts["events"] == len(ratings) + (ratings[2] >= 4).sum() + (ratings[2] == 5).sum()
    items = [
        json.loads(line)
        for line in next((tmp_path / "raw" / "items").glob("dt=*/*.jsonl")).read_text().splitlines()
    ]
    assert {i["category_path"].split("/")[0] for i in items} == {"movies"}


@pytest.mark.spark
def test_microlens_parquet_goes_to_gold_and_trains(spark, tmp_path):
    from choirflow.importers.microlens import import_microlens

    rng = np.random.default_rng(1)
    folder = tmp_path / "MicroLens_1M_x1"
    folder.mkdir()
    n_items = 40
    emb = rng.normal(size=(n_items + 1, 128)).astype(np.float32)
    emb[0] = 0
    pd.DataFrame(
        {
            "item_id": np.arange(n_items + 1),
            "item_tags": [list(rng.integers(0, 9, 5)) for _ in range(n_items + 1)],
            "item_emb_d128": list(emb),
        }
    ).to_parquet(folder / "item_info.parquet")
    for split, n in (("train", 600), ("valid", 200)):
        seqs = [
            [0] * (64 - k) + list(rng.integers(1, n_items + 1, k)) for k in rng.integers(0, 10, n)
        ]
        target = rng.integers(1, n_items + 1, n)
        label = (target % 3 == 0).astype(float)  # learnable from the item id
        pd.DataFrame(
            {
                "user_id": rng.integers(1, 50, n),
                "item_seq": seqs,
                "likes_level": rng.integers(0, 11, n),
                "views_level": rng.integers(0, 11, n),
                "item_id": target,
                "label": label,
            }
        ).to_parquet(folder / f"{split}.parquet")
    settings = load_settings(
        environ={
            "CHOIRFLOW__PATHS__WAREHOUSE": str(tmp_path / "wh"),
            "CHOIRFLOW__PATHS__MODELS": str(tmp_path / "models"),
            "CHOIRFLOW__PATHS__JARS": load_settings().jars_dir,
            "CHOIRFLOW__TRAIN__EPOCHS": "4",
            "CHOIRFLOW__TRAIN__BATCH_SIZE": "64",
        }
    )
    counts = import_microlens(spark, settings, folder, start="2025-03-01")
    assert counts == {"train": 600, "valid": 200, "items": n_items}
    emb_table = tables.read(spark, tables.SILVER_ITEM_EMBEDDINGS, settings)
    assert emb_table.where(F.size("embedding") == 128).count() == n_items
    gold = tables.read(spark, tables.GOLD_SAMPLES, settings).where(F.col("dt") == "2025-03-01")
    assert gold.where(F.col("hist_len") > 0).count() > 0
    assert gold.where(F.array_contains("hist_item_ids", "0")).count() == 0  # padding dropped
    result = run_step("train_and_evaluate", "2025-03-02", settings)
    assert result["status"] == "trained" and result["auc"] > 0.7
