"""The daily steps on the tiny world with real Spark and Delta: counts reconcile, bad rows are
quarantined with a reason, reruns are idempotent, and a model trains and reports metrics."""

import json
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import functions as F

from choirflow import pipeline, tables
from choirflow.compare import assert_tables_equal
from choirflow.ingest.raw import ingest_events
from choirflow.steps import run_step
from choirflow.train.inputs import load_samples
from tests.conftest import runs_reconcile

pytestmark = pytest.mark.spark
# Columns a rerun may change without changing the data: when and by which run it was written.
WRITE_COLUMNS = ("ingested_at", "run_id", "recorded_at")


def _versions(spark, settings, table_list) -> dict:
    return {t: tables.version(spark, t, settings) for t in table_list}


def _assert_day_unchanged(spark, settings, before: dict, dt: str) -> None:
    """Each table's rows of dt now equal the rows at the version recorded in `before`."""
    for table, version in before.items():
        then = tables.read(spark, table, settings, version=version).where(F.col("dt") == dt)
        now = tables.read(spark, table, settings).where(F.col("dt") == dt)
        assert_tables_equal(then, now, table=table.full_name, key=table.keys, ignore=WRITE_COLUMNS)


def test_ingest_reconciles_and_keeps_event_times(built, spark, settings, days):
    runs = tables.read(spark, tables.BRONZE_INGEST_RUNS, settings).toPandas()
    runs = runs[runs.dt.isin(days[:3])]  # other tests ingest days of their own
    assert len(runs) == 3 * 3
    assert runs_reconcile(runs).all()
    events = tables.read(spark, tables.BRONZE_EVENTS, settings).where(F.col("dt") == days[1])
    assert events.count() > 1000
    assert events.where(F.col("ingested_at") < F.col("event_time")).count() == 0


def test_samples_have_labels_sequences_and_buckets(built, spark, settings, days):
    samples = tables.read(spark, tables.GOLD_SAMPLES, settings).where(F.col("dt") == days[2])
    pdf = samples.toPandas()
    assert 0.03 < pdf.click.mean() < 0.3
    assert pdf.conversion.sum() > 0 and (pdf.conversion <= pdf.click).all()
    assert (pdf.hist_len > 0).mean() > 0.3
    assert pdf.hist_len.max() <= 50
    assert set(pdf.activity_bucket) <= {"low", "mid", "high"}
    assert all(min(g) > 0 for g in pdf.hist_gap_seconds if len(g))


def test_training_writes_next_day_metrics(built, spark, settings, days):
    assert built[0]["train_and_evaluate"]["status"] == "skipped"
    trained = built[2]["train_and_evaluate"]
    assert trained["status"] == "trained" and trained["model"] == "din"
    m = tables.read(spark, tables.GOLD_METRICS, settings).where(F.col("dt") == days[2]).toPandas()
    assert {"auc", "gauc_impression_weighted", "user_averaged_auc", "logloss"} <= set(m.metric)
    assert "all" in set(m.slice) and any(s.startswith("activity=") for s in m.slice)
    checkpoint = Path(settings.models_dir) / "din" / days[2] / "model.pt"
    assert checkpoint.exists()


def test_training_leaves_out_days_whose_labels_are_young(built, spark, settings, days):
    """gold.label_status after three daily runs: day 1's labels are as of day 3 (48 hours
    mature), day 2's as of day 3 (24), day 3's as of itself (0); a training window that
    asks for 48 hours keeps day 1 and days the table does not know (final labels)."""
    from choirflow.features.labels import mature_days

    status = tables.read(spark, tables.LABEL_STATUS, settings).toPandas().set_index("dt")
    assert status.loc[list(days[:3]), "maturity_hours"].tolist() == [48, 24, 0]
    assert status.loc[days[0], "labels_as_of"] == days[2]
    unknown = "2026-01-01"
    assert mature_days(spark, settings, [unknown, *days[:3]], 48) == [unknown, days[0]]
    assert mature_days(spark, settings, list(days[:3]), 24) == list(days[:2])


