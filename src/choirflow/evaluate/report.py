"""A self-contained HTML report per day, rendered from a Jinja2 template (templates/report.html.j2).

Every plot is a PNG embedded as a data URI, so the file opens anywhere with no network. Each
section is one function of the day's data (`ReportData`) that returns a `Section`, or None
when it has nothing to show: the leaderboard (champion and challenger on the same rows),
GAUC by activity bucket, the last 30 days, training curves, calibration, data volumes, label
maturity, earlier evaluations on matured labels, the promotion decision, data quality and
monitoring.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import jinja2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from choirflow import tables  # noqa: E402
from choirflow.buckets import ACTIVITY_BUCKETS  # noqa: E402
from choirflow.config import Settings  # noqa: E402
from choirflow.dates import day_offset, days_before  # noqa: E402
from choirflow.evaluate.champion import CHAMPION_METRICS  # noqa: E402
from choirflow.evaluate.metrics import auc, calibration, expected_calibration_error  # noqa: E402
from choirflow.quality.gate import data_docs_sites  # noqa: E402
from choirflow.quality.suites import RELABELLED  # noqa: E402
from choirflow.train.artifacts import RunFiles  # noqa: E402

TEMPLATES = Path(__file__).resolve().parent / "templates"
TREND_DAYS = 30
METRIC_COLUMNS = ("auc", "gauc_impression_weighted", "user_averaged_auc", "logloss", "n",
                  "positive_rate")  # fmt: skip


@dataclass
class Section:
    title: str
    body: str  # HTML built here from escaped values and embedded images
    anchor: str = ""

    def __post_init__(self) -> None:
        self.anchor = self.anchor or self.title.lower().replace(" ", "-").replace(",", "")


@dataclass
class ReportData:
    """Everything the sections read, fetched once."""

    dt: str
    settings: Settings
    metrics: pd.DataFrame
    metrics_history: pd.DataFrame
    promotions: pd.DataFrame
    promotions_history: pd.DataFrame
    runs_history: pd.DataFrame
    samples_per_day: pd.DataFrame
    quarantine: pd.DataFrame
    quality: pd.DataFrame
    monitoring: pd.DataFrame
    models: dict[str, Path] = field(default_factory=dict)
    label_status: pd.DataFrame = field(default_factory=pd.DataFrame)
    mature_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    relabelled_checks: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def runs(self) -> pd.DataFrame:
        h = self.runs_history
        return h[h["dt"] == self.dt] if not h.empty else h


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, empty: str, floats: str = "{:.4f}") -> str:
    """A table; counts print as integers with separators, other floats with 4 decimals."""
    if frame.empty:
        return f'<p class="note">{html.escape(empty)}</p>'
    formatters: dict[str, Callable] = {}
    for column in frame.columns:
        values = frame[column]
        if column in ("n", "rows") or column.endswith("_rows"):
            formatters[column] = lambda v: "" if pd.isna(v) else f"{int(v):,}"
        elif pd.api.types.is_float_dtype(values):
            formatters[column] = lambda v: "" if pd.isna(v) else floats.format(v)
    return frame.to_html(index=False, escape=True, formatters=formatters, border=0, na_rep="")


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


# ---- reading ----------------------------------------------------------------------------


def _read_days(
    spark: SparkSession, settings: Settings, table: tables.Table, first: str, last: str
) -> pd.DataFrame:
    if not tables.exists(spark, table, settings):
        return pd.DataFrame()
    rows = tables.read(spark, table, settings).where(F.col("dt").between(first, last))
    return rows.toPandas()


def _model_dirs(settings: Settings, dt: str) -> dict[str, Path]:
    root = Path(settings.models_dir)
    runs = sorted(root.glob(f"*/{dt}"))
    return {p.parent.name: p for p in runs if RunFiles(p).predictions.exists()}


def read_report_data(spark: SparkSession, settings: Settings, dt: str) -> ReportData:
    first = day_offset(dt, -(TREND_DAYS - 1))
    read = lambda table, start=dt: _read_days(spark, settings, table, start, dt)  # noqa: E731
    history = read(tables.GOLD_METRICS, first)
    promotions = read(tables.GOLD_PROMOTIONS, first)
    samples = pd.DataFrame()
    if tables.exists(spark, tables.GOLD_SAMPLES, settings):
        samples = (
            tables.read(spark, tables.GOLD_SAMPLES, settings)
            .where(F.col("dt").between(first, dt))
            .groupBy("dt")
            .count()
            .toPandas()
            .rename(columns={"count": "rows"})
        )
    day = lambda frame: frame[frame["dt"] == dt] if not frame.empty else frame  # noqa: E731
    return ReportData(
        dt=dt,
        settings=settings,
        metrics=day(history),
        metrics_history=history,
        promotions=day(promotions),
        promotions_history=promotions,
        runs_history=read(tables.BRONZE_INGEST_RUNS, first),
        samples_per_day=samples,
        quarantine=read(tables.BRONZE_QUARANTINE),
        quality=read(tables.QUALITY_RESULTS),
        monitoring=read(tables.QUALITY_MONITORING),
        models=_model_dirs(settings, dt),
        label_status=read(tables.LABEL_STATUS, first),
        mature_metrics=read(tables.GOLD_MATURE_METRICS, first),
        relabelled_checks=_relabelled_checks(read(tables.QUALITY_RESULTS, first)),
    )


def _relabelled_checks(quality: pd.DataFrame) -> pd.DataFrame:
    """The relabelled gate's checks of the window's days (recorded under each day)."""
    return quality[quality["table"] == RELABELLED] if not quality.empty else quality


# ---- sections ---------------------------------------------------------------------------


def _roles(data: ReportData) -> dict[str, str]:
    """model -> challenger / champion / compared, from the day's promotion decisions."""
    challengers = set(data.promotions["challenger_model"]) if not data.promotions.empty else set()
    roles = {}
    for model in sorted(set(data.metrics.get("model", []))):
        if model.startswith(CHAMPION_METRICS):
            roles[model] = "champion"
        else:
            roles[model] = "challenger" if model in challengers else "compared"
    return roles


