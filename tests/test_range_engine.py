"""Nine days built once day by day and once by the range engine equal each other in every
table, row for row. The range is choirflow_backfill's in chunks of five (the carried states,
waiting clicks included, cross a chunk boundary on the day attributes change), run after a
backfill of the same days was killed (SIGKILL, its Spark JVM included) in the middle of its
first chunk; a second backfill, in one chunk, then changes no row. Labels: the day-by-day
warehouse corrects past days as late clicks arrive, the range writes them mature; both equal
the world's true labels, and a day of late events after the range changes past labels only.

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

import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from choirflow import pipeline, tables
from choirflow.compare import assert_tables_equal, assert_warehouses_equal
from choirflow.config import load_settings
from choirflow.dates import day_offset
from choirflow.quality.suites import RELABELLED
from choirflow.synth.world import WorldConfig, generate_world, write_world
from tests.conftest import runs_reconcile

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.spark

WORLD = WorldConfig(users=100, items=100, days=9, sessions_median=0.6, sessions_sigma=1.0,
                    late_event_rate=0.05, seed=23)  # fmt: skip
DAYS = [str(WORLD.start.fromordinal(WORLD.start.toordinal() + d)) for d in range(WORLD.days)]
EMPTY_DAY, TIE_DAY, CHANGE_DAY, BAD_DAY = DAYS[2], DAYS[1], DAYS[5], DAYS[3]
CHUNK_DAYS = 5
# Impressions with a click held back a day: the clicks arrive first and wait (across the end
# of the first chunk) for their impressions.
EARLY_CLICK_DAY = DAYS[4]
EARLY = 6  # how many
HELD_BACK = "held_back_impressions.json"
# Clicks held back from the range and delivered the day after it: LATE of them for
# impressions of DAYS[-2], and one for an impression of the first day, past the label horizon.
LATE_DAY = day_offset(DAYS[-1], 1)
LATE = 5
LATE_CLICKS = "late_clicks.json"
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
# How many labels late data changed is a fact of how a warehouse was built (day by day,
# labels are corrected; a range writes them mature), like when.
LABEL_RUN_COLUMNS = (*WRITE_COLUMNS, "updated_at", "corrected_labels")


# The gold gate's checks of the label rates: each records the rate it saw, before late data
# corrected the labels (day by day) or after (a range).
def _label_checks():
    return (F.col("table") == "gold.samples") & F.col("column").isin("click", "conversion")


# Tables only training, promotion and monitoring write: not part of a range build.
NOT_BUILT = {tables.GOLD_METRICS, tables.GOLD_MATURE_METRICS, tables.GOLD_PROMOTIONS,
             tables.QUALITY_MONITORING}  # fmt: skip
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
    late = [{**i, "brand": "Late", "updated_at": f"{DAYS[4]}T07:00:00.000Z"} for i in items[8:]]
    _write(raw / "items" / f"dt={CHANGE_DAY}" / "part-00001.jsonl", changed)
    _write(raw / "items" / f"dt={DAYS[6]}" / "part-00001.jsonl", late)
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
    late = _hold_back_clicks(raw / "events", DAYS[-2], LATE) + _hold_back_clicks(
        raw / "events", DAYS[0], 1
    )
    (raw.parent / LATE_CLICKS).write_text(json.dumps(late))


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


def _hold_back_clicks(events: Path, day: str, n: int) -> list[dict]:
    """Take n clicks of distinct users, whose impressions arrived the same day, out of the
    day's delivery; returns them."""
    path = events / f"dt={day}" / "part-00000.jsonl"
    rows = _jsonl(path)
    shown = {_pair(e) for e in rows if e["event_type"] == "impression"}
    taken: dict[str, dict] = {}
    for e in rows:
        if e["event_type"] == "click" and _pair(e) in shown and e["user_id"] not in taken:
            taken[e["user_id"]] = e
    late = list(taken.values())[:n]
    assert len(late) == n, f"{day} has too few clicks"
    ids = {e["event_id"] for e in late}
    _write(path, [e for e in rows if e["event_id"] not in ids])
    return late