def test_an_evaluation_is_scored_again_once_its_labels_matured(built, spark, settings, days):
    """Day 3's run scores day 2's stored predictions again on day 2's labels as of day 3
    (24 hours mature); day 3's own evaluation (0 hours) waits. The first reading is
    gold.metrics'; the second is the predictions against gold.samples' labels now."""
    from choirflow.evaluate import metrics
    from choirflow.train.artifacts import RunFiles

    rescored = built[2]["train_and_evaluate"]["rescored"]
    assert [(r["dt"], r["model"]) for r in rescored] == [(days[1], "din")]
    assert built[1]["train_and_evaluate"]["rescored"] == []  # nothing evaluated before day 2
    mature = tables.read(spark, tables.GOLD_MATURE_METRICS, settings).toPandas()
    assert days[2] not in set(mature["dt"])
    mature = mature[(mature["dt"] == days[1]) & (mature["model"] == "din")]
    first = tables.read(spark, tables.GOLD_METRICS, settings).where(
        tables.partition(days[1], model="din")
    )
    first = first.toPandas().set_index(["slice", "metric"])["value"]
    mature = mature.set_index(["slice", "metric"])
    assert set(mature.index) == set(first.index)
    pd.testing.assert_series_equal(
        mature["value_as_scored"].sort_index(), first.sort_index(), check_names=False
    )
    predictions = pd.read_parquet(RunFiles.of(settings.models_dir, "din", days[1]).predictions)
    labels = tables.read(spark, tables.GOLD_SAMPLES, settings).where(F.col("dt") == days[1])
    now = predictions.merge(
        labels.select("event_id", "click").toPandas(), on="event_id", suffixes=("_then", "")
    )
    assert len(now) == len(predictions)
    overall = mature.loc[("all", "auc")]
    assert overall["value"] == pytest.approx(metrics.auc(now["click"], now["score"]))
    assert overall["labels_changed"] == int((now["click"] != now["click_then"]).sum())
    assert (mature["maturity_hours_as_scored"] == 0).all()
    assert (mature["maturity_hours"] == 24).all()


def test_rerunning_a_day_leaves_identical_tables(built, spark, settings, days):
    """Day 2 rerun after day 3 exists: nothing written later leaks into the rerun."""
    dt = days[1]
    rerun_tables = (
        tables.BRONZE_EVENTS, tables.BRONZE_ITEM_HISTORY, tables.SILVER_BEHAVIORS,
        tables.SILVER_USER_FEATURES, tables.SILVER_USER_PROFILES, tables.SILVER_USER_GROUPS,
        tables.SILVER_GROUP_PRIORS, tables.GOLD_SAMPLES,
    )  # fmt: skip
    before = _versions(spark, settings, rerun_tables)
    run_step("ingest", dt, settings)
    pipeline.build_features(dt, settings)
    _assert_day_unchanged(spark, settings, before, dt)


def test_bad_rows_go_to_quarantine_with_reasons(built, spark, settings, tmp_path):
    good = {
        "event_id": "x1",
        "event_type": "impression",
        "user_id": "u1",
        "item_id": "i1",
        "request_id": "r1",
        "position": 0,
        "event_time": "2026-12-01T10:00:00.000Z",
        "ingestion_time": "2026-12-01T10:00:01.000Z",
        "device": "ios",
        "surface": "home",
    }
    lines = [
        json.dumps(good),
        json.dumps(good),  # duplicate event id
        "{not json",
        json.dumps({**good, "event_id": "x2", "event_type": "purchase"}),
        json.dumps({**good, "event_id": "x3", "position": "first"}),
        json.dumps({k: v for k, v in good.items() if k != "user_id"} | {"event_id": "x4"}),
        json.dumps({**good, "event_id": "x5", "event_time": "2027-06-01T00:00:00.000Z"}),
        json.dumps({**good, "event_id": "x6", "shoe_size": 42}),
    ]
    dt = "2026-12-01"
    folder = Path(settings.raw_dir) / "events" / f"dt={dt}"
    folder.mkdir(parents=True)
    (folder / "part-00000.jsonl").write_text("\n".join(lines) + "\n")
    counts = ingest_events(spark, settings, dt)
    assert (
        counts.raw_rows,
        counts.bronze_rows,
        counts.quarantined_rows,
        counts.duplicate_rows,
    ) == (8, 1, 6, 1)
    q = tables.read(spark, tables.BRONZE_QUARANTINE, settings).where(F.col("dt") == dt).toPandas()
    assert set(q.reason) == {
        "malformed_json",
        "not_allowed:event_type",
        "type:position",
        "missing:user_id",
        "event_time_in_future",
        "unexpected_column",
    }
    assert all(isinstance(r, str) and r for r in q.raw_record)