def _overall(data: ReportData) -> pd.DataFrame:
    overall = data.metrics[data.metrics["slice"] == "all"].fillna({"model_version": ""})
    # One row per (model, version) that has metrics; a null metric stays null.
    keys = ["model", "model_version", "metric"]
    board = overall.groupby(keys)["value"].first().unstack("metric").reset_index()
    board.columns.name = None
    return board


def _oracle_auc(data: ReportData) -> float | None:
    path = Path(data.settings.raw_dir).parent / "oracle" / "impressions.parquet"
    if not path.exists() or not data.models:
        return None
    oracle = pd.read_parquet(path, columns=["event_id", "p_click"])
    preds = pd.read_parquet(RunFiles(next(iter(data.models.values()))).predictions)
    joined = preds.merge(oracle, on="event_id")
    if len(joined) and joined["click"].nunique() == 2:
        return auc(joined["click"], joined["p_click"])
    return None


def leaderboard_section(data: ReportData) -> Section | None:
    if data.metrics.empty:
        return None
    board = _overall(data)
    roles = _roles(data)
    board.insert(1, "role", board["model"].map(roles))
    order = {"champion": 0, "challenger": 1, "compared": 2}
    by = ["role", *[c for c in ("gauc_impression_weighted",) if c in board]]
    board = board.sort_values(by, key=lambda c: c.map(order) if c.name == "role" else -c)
    keep = ["model", "role", "model_version", *[c for c in METRIC_COLUMNS if c in board]]
    oracle = _oracle_auc(data)
    notes = [
        "Champion and challenger are scored on the same next-day rows. GAUC is "
        "impression-weighted (DIN/FuxiCTR); user-averaged AUC weights every user equally."
    ]
    first = not data.promotions.empty and data.promotions["champion_version"].isna().all()
    if first:
        notes.append("No champion was scored on this day: the challenger is the first model.")
    if oracle is not None:
        notes.append(f"Oracle AUC on these rows (the synthetic world's true click probabilities):"
                     f" {oracle:.4f}.")  # fmt: skip
    body = _table(board[keep], "no metrics") + "".join(_note(n) for n in notes)
    return Section("Champion and challenger", body, "leaderboard")


def buckets_section(data: ReportData) -> Section | None:
    rows = data.metrics[
        data.metrics["slice"].str.startswith("activity=")
        & (data.metrics["metric"] == "gauc_impression_weighted")
    ] if not data.metrics.empty else data.metrics  # fmt: skip
    if rows.empty:
        return None
    pivot = rows.pivot_table(index="slice", columns="model", values="value")
    if pivot.empty:
        return None
    order = [f"activity={b}" for b in ACTIVITY_BUCKETS]
    pivot = pivot.reindex([s for s in order if s in pivot.index])
    pivot.columns.name = None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    pivot.plot.bar(ax=ax, rot=0)
    ax.set_ylabel("GAUC (impression-weighted)")
    ax.set_ylim(max(0.0, float(np.nanmin(pivot.to_numpy())) - 0.05), None)
    ax.set_title("GAUC by user-activity bucket")
    return Section("GAUC by activity bucket", _png(fig) + _table(pivot.reset_index(), "none"))


