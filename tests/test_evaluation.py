"""Promotion rules, MLflow tracking and the registry, compare, and the HTML report in a real
headless Chromium."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from choirflow import tables
from choirflow.evaluate.promotion import bootstrap_gauc_gain, decide
from choirflow.steps import run_step
from choirflow.train.artifacts import RunFiles


def _world(n_users=300, per_user=20, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users).astype(str), per_user)
    truth = rng.random(len(users))
    labels = (rng.random(len(users)) < truth).astype(int)
    buckets = np.where(np.arange(len(users)) % 3 == 0, "low", "high")
    return labels, truth, users, buckets, rng


@pytest.mark.unit
def test_a_clearly_better_challenger_is_promoted():
    labels, truth, users, buckets, rng = _world()
    champion = truth + rng.normal(0, 0.5, len(truth))
    decision = decide(labels, truth, champion, users, buckets)
    assert decision.promote and decision.ci_low > 0


@pytest.mark.unit
def test_no_gain_or_a_regressing_bucket_keeps_the_champion():
    labels, truth, users, buckets, rng = _world()
    same = decide(labels, truth, truth.copy(), users, buckets)
    assert not same.promote and "does not hold" in same.reasons[0]
    # Better overall, but the low bucket gets worse.
    challenger = truth.copy()
    champion = truth + rng.normal(0, 0.6, len(truth))
    low = buckets == "low"
    challenger[low], champion[low] = champion[low], truth[low]
    worse = decide(labels, challenger, champion, users, buckets)
    assert not worse.promote
    assert any("bucket low regresses" in r for r in worse.reasons)


@pytest.mark.unit
def test_a_cvr_evaluation_is_rescored_on_its_conversions_now():
    """The second reading of a CVR run: its stored scores against the conversions gold.samples
    holds now, rows it no longer holds left out, beside the first reading of this run (not of
    an earlier run of the day), a missing first value kept missing."""
    from choirflow.evaluate import metrics
    from choirflow.evaluate.rescore import _rescored_rows

    rng = np.random.default_rng(5)
    ids = [f"e{i}" for i in range(40)]
    then = rng.integers(0, 2, 40)
    predictions = pd.DataFrame({
        "user_id": [f"u{i % 4}" for i in range(40)], "activity_bucket": "low", "click": then,
        "score": rng.random(40), "event_id": ids, "label_column": "conversion",
        "label_maturity_hours": 0, "run_id": "r2",
    })  # fmt: skip
    now = then.copy()
    now[:6] = 1 - now[:6]  # six late conversions (or corrections) since
    labels = pd.DataFrame({"click": 1, "conversion": now}, index=ids).iloc[:-1]  # e39 gone
    first = pd.DataFrame([
        {"dt": "d", "model": "m-cvr", "run_id": run, "model_version": version, "slice": "all",
         "metric": metric, "value": value}
        for run, version, bias in (("r1", "1", 0.5), ("r2", "2", 0.0))
        for metric, value in (("auc", 0.6 + bias), ("user_averaged_auc", np.nan))
    ])  # fmt: skip
    rows = _rescored_rows("m-cvr", "d", predictions, labels, first, 24)
    overall = {r["metric"]: r for r in rows if r["slice"] == "all"}
    kept = predictions.iloc[:-1]
    assert overall["auc"]["value"] == pytest.approx(metrics.auc(now[:-1], kept["score"]))
    assert overall["auc"]["value_as_scored"] == 0.6 and overall["auc"]["model_version"] == "2"
    assert overall["user_averaged_auc"]["value_as_scored"] is None
    assert overall["n"]["value"] == 39 and overall["auc"]["labels_changed"] == 6
    assert (overall["auc"]["maturity_hours_as_scored"], overall["auc"]["maturity_hours"]) == (0, 24)
    assert _rescored_rows("m-cvr", "d", predictions.assign(run_id="r3"), labels, first, 24) == []


@pytest.mark.unit
def test_bootstrap_interval_brackets_the_gain():
    labels, truth, users, _, rng = _world(seed=3)
    gain, low, high = bootstrap_gauc_gain(
        labels, truth, truth + rng.normal(0, 0.3, len(truth)), users
    )
    assert low < gain < high


@pytest.mark.spark
def test_training_is_tracked_and_registered(built, settings, days):
    import mlflow

    from choirflow.evaluate import tracking

    trained = built[2]["train_and_evaluate"]
    client = tracking._client(settings)[1]
    run = client.get_run(trained["run_id"])
    assert run.data.params["epochs"] and "auc" in run.data.metrics
    assert run.data.tags["lineage.gold.samples"].isdigit()
    # the label maturity of each day trained and evaluated on, in hours
    maturity = run.data.tags["lineage.label_maturity_hours"]
    assert f"'{days[1]}': 24" in maturity and f"'{days[2]}': 0" in maturity, maturity
    assert run.data.tags["code_version"]
    history = client.get_metric_history(trained["run_id"], "train_loss")
    assert len(history) >= 1
    champion = tracking.champion(settings)
    assert champion is not None and Path(champion["path"]).exists()
    assert mlflow.get_tracking_uri().startswith("sqlite")


@pytest.mark.spark
def test_promotion_is_recorded(built, spark, settings, days):
    decisions = tables.read(spark, tables.GOLD_PROMOTIONS, settings).toPandas()
    decisions = decisions[decisions.challenger_model == "din"]
    assert set(decisions.dt) >= {days[1], days[2]}
    first = decisions[decisions.dt == days[1]].iloc[0]
    assert first.promoted and "no champion yet" in first.reasons
    second = decisions[decisions.dt == days[2]].iloc[0]
    assert second.champion_version is not None and second.reasons


@pytest.mark.spark
def test_a_promoted_model_is_exported_for_serving_and_scores_as_trained(built, settings, days):
    """The first promotion exported its version with a spec; the export, fed the evaluation
    day's raw values, gives the scores the training run wrote for those rows."""
    from choirflow.evaluate import tracking
    from choirflow.serving.publish import CHAMPION_FILE, serving_folder
    from choirflow.serving.spec import ServedModel
    from choirflow.train.data import with_optional_columns
    from choirflow.train.inputs import load_samples

    trained = built[1]["train_and_evaluate"]
    assert built[1]["promote"]["promoted"]
    folder = serving_folder(settings, trained["model_version"])
    assert built[1]["promote"]["serving_path"] == str(folder)
    served = ServedModel.load(folder)
    about = served.spec["about"]
    assert (about["model"], about["version"]) == ("din", trained["model_version"])
    _, client = tracking._client(settings)
    run = client.get_run(trained["run_id"])
    assert served.spec["item_embeddings_version"] == int(
        run.data.tags["lineage.silver.item_embeddings"]
    )
    logged = {a.path for a in client.list_artifacts(trained["run_id"], "serving")}
    assert {"serving/model.pt2", "serving/spec.json", "serving/vocabularies.json"} <= logged
    registry = settings.tracking.registry_model
    tag = client.get_model_version(registry, trained["model_version"]).tags["serving_path"]
    assert tag == str(folder)
    champion = tracking.champion(settings)["version"]
    assert (folder.parent / CHAMPION_FILE).read_text().strip() == str(champion)
    from pyspark.sql import SparkSession

    frame, _ = load_samples(SparkSession.getActiveSession(), settings, [days[1]])
    preds = pd.read_parquet(RunFiles.beside(trained["checkpoint"]).predictions)
    raw = with_optional_columns(frame).set_index("event_id").loc[preds["event_id"]]
    got = served.score(raw.reset_index()[sorted(served.fields)].to_dict("records"))
    np.testing.assert_allclose(got, preds["score"].to_numpy(), atol=1e-5)