def test_full_recomputation_equals_the_incremental_run(built, spark, settings, days):
    """Drop the carried states and rebuild day 3 from behaviours and exposure alone: same
    samples."""
    from delta.tables import DeltaTable

    dt = days[2]
    incremental = _versions(spark, settings, [tables.GOLD_SAMPLES])
    for state in (tables.SILVER_SEQUENCE_STATE, tables.SILVER_USER_CATEGORY_STATE):
        DeltaTable.forPath(spark, state.path(settings)).delete(F.col("dt") < dt)
    pipeline.build_features(dt, settings)
    _assert_day_unchanged(spark, settings, incremental, dt)


def test_dimension_as_of_matches_a_pandas_oracle(spark, settings):
    """Random change logs with updates, repeats and late deliveries (an older updated_at
    arriving on a later day): read_as_of equals the obvious pandas "newest row up to D"."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    days = [f"2031-01-{d:02d}" for d in range(1, 7)]
    rows = [
        {
            "item_id": f"i{k}",
            "dt": dt,
            "price": float(rng.integers(1, 100)),
            "updated_at": f"2031-01-{rng.integers(1, 7):02d}T00:00:00.000Z",
        }
        for dt in days
        for k in rng.choice(30, size=12, replace=False)
    ]
    log = pd.DataFrame(rows)
    table = tables.Table("bronze", "as_of_oracle", ("dt",), ("item_id", "dt"))
    tables.replace_partition(spark.createDataFrame(log), table, settings, F.lit(True))
    for day in ["2030-12-31", *days]:
        seen = log[log.dt <= day].sort_values(["updated_at", "dt"], ascending=False)
        expected = seen.groupby("item_id").head(1).sort_values("item_id").reset_index(drop=True)
        got = tables.read_as_of(spark, table, settings, day).toPandas()
        got = got[expected.columns].sort_values("item_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_a_later_catalogue_change_leaves_earlier_days_as_built(built, spark, settings, days):
    """Point in time for dimensions: an item and a user changed in a much later delivery do
    not change what a rebuild of day 3 produces."""
    from choirflow.ingest.raw import ingest_dimension

    dt = days[2]

    day_tables = (tables.GOLD_SAMPLES, tables.SILVER_USER_FEATURES, tables.SILVER_USER_GROUPS)
    before = _versions(spark, settings, day_tables)
    later = "2028-06-01"
    for source, current, history, key, change in (
        ("items", tables.BRONZE_ITEMS, tables.BRONZE_ITEM_HISTORY, "item_id",
         {"price": 999.0, "category_path": "garden/tools", "title": "Hoe"}),
        ("users", tables.BRONZE_USERS, tables.BRONZE_USER_HISTORY, "user_id",
         {"age_band": "18-24", "city_tier": "1"}),
    ):  # fmt: skip
        first = Path(settings.raw_dir) / source / f"dt={days[0]}"
        record = json.loads(next(first.glob("*.jsonl")).read_text().splitlines()[0])
        record.update(change, updated_at=f"{later}T00:00:00.000Z")
        folder = Path(settings.raw_dir) / source / f"dt={later}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-00000.jsonl").write_text(json.dumps(record) + "\n")
        assert ingest_dimension(spark, settings, source, later).bronze_rows == 1
        now = tables.read(spark, current, settings).where(F.col(key) == record[key]).first()
        then = tables.read_as_of(spark, history, settings, dt).where(F.col(key) == record[key])
        assert now.updated_at.year == 2028 and then.first().updated_at.year == 2026
    pipeline.build_features(dt, settings)
    _assert_day_unchanged(spark, settings, before, dt)


def test_backfill_rejects_unknown_steps(settings):
    with pytest.raises(ValueError, match="unknown steps"):
        pipeline.backfill("2026-11-01", "2026-11-01", ("ingest", "gold"), settings)


def test_a_failing_gate_stops_the_backfill_at_its_chunk(tiny_world, spark, settings, days,
                                                      tmp_path):  # fmt: skip
    """Day 3 delivers a tenth of its events: the volume check fails hard in the third chunk;
    the message names the table, the day and the check; chunks 1-2 stay committed and
    gated, and nothing of day 3 reaches gold."""
    import shutil

    from choirflow.quality.gate import QualityGateError

    raw = tmp_path / "raw"
    shutil.copytree(Path(settings.raw_dir), raw)
    for day_file in (raw / "events" / f"dt={days[2]}").glob("*.jsonl"):
        lines = day_file.read_text().splitlines()
        day_file.write_text("\n".join(lines[: len(lines) // 10]) + "\n")
    paths = settings.paths.model_copy(update={"raw": str(raw), "warehouse": str(tmp_path / "wh")})
    local = settings.model_copy(
        update={"paths": paths, "backfill": settings.backfill.model_copy(update={"chunk_days": 1})}
    )
    with pytest.raises(QualityGateError) as failure:
        pipeline.backfill(days[0], days[3], ("ingest",), local)
    message = str(failure.value)
    assert f"bronze.events [{days[2]}]" in message and "row_count" in message
    events = tables.read(spark, tables.BRONZE_EVENTS, local)
    assert {r.dt for r in events.select("dt").distinct().collect()} == set(days[:3])
    checked = tables.read(spark, tables.QUALITY_RESULTS, local)
    failed = checked.where(~F.col("success")).select("dt", "table").distinct().collect()
    assert [(r.dt, r.table) for r in failed] == [(days[2], "bronze.events")]
    assert {r.dt for r in checked.select("dt").distinct().collect()} == set(days[:3])


@pytest.mark.spark
def test_samples_are_read_from_delta_once_per_table_version(
    built, spark, settings, days, monkeypatch
):
    """The first load of a set of days reads gold.samples once; loading them again, in any
    order, reads nothing from Delta and gives the same frame."""
    import shutil

    import pandas as pd

    version = tables.version(spark, tables.GOLD_SAMPLES, settings)
    cache = Path(settings.models_dir) / "cache" / "gold.samples" / f"v{version}"
    shutil.rmtree(cache, ignore_errors=True)  # earlier tests may have cached these days
    reads = []
    real_read = tables.read

    def counting_read(spark_, table, settings_, version=None):
        reads.append((table.full_name, version))
        return real_read(spark_, table, settings_, version=version)

    monkeypatch.setattr(tables, "read", counting_read)
    frame, read_version = load_samples(spark, settings, days[:2])
    assert read_version == version and reads == [("gold.samples", version)]
    assert {f"dt={d}.parquet" for d in days[:2]} <= {p.name for p in cache.glob("*.parquet")}
    again, same_version = load_samples(spark, settings, list(reversed(days[:2])))
    assert same_version == version and len(reads) == 1  # served from the cache
    pd.testing.assert_frame_equal(frame, again)
    monkeypatch.undo()
    direct = tables.read(spark, tables.GOLD_SAMPLES, settings, version=version)
    direct = direct.where(F.col("dt").isin(days[:2]))
    assert len(frame) == direct.count() and frame["event_id"].is_unique


def test_every_table_a_day_writes_has_its_declared_schema(built, spark, settings):
    """The registry's columns are what the steps write: same names, same types."""
    written = [t for t in tables.ALL_TABLES if tables.exists(spark, t, settings)]
    missing = {t.full_name for t in tables.ALL_TABLES} - {t.full_name for t in written}
    assert missing <= {"quality.monitoring"}, missing  # written by choirflow_quality only
    for table in written:
        schema = tables.read(spark, table, settings).schema
        actual = {f.name: f.dataType.simpleString() for f in schema}
        declared = {f.name: f.dataType.simpleString() for f in table.schema}
        differing = {
            name: (declared.get(name), actual.get(name))
            for name in set(actual) | set(declared)
            if actual.get(name) != declared.get(name)
        }
        assert not differing, f"{table.full_name}: column: (declared, written) {differing}"