def trend_section(data: ReportData) -> Section | None:
    history = data.metrics_history
    if history.empty and data.samples_per_day.empty:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    volumes = _volumes_per_day(data)
    days = sorted(set(history.get("dt", [])) | set(volumes["dt"]))
    position = {d: i for i, d in enumerate(days)}
    overall = history[history["slice"] == "all"] if not history.empty else history
    shown = overall[overall["metric"].isin(["auc", "gauc_impression_weighted"])] if len(
        overall
    ) else overall  # fmt: skip
    for (model, metric), part in shown.groupby(["model", "metric"]) if len(shown) else []:
        part = part.sort_values("dt")
        style = "-" if metric == "auc" else "--"
        label = f"{model} {'AUC' if metric == 'auc' else 'GAUC'}"
        top.plot([position[d] for d in part["dt"]], part["value"], style, marker="o", label=label)
    promoted = data.promotions_history
    if not promoted.empty:
        for d in promoted[promoted["promoted"]]["dt"]:
            if d in position:
                top.axvline(position[d], color="#1a7f37", alpha=0.4, linestyle=":")
        top.plot([], [], color="#1a7f37", linestyle=":", label="promotion")
    top.set_ylabel("next-day AUC / GAUC")
    if top.lines:
        top.legend(fontsize=7, ncol=2)
    x = np.array([position[d] for d in volumes["dt"]])
    bottom.bar(x - 0.2, volumes["samples_rows"], width=0.4, label="gold.samples rows")
    bottom.bar(x + 0.2, volumes["quarantined_rows"], width=0.4, label="quarantined rows")
    bottom.set_yscale("symlog")
    bottom.set_ylabel("rows")
    bottom.legend(fontsize=7)
    bottom.set_xticks(range(len(days)), [d[5:] for d in days], rotation=45, fontsize=7)
    fig.suptitle(f"The last {TREND_DAYS} days")
    return Section(f"Last {TREND_DAYS} days", _png(fig) + _table(volumes, "no data"), "trend")


def _volumes_per_day(data: ReportData) -> pd.DataFrame:
    samples = data.samples_per_day.rename(columns={"rows": "samples_rows"})
    runs = data.runs_history
    if runs.empty:
        quarantined = pd.DataFrame(columns=["dt", "quarantined_rows"])
    else:
        quarantined = runs.groupby("dt", as_index=False)["quarantined_rows"].sum()
    if samples.empty:
        samples = pd.DataFrame(columns=["dt", "samples_rows"])
    out = samples.merge(quarantined, on="dt", how="outer").fillna(0).sort_values("dt")
    return out[["dt", "samples_rows", "quarantined_rows"]].reset_index(drop=True)