ENVIRONMENT = {
    "CHOIRFLOW__BACKFILL__CHUNK_DAYS": str(CHUNK_DAYS),
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
               f"[behaviors dt={DAYS[0]}..{DAYS[CHUNK_DAYS - 1]}] done",
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
    apart = (tables.SILVER_ITEM_EMBEDDINGS, RUN_ACCOUNTS, tables.LABEL_STATUS)
    apart += (tables.QUALITY_RESULTS,)
    exact = [t for t in BUILT if t not in apart]
    assert_warehouses_equal(spark, daily, ranged, exact, ignore=WRITE_COLUMNS)
    assert_warehouses_equal(spark, daily, ranged, [tables.LABEL_STATUS], ignore=LABEL_RUN_COLUMNS)
    # Day by day, each correction gates the days it changed (a range has fewer to correct),
    # and the gold gate saw each day's labels before late data corrected them.
    results = [tables.QUALITY_RESULTS]
    assert_warehouses_equal(spark, daily, ranged, results, ignore=WRITE_COLUMNS,
                            where=(F.col("table") != RELABELLED) & ~_label_checks())  # fmt: skip
    assert_warehouses_equal(spark, daily, ranged, results, where=_label_checks(),
                            ignore=(*WRITE_COLUMNS, "observed"))  # fmt: skip
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
    late_days = samples.where(F.col("dt") >= DAYS[5])
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
        ignore = LABEL_RUN_COLUMNS if table is tables.LABEL_STATUS else WRITE_COLUMNS
        if table is tables.QUALITY_RESULTS:  # the gate's label rates: as the labels stood
            assert_tables_equal(then.where(_label_checks()), now.where(_label_checks()),
                                table=table.full_name, key=table.keys,
                                ignore=(*WRITE_COLUMNS, "observed"))  # fmt: skip
            then, now = then.where(~_label_checks()), now.where(~_label_checks())
        assert_tables_equal(then, now, table=table.full_name, key=table.keys,
                            ignore=ignore, tolerance=ENCODER_NOISE)  # fmt: skip
    # The rerun found every profile it needed: none written, no call made.
    runs = tables.read(spark, RUN_ACCOUNTS, ranged).agg(F.sum("template_profiles"), F.sum("calls"))
    assert tuple(runs.first()) == (0, 0)


def _raw_events(world: Path, through: str) -> pd.DataFrame:
    """Every raw event line delivered up to `through` that parses, with its day."""
    rows = []
    for path in sorted((world / "raw" / "events").glob("dt=*/*.jsonl")):
        if path.parent.name[3:] > through:
            continue
        for line in path.read_text().splitlines():
            try:
                rows.append({**json.loads(line), "arrived": path.parent.name[3:]})
            except json.JSONDecodeError:
                continue
    return pd.DataFrame(rows)


def _true_labels(world: Path, through: str) -> pd.DataFrame:
    """The world's true labels of every impression delivered up to `through`, as far as the
    raw files delivered by then hold the click (and the conversion) that make them."""
    raw = _raw_events(world, through)
    keys = ["user_id", "item_id", "request_id"]
    arrived = {kind: set(map(tuple, raw.loc[raw.event_type == kind, keys].to_numpy()))
               for kind in ("click", "conversion")}  # fmt: skip
    truth = pd.read_parquet(world / "oracle" / "impressions.parquet")
    shown = raw[raw.event_type == "impression"].merge(truth, on="event_id")
    key = list(map(tuple, shown[keys].to_numpy()))
    click = shown.clicked & pd.Series([k in arrived["click"] for k in key], index=shown.index)
    converted = pd.Series([k in arrived["conversion"] for k in key], index=shown.index)
    conversion = click & shown.converted & converted
    return pd.DataFrame(
        {
            "event_id": shown.event_id,
            "click": click.astype(int),
            "conversion": conversion.astype(int),
        }
    )


@pytest.mark.airflow
def test_labels_are_the_worlds_true_labels_once_their_events_arrived(spark, world, daily):
    """Day by day, late clicks and conversions (hours late across midnight, clicks ahead of
    their impressions, conversions of clicks held back) reach their impressions' labels by
    correction: at the end each label is the world's true one, wherever its events arrived
    within the range. The range's labels equal these (the comparison above)."""
    got = tables.read(spark, tables.GOLD_SAMPLES, daily).select("event_id", "click", "conversion")
    expected = _true_labels(world, DAYS[-1])
    assert_tables_equal(expected, got.toPandas(), table="gold.samples labels", key=["event_id"])
    status = tables.read(spark, tables.LABEL_STATUS, daily).toPandas().set_index("dt")
    assert status.corrected_labels.sum() > 0  # some labels came by correction
    assert list(status.index.sort_values()) == DAYS
    assert status.loc[DAYS[0], "labels_as_of"] == DAYS[6]  # the horizon closed it
    assert status.loc[DAYS[-1], "maturity_hours"] == 0


def _rows_until(spark, table, settings, last: str, version: int | None = None):
    return tables.read(spark, table, settings, version=version).where(F.col("dt") <= last)


@pytest.mark.airflow
def test_late_events_after_the_range_change_past_labels_only(spark, world, daily):
    """The day after the range delivers clicks held back from DAYS[-2] (their conversions
    have been waiting) and one for the first day, past the horizon, with new impressions of
    the same users. After that day's run no feature of any row up to the cutoff changed in
    any table; only labels changed, each to the world's true label, by one MERGE that
    rewrote only the day the late clicks reached; the new impressions' sequences hold the
    late clicks."""
    late = json.loads((world / LATE_CLICKS).read_text())
    recent, old = late[:LATE], late[LATE]
    at = f"{LATE_DAY}T01:00:00.000Z"
    noon = {"event_time": f"{LATE_DAY}T12:00:00.000Z", "ingestion_time": f"{LATE_DAY}T12:00:01Z"}
    shown = [{**c, **noon, "event_id": f"late-impression-{n}", "event_type": "impression",
              "request_id": f"late-{n}", "position": 0} for n, c in enumerate(recent)]  # fmt: skip
    _write(world / "raw" / "events" / f"dt={LATE_DAY}" / "part-00000.jsonl",
           [*({**c, "ingestion_time": at} for c in late), *shown])  # fmt: skip
    before = {t: tables.version(spark, t, daily) for t in BUILT}
    pipeline.run_day(LATE_DAY, daily, train=False)

    by_day = [t for t in BUILT if "dt" in t.partition_by]
    # retention drops the oldest carried states; the label columns are checked below
    moving = {tables.SILVER_SEQUENCE_STATE, tables.SILVER_USER_CATEGORY_STATE, RUN_ACCOUNTS}
    own_gate = F.col("table") != RELABELLED  # the correction's gate, recorded under the day
    for table in (t for t in by_day if t not in moving):
        ignore = (*WRITE_COLUMNS, "click", "conversion") if table is tables.GOLD_SAMPLES else ()
        kept = own_gate if table is tables.QUALITY_RESULTS else F.lit(True)
        assert_tables_equal(
            _rows_until(spark, table, daily, DAYS[-1], before[table]).where(kept),
            _rows_until(spark, table, daily, DAYS[-1]).where(kept),
            table=table.full_name, key=table.keys, ignore=ignore or WRITE_COLUMNS,
            tolerance=ENCODER_NOISE,
        )  # fmt: skip
    gate = tables.read(spark, tables.QUALITY_RESULTS, daily).where(
        ~own_gate & (F.col("dt") == DAYS[-2])
    )
    share = gate.where(F.col("column") == "_changed").first()
    assert gate.where(~F.col("success")).count() == 0 and float(share.observed) > 0
    labels = ["event_id", "click", "conversion"]
    then = _rows_until(spark, tables.GOLD_SAMPLES, daily, DAYS[-1], before[tables.GOLD_SAMPLES])
    now = _rows_until(spark, tables.GOLD_SAMPLES, daily, DAYS[-1])
    changed = then.select(*labels).exceptAll(now.select(*labels)).toPandas()
    fresh = now.select(*labels, "user_id", "item_id", "request_id", "dt").toPandas()
    fresh = fresh.set_index("event_id").loc[changed.event_id]
    assert {tuple(r) for r in fresh[["user_id", "item_id", "request_id"]].to_numpy()} == {
        _pair(c) for c in recent
    }, "exactly the impressions of the recent late clicks changed"
    assert (fresh.click == 1).all() and set(fresh.dt) == {DAYS[-2]}
    # toward the truth: each changed label is now the world's, with the late click delivered
    truth = _true_labels(world, LATE_DAY).set_index("event_id").loc[fresh.index]
    assert_tables_equal(truth.reset_index(), fresh.reset_index()[labels], table="changed labels",
                        key=["event_id"])  # fmt: skip
    old_row = now.where((F.col("request_id") == old["request_id"])
                        & (F.col("item_id") == old["item_id"])).first()  # fmt: skip
    assert old_row.click == 0, "a click past the label horizon labels nothing"
    _assert_one_merge_of(spark, daily, before[tables.GOLD_SAMPLES], {DAYS[-2]})
    status = tables.read(spark, tables.LABEL_STATUS, daily).toPandas().set_index("dt")
    assert status.loc[DAYS[-2], "corrected_labels"] >= LATE
    assert status.loc[DAYS[-2], "labels_as_of"] == LATE_DAY
    # the late clicks are in the later impressions' sequences
    new = tables.read(spark, tables.GOLD_SAMPLES, daily).where(F.col("dt") == LATE_DAY)
    history = {r.user_id: r.hist_item_ids for r in new.collect()}
    for click in recent:
        assert click["item_id"] in history[click["user_id"]], click["event_id"]


def _assert_one_merge_of(spark, settings, since: int, days: set[str]) -> None:
    """The commits of gold.samples after `since` are one MERGE whose files all belong to
    `days` (Delta rewrites only the partitions the late events reached), then the new
    day's partition."""
    log = Path(tables.GOLD_SAMPLES.path(settings)) / "_delta_log"
    history = DeltaTable.forPath(spark, str(log.parent)).history()
    operations = history.where(F.col("version") > since).orderBy("version").collect()
    merges = [h for h in operations if h.operation == "MERGE"]
    assert len(merges) == 1, [h.operation for h in operations]
    actions = [json.loads(line) for line in
               (log / f"{merges[0].version:020d}.json").read_text().splitlines()]  # fmt: skip
    touched = {a[kind]["partitionValues"]["dt"] for a in actions for kind in ("add", "remove")
               if kind in a}  # fmt: skip
    assert touched == days
