"""Twelve days built once day by day and once by the range engine equal each other in every
table, row for row. The range is choirflow_backfill's in chunks of six (the carried states
cross a chunk boundary on the day attributes change), run after a backfill of the same days
was killed (SIGKILL, its Spark JVM included) in the middle of its first chunk; a second
backfill, in one chunk, then changes no row.

The world is the tiny synthetic one made longer, with the edges a bulk computation gets wrong
planted in its raw files: a day without events, events that arrive a day late, same-second
ties, users without history, item and user attributes that change mid-range (one of them
delivered late), a day with rows for quarantine, and items released mid-range."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from choirflow import pipeline, tables
from choirflow.compare import assert_tables_equal, assert_warehouses_equal
from choirflow.config import load_settings
from choirflow.dates import day_offset
from choirflow.synth.world import WorldConfig, generate_world, write_world
from tests.conftest import runs_reconcile

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.spark

WORLD = WorldConfig(users=100, items=100, days=12, sessions_median=0.6, sessions_sigma=1.0,
                    late_event_rate=0.05, seed=23)  # fmt: skip
DAYS = [str(WORLD.start.fromordinal(WORLD.start.toordinal() + d)) for d in range(WORLD.days)]
EMPTY_DAY, TIE_DAY, CHANGE_DAY, BAD_DAY = DAYS[4], DAYS[2], DAYS[6], DAYS[8]
# Impressions with a click held back a day: the clicks arrive first and wait (across the end
# of the first chunk) for their impressions.
EARLY_CLICK_DAY = DAYS[5]
EARLY = 6  # how many
HELD_BACK = "held_back_impressions.json"
# What a run writes about itself rather than about the data: when, by which run, how fast.
WRITE_COLUMNS = (
    "ingested_at",
    "run_id",
    "recorded_at",
    "quarantined_at",
    "checked_at",
    "created_at",
    "fitted_at",
    "seconds",
    "users_per_second",
    "tokens_per_second",
)
# Tables only training, promotion and monitoring write: not part of a range build.
NOT_BUILT = {tables.GOLD_METRICS, tables.GOLD_PROMOTIONS, tables.QUALITY_MONITORING}
BUILT = [t for t in tables.ALL_TABLES if t not in NOT_BUILT]
# Each run's own accounting of its LLM work: a rerun finds the profiles already written.
RUN_ACCOUNTS = tables.SILVER_PROFILE_RUNS
# The encoder's floats depend on the batch an item is encoded in (a day's new items, or a
# chunk's), in the last bits only.
ENCODER_NOISE = 1e-5


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _write(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _plant_edges(raw: Path) -> None:
    """Rewrite the generated raw files so that every edge of the range engine occurs."""
    shutil.rmtree(raw / "events" / f"dt={EMPTY_DAY}")
    # Same-second ties: every event of the day cut to its minute (ingestion stays after it).
    ties = raw / "events" / f"dt={TIE_DAY}" / "part-00000.jsonl"
    _write(ties, [{**e, "event_time": e["event_time"][:16] + ":00.000Z"} for e in _jsonl(ties)])
    # Attributes that change mid-range, and a catalogue row delivered two days late.
    items = _jsonl(raw / "items" / f"dt={DAYS[0]}" / "part-00000.jsonl")[:12]
    changed = [{**i, "price": round(i["price"] * 1.5 + 1, 2), "category_path": "sale/outlet",
                "updated_at": f"{CHANGE_DAY}T06:00:00.000Z"} for i in items[:8]]  # fmt: skip
    late = [{**i, "brand": "Late", "updated_at": f"{DAYS[5]}T07:00:00.000Z"} for i in items[8:]]
    _write(raw / "items" / f"dt={CHANGE_DAY}" / "part-00001.jsonl", changed)
    _write(raw / "items" / f"dt={DAYS[7]}" / "part-00001.jsonl", late)
    users = _jsonl(raw / "users" / f"dt={DAYS[0]}" / "part-00000.jsonl")[:10]
    moved = [{**u, "age_band": "55+", "city_tier": "1",
              "updated_at": f"{CHANGE_DAY}T05:00:00.000Z"} for u in users]  # fmt: skip
    _write(raw / "users" / f"dt={CHANGE_DAY}" / "part-00000.jsonl", moved)
    # Rows for quarantine: unreadable, a type nobody knows, a missing user, an orphan click.
    bad = raw / "events" / f"dt={BAD_DAY}" / "part-00000.jsonl"
    events = _jsonl(bad)
    click = {**events[0], "event_id": "orphan-click", "event_type": "click",
             "request_id": "never-shown", "position": None}  # fmt: skip
    _write(bad, [*events, "not json", {**events[1], "event_id": "odd", "event_type": "purchase"},
                 {**events[2], "event_id": "nobody", "user_id": None}, click])  # fmt: skip
    moved = _hold_back_clicked_impressions(raw / "events")
    (raw.parent / HELD_BACK).write_text(json.dumps(moved))


def _pair(event: dict) -> tuple:
    return event["user_id"], event["item_id"], event["request_id"]


def _hold_back_clicked_impressions(events: Path) -> list[dict]:
    """Move EARLY clicked impressions of EARLY_CLICK_DAY, of users with impressions on later
    days, into the next day's delivery: each click arrives a day before its impression.
    Returns the moved impressions."""
    day, next_day = (events / f"dt={d}" / "part-00000.jsonl" for d in (EARLY_CLICK_DAY,
                                                                       CHANGE_DAY))  # fmt: skip
    rows, later = _jsonl(day), _jsonl(next_day)
    clicked = {_pair(e) for e in rows if e["event_type"] == "click"}
    returning = {e["user_id"] for e in later if e["event_type"] == "impression"}
    moved = [e for e in rows if e["event_type"] == "impression" and _pair(e) in clicked
             and e["user_id"] in returning][:EARLY]  # fmt: skip
    assert len(moved) == EARLY, "the world has too few returning clicked users"
    ids = {e["event_id"] for e in moved}
    _write(day, [e for e in rows if e["event_id"] not in ids])
    _write(next_day, [*later, *moved])
    return moved


ENVIRONMENT = {
    "CHOIRFLOW__BACKFILL__CHUNK_DAYS": "6",
    "CHOIRFLOW__QUALITY__VOLUME_SEVERITY": "soft",  # the empty day only warns
}


def _environment(root: Path, warehouse: str) -> dict[str, str]:
    return {
        **ENVIRONMENT,
        "CHOIRFLOW__PATHS__RAW": str(root / "raw"),
        "CHOIRFLOW__PATHS__WAREHOUSE": str(root / warehouse),
    }


def _settings(root: Path, warehouse: str):
    return load_settings(environ={**os.environ, **_environment(root, warehouse)})


def _kill_when(cmd: list[str], marker: str, env: dict[str, str]) -> list[str]:
    """Run cmd in its own process group and SIGKILL the group (its Spark JVM included) as
    soon as a line containing `marker` is printed; returns the lines seen."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)  # fmt: skip
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-40:])
    return seen


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("range-engine")
    write_world(generate_world(WORLD), root)
    _plant_edges(root / "raw")
    return root