def training_section(data: ReportData) -> Section | None:
    if not data.models:
        return None
    fig, (loss_ax, valid_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, folder in data.models.items():
        if not RunFiles(folder).curve.exists():
            continue
        curve = json.loads(RunFiles(folder).curve.read_text())
        losses = pd.Series(curve["losses"]).rolling(10, min_periods=1).mean()
        loss_ax.plot(losses.to_numpy(), label=name)
        valid = curve.get("valid_aucs") or []
        if valid:
            valid_ax.plot(range(1, len(valid) + 1), valid, marker="o", label=name)
            best = curve.get("best_epoch")
            if best:
                valid_ax.scatter([best], [valid[best - 1]], s=80, facecolors="none",
                                 edgecolors="black")  # fmt: skip
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss (10-step mean)")
    loss_ax.legend(fontsize=7)
    valid_ax.set_xlabel("epoch")
    valid_ax.set_ylabel("validation-day AUC")
    if valid_ax.lines:
        valid_ax.legend(fontsize=7)
        note = "Right: AUC on the validation day after each epoch; the circle marks the epoch kept."
    else:
        valid_ax.text(0.5, 0.5, "no validation day", ha="center", transform=valid_ax.transAxes)
        note = "No validation day was held out (one training day, or validation_day off)."
    return Section("Training curves", _png(fig) + _note(note))


def calibration_section(data: ReportData) -> Section | None:
    if not data.models:
        return None
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
    rows = []
    for name, folder in data.models.items():
        preds = pd.read_parquet(RunFiles(folder).predictions)
        table = calibration(preds["click"], preds["score"])
        ax.plot(table["mean_predicted"], table["observed_rate"], marker="o", label=name)
        ece = expected_calibration_error(preds["click"], preds["score"])
        rows.append({"model": name, "ECE": ece})
    ends = [max(line.get_xdata().max(), line.get_ydata().max()) for line in ax.lines[1:]]
    top = max([0.05, *ends])
    lim = min(1.0, 1.15 * float(top))
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_xlabel("mean predicted rate (decile)")
    ax.set_ylabel("observed rate")
    ax.legend()
    return Section("Calibration", _png(fig) + _table(pd.DataFrame(rows), "none"))


def volumes_section(data: ReportData) -> Section | None:
    runs = data.runs
    if runs.empty:
        return None
    waits = ["pending_rows", "released_rows", "expired_rows"]  # absent from older runs
    runs = runs.reindex(columns=[*runs.columns.drop(waits, errors="ignore"), *waits]).fillna(
        {c: 0 for c in waits}
    )
    placed = ["bronze_rows", "quarantined_rows", "duplicate_rows", "pending_rows"]
    runs = runs[["source", "raw_rows", "released_rows", "expired_rows", *placed]]
    fig, ax = plt.subplots(figsize=(7, 3))
    runs.set_index("source")[placed].plot.barh(ax=ax, stacked=True)
    ax.set_xlabel("rows")
    ax.set_title("raw + released + expired = bronze + quarantined + duplicates + pending")
    q = data.quarantine
    reasons = (
        q.groupby(["source_table", "reason"]).size().rename("rows").reset_index()
        if not q.empty
        else pd.DataFrame()
    )
    samples = data.samples_per_day
    today = samples[samples["dt"] == data.dt]["rows"].sum() if not samples.empty else 0
    body = (
        _png(fig) + _table(runs, "no ingest runs") + f"<p>gold.samples rows: {int(today):,}</p>"
        + "<h3>Quarantine reasons</h3>"
        + _table(reasons, "No row was quarantined on this day.")
        + "<h3>Raw files not read</h3>"
        + _table(skipped_files(data.runs), "Every file under the day's raw folders was read.")
    )  # fmt: skip
    return Section("Data volumes", body)


def _label_use(data: ReportData, status: pd.DataFrame) -> pd.Series:
    """What the day's training made of each day: its training window's mature days, the
    young ones it left out, the evaluation day."""
    window = set(days_before(data.dt, data.settings.train.train_days))
    young = status["maturity_hours"] < data.settings.train.label_maturity_hours
    use = np.where(status["dt"].isin(window), np.where(young, "left out: young", "training"), "")
    return pd.Series(np.where(status["dt"] == data.dt, "evaluation", use), index=status.index)


def labels_section(data: ReportData) -> Section | None:
    if data.label_status.empty:
        return None
    status = data.label_status.sort_values("dt").reset_index(drop=True)
    status["used"] = _label_use(data, status)
    colours = status["used"].map({"training": "C0", "evaluation": "C1"}).fillna("0.7")
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.bar(status["dt"], status["maturity_hours"], color=colours)
    ax.axhline(data.settings.train.label_maturity_hours, color="black", linewidth=0.8)
    ax.set_ylabel("label maturity (hours)")
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    corrected = ax.twinx()
    corrected.plot(status["dt"], status["corrected_labels"], color="C3", marker="o")
    corrected.set_ylabel("labels late data changed", color="C3")
    note = _note(
        "Bars: hours from each day's end to the end of the day its labels are as of (blue: "
        "trained on today, orange: today's evaluation day, grey: not used); the line is "
        "train.label_maturity_hours. Red: how many of the day's labels late clicks and "
        "conversions changed after it was built."
    )
    shown = status[["dt", "labels_as_of", "maturity_hours", "corrected_labels", "used"]]
    body = _png(fig) + note + _table(shown, "no label status") + _relabelled_table(data)
    return Section("Label maturity", body)


def _relabelled_table(data: ReportData) -> str:
    """Per corrected day, the relabelled gate's verdict on its new labels."""
    checks = data.relabelled_checks
    if checks.empty:
        return _note("No day of this window had labels corrected, so no relabelled check ran.")
    per_day = checks.groupby("dt").agg(
        checks=("success", "size"), passed=("success", "sum"), checked_at=("checked_at", "max")
    )
    failing = checks[~checks["success"]][["dt", "expectation", "column", "severity", "observed"]]
    note = _note(
        "The relabelled gate, on each day whose labels late data changed: labels in {0, 1}, "
        "no conversion without a click, the click rate within quality.ctr bounds and at most "
        "quality.max_relabelled_share of the day's rows changed."
    )
    shown = per_day.reset_index().sort_values("dt")
    return note + _table(shown, "") + _table(failing, "Every relabelled check passed.")


def rescored_section(data: ReportData) -> Section | None:
    """Each earlier evaluation beside the same predictions scored on its matured labels."""
    rescored = data.mature_metrics
    if rescored.empty:
        return None
    overall = rescored[(rescored["slice"] == "all") & (rescored["metric"] == "auc")]
    overall = overall.sort_values(["dt", "model"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(10, 3))
    for i, (model, runs) in enumerate(overall.groupby("model")):
        ax.plot(runs["dt"], runs["value_as_scored"], "o", mfc="none", color=f"C{i}",
                label=f"{model}: labels as scored")  # fmt: skip
        ax.plot(runs["dt"], runs["value"], "o", color=f"C{i}", label=f"{model}: matured")
    ax.set_ylabel("AUC")
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    ax.legend(fontsize=7)
    table = overall.assign(change=overall["value"] - overall["value_as_scored"])[
        ["dt", "model", "value_as_scored", "value", "change", "maturity_hours_as_scored",
         "maturity_hours", "labels_changed"]
    ].rename(columns={"value_as_scored": "auc_as_scored", "value": "auc_matured"})  # fmt: skip
    note = _note(
        "A day is evaluated by its own run, before the clicks and conversions that arrive "
        "later are in its labels; promotion decides on that first reading. Once the day's "
        "labels are train.label_maturity_hours mature, the same predictions are scored "
        "again on the same rows (gold.mature_metrics, every slice and metric)."
    )
    return Section("Evaluation on mature labels", _png(fig) + note + _table(table, ""))


def skipped_files(runs: pd.DataFrame) -> pd.DataFrame:
    """(source, file and why) of each raw file or folder the day's ingest did not read."""
    if "files_skipped" not in runs.columns:  # a warehouse from before the lists were kept
        return pd.DataFrame()
    rows = [
        {"source": run.source, "not read (why)": skipped}
        for run in runs.itertuples()
        for skipped in (run.files_skipped if run.files_skipped is not None else [])
    ]
    return pd.DataFrame(rows)


def promotion_section(data: ReportData) -> Section | None:
    if data.promotions.empty:
        return None
    parts = []
    for row in data.promotions.itertuples():
        challenger = html.escape(f"{row.challenger_model} version {row.challenger_version}")
        if row.promoted:
            parts.append(f'<p class="promoted">Promoted {challenger} to champion.</p>')
        else:
            champion = html.escape(str(row.champion_version))
            parts.append(f'<p class="kept">Kept champion version {champion} over {challenger}.</p>')
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in str(row.reasons).split("; "))
        parts.append(f"<ul>{reasons}</ul>")
    return Section("Promotion", "".join(parts))


def quality_section(data: ReportData) -> Section | None:
    quality = data.quality
    sites = data_docs_sites(data.settings, data.dt)
    links = ", ".join(
        f'<a href="{site.resolve().as_uri()}">{html.escape(site.parent.name)}</a>' for site in sites
    )
    link = f"<p>Data Docs: {links}</p>" if sites else ""
    if quality.empty:
        return Section("Data quality", _note("No quality gate ran for this day.") + link)
    failing = quality[~quality["success"]][["table", "expectation", "column", "severity",
                                             "unexpected_count", "observed"]]  # fmt: skip
    passed = int(quality["success"].sum())
    tables_checked = ", ".join(sorted(set(quality["table"])))
    summary = (
        f"<p>{passed} of {len(quality)} checks passed on {html.escape(tables_checked)}; "
        f"{len(failing)} did not (soft checks warn, hard checks stop the day).</p>"
    )
    return Section(
        "Data quality",
        summary + _table(failing, f"All {len(quality)} checks passed; no warnings.") + link,
    )


def monitoring_section(data: ReportData) -> Section | None:
    if data.monitoring.empty:
        return None
    shown = data.monitoring[["check", "table", "column", "value", "threshold", "status", "detail"]]
    return Section("Freshness, volume and drift", _table(shown, "no checks"))


SECTIONS: tuple[Callable[[ReportData], Section | None], ...] = (
    leaderboard_section,
    buckets_section,
    trend_section,
    training_section,
    calibration_section,
    volumes_section,
    labels_section,
    rescored_section,
    promotion_section,
    quality_section,
    monitoring_section,
)


def render(data: ReportData) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["j2"])
    )
    sections = [s for s in (make(data) for make in SECTIONS) if s is not None]
    return env.get_template("report.html.j2").render(dt=data.dt, sections=sections)


def build_report(spark: SparkSession, settings: Settings, dt: str) -> Path:
    page = render(read_report_data(spark, settings, dt))
    out = Path(settings.reports_dir) / dt / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