@pytest.mark.spark
def test_metrics_rows_carry_model_version_and_gates_build_data_docs(built, spark, settings, days):
    metrics = tables.read(spark, tables.GOLD_METRICS, settings).where(F.col("dt") == days[2])
    overall = metrics.where("metric = 'gauc_impression_weighted' AND slice = 'all'")
    row = overall.where("model = 'din'").first()
    assert row.model_version and 0 < row.value < 1
    # The champion scored on the same rows, recorded beside the challenger (the report's
    # side-by-side leaderboard reads both).
    champion = overall.where("model = 'champion'").first()
    assert champion is not None and champion.model_version != row.model_version
    decided = tables.read(spark, tables.GOLD_PROMOTIONS, settings).where(F.col("dt") == days[2])
    assert champion.model_version == decided.first().champion_version
    from choirflow.quality.gate import data_docs_sites

    sites = {p.parent.name for p in data_docs_sites(settings, days[2])}
    assert {"bronze_events", "gold_samples", "silver_item_embeddings"} <= sites


@pytest.mark.spark
def test_compare_writes_a_leaderboard(built, spark, settings, days):
    from choirflow.evaluate.challenger import compare

    board = compare(spark, settings, ["dnn_test", "awmoe_test"], days[2])
    assert list(board.model) and set(board.model) == {"dnn_test", "awmoe_test"}
    assert (Path(settings.reports_dir) / days[2] / "leaderboard.csv").exists()
    metrics = tables.read(spark, tables.GOLD_METRICS, settings).where(F.col("dt") == days[2])
    assert {"dnn_test", "awmoe_test"} <= {
        r.model for r in metrics.select("model").distinct().collect()
    }