@pytest.fixture(scope="module")
def daily(world):
    settings = _settings(world, "daily")
    for dt in DAYS:
        pipeline.run_day(dt, settings, train=False)
    return settings


@pytest.fixture(scope="module")
def ranged(world, spark, airflow_db, monkeypatch_module):  # noqa: ARG001
    """choirflow_backfill over the twelve days, after a killed backfill of them."""
    from airflow.dag_processing.dagbag import BundleDagBag

    environment = _environment(world, "ranged")
    job = str(ROOT / "jobs" / "backfill.py")
    _kill_when([sys.executable, job, "--start", DAYS[0], "--end", DAYS[-1]],
               f"[behaviors dt={DAYS[0]}..{DAYS[5]}] done",
               {**os.environ, **environment})  # fmt: skip
    settings = _settings(world, "ranged")
    assert tables.exists(spark, tables.SILVER_BEHAVIORS, settings)
    assert not tables.exists(spark, tables.GOLD_SAMPLES, settings)  # killed mid-chunk
    for name, value in environment.items():
        monkeypatch_module.setenv(name, value)
    dags = BundleDagBag(dag_folder=str(ROOT / "dags"), bundle_path=ROOT / "dags").dags
    run = dags["choirflow_backfill"].test(
        run_conf={"start": DAYS[0], "end": DAYS[-1], "tables": ["ingest", "features"]}
    )
    assert run.state == "success"
    return settings


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.airflow
def test_the_resumed_backfill_dag_builds_what_the_days_build(spark, daily, ranged):
    exact = [t for t in BUILT if t not in (tables.SILVER_ITEM_EMBEDDINGS, RUN_ACCOUNTS)]
    assert_warehouses_equal(spark, daily, ranged, exact, ignore=WRITE_COLUMNS)
    assert_warehouses_equal(spark, daily, ranged, [tables.SILVER_ITEM_EMBEDDINGS],
                            ignore=WRITE_COLUMNS, tolerance=ENCODER_NOISE)  # fmt: skip
    # The accounting: a row per day and no LLM call (a backfill calls none unless asked).
    runs = tables.read(spark, RUN_ACCOUNTS, ranged).select("dt", "calls").collect()
    assert sorted(runs) == [(d, 0) for d in DAYS]