@pytest.mark.spark
def test_report_renders_in_headless_chromium(built, spark, settings, days, tmp_path):
    from choirflow.quality.suites import RELABELLED

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is installed by `make setup`"
    path = Path(run_step("report", days[2], settings))
    page = path.read_text()
    # Each day whose labels were corrected is listed with its relabelled gate's verdict.
    results = tables.read(spark, tables.QUALITY_RESULTS, settings)
    relabelled = results.where((F.col("table") == RELABELLED) & (F.col("dt") <= days[2]))
    corrected = sorted({r.dt for r in relabelled.select("dt").collect()})
    maturity = page.split("<h2>Label maturity</h2>")[1].split("</section>")[0]
    gate = maturity.split("The relabelled gate")[1] if corrected else maturity
    assert all(f"<td>{day}</td>" in gate for day in corrected), corrected
    assert corrected or "no relabelled check ran" in maturity
    for section in ("Champion and challenger", "GAUC by activity bucket", "Last 30 days",
                    "Training curves", "Calibration", "Data volumes", "Label maturity",
                    "Evaluation on mature labels", "Promotion", "Data quality"):  # fmt: skip
        assert f"<h2>{section}</h2>" in page, section
    # Champion and challenger on the same rows; counts as integers; validation beside loss.
    board = page.split('id="leaderboard"')[1].split("</section>")[0]
    assert "<td>champion</td>" in board and "<td>challenger</td>" in board
    assert re.search(r"<td>awmoe_test</td>\s*<td>compared</td>", board)  # compare's models
    assert re.search(r"<td>\d{1,3}(,\d{3})+</td>", board)  # n: an integer with separators
    assert not re.search(r"<td>[1-9]\d*\.0000</td>", board)  # never 11219.0000
    rows = re.findall(r"<tr>(.*?)</tr>", board.split("<tbody>")[1], re.S)
    assert rows and all(re.search(r"<td>0\.\d{4}</td>", row) for row in rows), board
    assert "NaN" not in re.sub(r'src="data:[^"]*"', "", page)  # images aside
    assert "AUC on the validation day" in page or "No validation day" in page
    assert "nothing recorded" not in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-images-ok="true"' in dom.stdout
    count = int(dom.stdout.split('data-image-count="')[1].split('"')[0])
    assert count >= 5  # buckets, the 30-day trend, training, calibration, volumes
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2000", path.as_uri()],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 10_000


@pytest.mark.spark
def test_cvr_trains_on_clicks_with_its_own_registry(built, spark, settings, days):
    from choirflow.evaluate import tracking

    ctr_before = tracking.champion(settings)
    # Any model of the zoo is the daily model by config: here the distilled LightSUAN.
    model = "lightsuan_distilled_test"
    cvr = settings.model_copy(
        update={"train": settings.train.model_copy(update={"task": "cvr", "model": model})}
    )
    result = run_step("train_and_evaluate", days[2], cvr)
    assert result["status"] == "trained" and result["model"] == f"{model}-cvr"
    samples = tables.read(spark, tables.GOLD_SAMPLES, settings).where(F.col("dt") == days[2])
    clicked = samples.where("click = 1").count()
    metrics = tables.read(spark, tables.GOLD_METRICS, settings).where(F.col("dt") == days[2])
    row = metrics.where(f"model = '{model}-cvr' AND slice = 'all' AND metric = 'auc'").first()
    assert row is not None and 0 < row.value < 1
    predictions = pd.read_parquet(RunFiles.beside(result["checkpoint"]).predictions)
    assert len(predictions) == clicked  # evaluated on clicked impressions, label = conversion
    decision = run_step("promote", days[2], cvr, {"train_and_evaluate": result})
    assert decision["promoted"]  # the first CVR model: no CVR champion yet
    cvr_champion = tracking.champion(tracking.with_task_registry(cvr))
    assert str(cvr_champion["version"]) == str(result["model_version"])
    assert tracking.champion(settings) == ctr_before  # CTR's champion is untouched
    # Exported under the CVR registry: the student alone, scoring as the trained model.
    from choirflow.serving.spec import ServedModel

    served = ServedModel.load(decision["serving_path"])
    assert served.spec["about"]["registered_model"] == "choirflow_ctr_cvr"
    assert served.spec["about"]["model_config"] == "lightsuan_distilled"
    assert not any("teacher" in name for name, _ in served.program.named_parameters())
    assert served.spec["parity"]["max_abs_diff"] <= 1e-5