@pytest.mark.airflow
def test_the_planted_edges_reach_the_tables(spark, ranged):
    """The comparison above is only as good as the edges the days contain."""

    def read(table):
        return tables.read(spark, table, ranged)

    runs = read(tables.BRONZE_INGEST_RUNS).where(F.col("source") == "raw_events").toPandas()
    assert runs.set_index("dt").loc[EMPTY_DAY, "raw_rows"] == 0
    assert runs_reconcile(runs).all()
    reasons = {r.reason for r in read(tables.BRONZE_QUARANTINE).where(F.col("dt") == BAD_DAY)
               .select("reason").collect()}  # fmt: skip
    assert {"malformed_json", "not_allowed:event_type", "missing:user_id"} <= reasons
    expired = read(tables.BRONZE_QUARANTINE).where(F.col("reason") == "orphan_click")
    # the click without an impression waited its window out, then went to quarantine
    assert expired.where(F.col("raw_record").contains('"orphan-click"')).first().dt == day_offset(
        BAD_DAY, ranged.features.parent_lookback_days
    )
    events = read(tables.BRONZE_EVENTS)
    assert events.where(F.to_date("event_time") < F.col("dt")).count() > 0  # arrived late
    samples = read(tables.GOLD_SAMPLES)
    assert samples.where(F.col("dt") == EMPTY_DAY).count() == 0
    ties = samples.where(F.col("dt") == TIE_DAY).groupBy("user_id", "event_time").count()
    assert ties.where(F.col("count") > 1).count() > 0
    late_days = samples.where(F.col("dt") >= DAYS[6])
    assert late_days.where(F.col("hist_len") == 0).count() > 0  # no history yet
    first_seen = samples.groupBy("item_id").agg(F.min("dt").alias("first"))
    assert first_seen.where(F.col("first") > DAYS[1]).count() > 0  # items released mid-range
    moved = read(tables.BRONZE_ITEM_HISTORY).where(F.col("category_path") == "sale/outlet")
    assert moved.select("dt").distinct().collect() == [(CHANGE_DAY,)]
    checked = read(tables.QUALITY_RESULTS).select("dt").distinct().count()
    assert checked == len(DAYS)  # the gates ran over every backfilled day


@pytest.mark.airflow
def test_clicks_that_arrive_before_their_impressions_wait_for_them(spark, world, ranged):
    """Each click whose impression came a day later waited (not quarantined), entered bronze
    the day its impression did, labels that impression, and is in the user's later
    sequences."""
    moved = json.loads((world / HELD_BACK).read_text())
    pairs = {_pair(e) for e in moved}

    def read(table):
        return tables.read(spark, table, ranged)

    clicks = [r for r in read(tables.BRONZE_EVENTS).where(F.col("event_type") == "click")
              .collect() if _pair(r) in pairs]  # fmt: skip
    assert {_pair(r) for r in clicks} == pairs and {r.dt for r in clicks} == {CHANGE_DAY}
    runs = read(tables.BRONZE_INGEST_RUNS).where(F.col("source") == "raw_events").toPandas()
    runs = runs.set_index("dt")
    assert runs.loc[EARLY_CLICK_DAY, "pending_rows"] >= EARLY
    assert runs.loc[CHANGE_DAY, "released_rows"] >= EARLY
    samples = read(tables.GOLD_SAMPLES)
    labelled = samples.where(F.col("event_id").isin([e["event_id"] for e in moved])).collect()
    assert sorted((r.dt, r.click) for r in labelled) == [(CHANGE_DAY, 1)] * EARLY
    for click in clicks:
        later = samples.where(
            (F.col("user_id") == click.user_id) & (F.col("event_time") > click.event_time)
        )
        seen = later.where(F.array_contains("hist_item_ids", click.item_id)).count()
        assert seen > 0, f"{click.item_id} is in no later sequence of {click.user_id}"


@pytest.mark.airflow
def test_a_second_backfill_changes_no_row_and_a_third_at_once_is_refused(spark, ranged):
    """Run in one chunk this time (another cut of the range, the same rows); while it runs,
    `choirflow backfill` over the same days from a shell is refused before it writes."""
    before = {t: tables.version(spark, t, ranged) for t in BUILT}
    one_chunk = ranged.model_copy(
        update={"backfill": ranged.backfill.model_copy(update={"chunk_days": len(DAYS)})}
    )
    lock = Path(ranged.warehouse_dir) / "_locks" / "writer.lock"
    lock.unlink(missing_ok=True)
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(pipeline.backfill, DAYS[0], DAYS[-1], settings=one_chunk)
        while not (lock.exists() and lock.read_text()) and not second.done():
            time.sleep(0.2)
        cli = str(Path(sys.executable).parent / "choirflow")
        third = subprocess.run([cli, "backfill", "--start", DAYS[0], "--end", DAYS[-1]],
                               capture_output=True, text=True, env=os.environ.copy())  # fmt: skip
        assert not second.done(), "the second backfill ended before the third started"
        second.result()
    assert third.returncode == 2, third.stderr[-2000:]
    assert f"is being written by pid {os.getpid()} " in third.stderr
    assert f"range {DAYS[0]}..{DAYS[-1]}" in third.stderr and "Traceback" not in third.stderr
    for table, version in before.items():
        if table is RUN_ACCOUNTS:
            continue
        then = tables.read(spark, table, ranged, version=version)
        now = tables.read(spark, table, ranged)
        assert_tables_equal(then, now, table=table.full_name, key=table.keys,
                            ignore=WRITE_COLUMNS, tolerance=ENCODER_NOISE)  # fmt: skip
    # The rerun found every profile it needed: none written, no call made.
    runs = tables.read(spark, RUN_ACCOUNTS, ranged).agg(F.sum("template_profiles"), F.sum("calls"))
    assert tuple(runs.first()) == (0, 0)
