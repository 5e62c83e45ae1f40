"""A self-contained HTML report per day: every plot is a PNG embedded as a data URI, so the
file opens anywhere with no network. Sections: leaderboard, GAUC by activity bucket,
calibration, training curves, data volumes, the promotion decision, quality warnings."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from choirflow import tables  # noqa: E402
from choirflow.config import Settings  # noqa: E402
from choirflow.evaluate.metrics import auc, calibration, expected_calibration_error  # noqa: E402
from choirflow.quality.gate import data_docs_dir  # noqa: E402

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
td, th { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.promoted { color: #1a7f37; font-weight: 600; } .kept { color: #9a6700; font-weight: 600; }
.note { color: #666; font-size: 0.9rem; } img { max-width: 100%; }
"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    if frame.empty:
        return '<p class="note">nothing recorded</p>'
    formatters = {c: floats.format for c in frame.select_dtypes("float").columns}
    return frame.to_html(index=False, escape=True, formatters=formatters, border=0)


def _read(spark: SparkSession, settings: Settings, table: tables.Table, dt: str) -> pd.DataFrame:
    if not tables.exists(spark, table, settings):
        return pd.DataFrame()
    return tables.read(spark, table, settings).where(F.col("dt") == dt).toPandas()


def _model_dirs(settings: Settings, dt: str) -> dict[str, Path]:
    root = Path(settings.models_dir)
    return {
        p.parent.name: p
        for p in sorted(root.glob(f"*/{dt}"))
        if (p / "eval_predictions.parquet").exists()
    }


def _oracle(settings: Settings) -> pd.DataFrame | None:
    path = Path(settings.raw_dir).parent / "oracle" / "impressions.parquet"
    return pd.read_parquet(path, columns=["event_id", "p_click"]) if path.exists() else None


def build_report(spark: SparkSession, settings: Settings, dt: str) -> Path:
    metrics = _read(spark, settings, tables.GOLD_METRICS, dt)
    models = _model_dirs(settings, dt)
    sections: list[str] = []

    # Leaderboard.
    oracle = _oracle(settings)
    oracle_auc = None
    if not metrics.empty:
        overall = metrics[metrics["slice"] == "all"].pivot_table(
            index="model", columns="metric", values="value"
        )
        keep = [c for c in ("auc", "gauc_impression_weighted", "user_averaged_auc", "logloss", "n")
                if c in overall.columns]  # fmt: skip
        board = overall[keep].sort_values("gauc_impression_weighted", ascending=False).reset_index()
        board.columns.name = None
        if oracle is not None and models:
            preds = pd.read_parquet(next(iter(models.values())) / "eval_predictions.parquet")
            joined = preds.merge(oracle, on="event_id")
            if len(joined) and joined["click"].nunique() == 2:
                oracle_auc = auc(joined["click"], joined["p_click"])
        note = (
            f'<p class="note">Oracle AUC on these rows (true click probabilities of the synthetic'
            f" world): {oracle_auc:.4f}. GAUC here is impression-weighted (DIN/FuxiCTR); "
            "user-averaged AUC weights every user equally.</p>"
            if oracle_auc is not None
            else '<p class="note">GAUC is impression-weighted (DIN/FuxiCTR); user-averaged AUC '
            "weights every user equally.</p>"
        )
        sections.append("<h2>Leaderboard (next-day evaluation)</h2>" + _table(board) + note)

        # GAUC by activity bucket.
        buckets = metrics[
            metrics["slice"].str.startswith("activity=")
            & (metrics["metric"] == "gauc_impression_weighted")
        ]
        if not buckets.empty:
            pivot = buckets.pivot_table(index="slice", columns="model", values="value")
            pivot = pivot.reindex(
                [f"activity={b}" for b in ("low", "mid", "high") if f"activity={b}" in pivot.index]
            )
            pivot.columns.name = None
            fig, ax = plt.subplots(figsize=(7, 3.5))
            pivot.plot.bar(ax=ax, rot=0)
            ax.set_ylabel("GAUC (impression-weighted)")
            ax.set_ylim(max(0.0, float(np.nanmin(pivot.to_numpy())) - 0.05), None)
            ax.set_title("GAUC by user-activity bucket")
            sections.append(
                "<h2>GAUC by activity bucket</h2>" + _png(fig) + _table(pivot.reset_index())
            )

    # Calibration and training curves.
    if models:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
        rows = []
        for name, folder in models.items():
            preds = pd.read_parquet(folder / "eval_predictions.parquet")
            table = calibration(preds["click"], preds["score"])
            ax.plot(table["mean_predicted"], table["observed_rate"], marker="o", label=name)
            rows.append(
                {"model": name, "ECE": expected_calibration_error(preds["click"], preds["score"])}
            )
        top = max(
            [0.05]
            + [line.get_xdata().max() for line in ax.lines[1:]]
            + [line.get_ydata().max() for line in ax.lines[1:]]
        )
        lim = min(1.0, 1.15 * float(top))
        ax.set_xlim(0, lim)
        ax.set_ylim(0, lim)
        ax.set_xlabel("mean predicted CTR (decile)")
        ax.set_ylabel("observed CTR")
        ax.legend()
        sections.append("<h2>Calibration</h2>" + _png(fig) + _table(pd.DataFrame(rows)))

        fig, ax = plt.subplots(figsize=(7, 3.5))
        for name, folder in models.items():
            curve = json.loads((folder / "training_curve.json").read_text())
            losses = pd.Series(curve["losses"]).rolling(10, min_periods=1).mean()
            ax.plot(losses.to_numpy(), label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (10-step mean)")
        ax.legend()
        sections.append("<h2>Training curves</h2>" + _png(fig))

    # Data volumes.
    runs = _read(spark, settings, tables.BRONZE_INGEST_RUNS, dt)
    if not runs.empty:
        runs = runs[["source", "raw_rows", "bronze_rows", "quarantined_rows", "duplicate_rows"]]
        fig, ax = plt.subplots(figsize=(7, 3))
        runs.set_index("source")[["bronze_rows", "quarantined_rows", "duplicate_rows"]].plot.barh(
            ax=ax, stacked=True
        )
        ax.set_xlabel("rows")
        ax.set_title("raw rows = bronze + quarantined + duplicates")
        quarantine = _read(spark, settings, tables.BRONZE_QUARANTINE, dt)
        reasons = (
            quarantine.groupby(["source_table", "reason"]).size().rename("rows").reset_index()
            if not quarantine.empty
            else pd.DataFrame()
        )
        samples = _read(spark, settings, tables.GOLD_SAMPLES, dt)
        volume = f"<p>gold.samples rows: {len(samples):,}</p>" if not samples.empty else ""
        sections.append(
            "<h2>Data volumes</h2>" + _png(fig) + _table(runs) + volume
            + "<h3>Quarantine reasons</h3>" + _table(reasons)
        )  # fmt: skip

    # Promotion decision.
    promotions = _read(spark, settings, tables.GOLD_PROMOTIONS, dt)
    if not promotions.empty:
        row = promotions.iloc[0]
        verdict = (
            f'<p class="promoted">Promoted {html.escape(str(row.challenger_model))} '
            f"(version {html.escape(str(row.challenger_version))}) to champion.</p>"
            if row.promoted
            else f'<p class="kept">Kept champion version {html.escape(str(row.champion_version))}'
            ".</p>"
        )
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in str(row.reasons).split("; "))
        sections.append(f"<h2>Promotion</h2>{verdict}<ul>{reasons}</ul>")

    # Quality.
    quality = _read(spark, settings, tables.QUALITY_RESULTS, dt)
    sites = sorted(data_docs_dir(settings, dt).glob("*/index.html"))
    link = (
        "<p>Data Docs: "
        + ", ".join(
            f'<a href="{site.resolve().as_uri()}">{html.escape(site.parent.name)}</a>'
            for site in sites
        )
        + "</p>"
        if sites
        else ""
    )
    if not quality.empty:
        failing = quality[~quality["success"]][["table", "expectation", "column", "severity",
                                                 "unexpected_count", "observed"]]  # fmt: skip
        summary = (
            f"<p>{int(quality['success'].sum())} of {len(quality)} checks passed; "
            f"{len(failing)} warnings.</p>"
        )
        sections.append("<h2>Data quality</h2>" + summary + _table(failing) + link)

    monitoring = _read(spark, settings, tables.QUALITY_MONITORING, dt)
    if not monitoring.empty:
        shown = monitoring[["check", "table", "column", "value", "threshold", "status", "detail"]]
        sections.append("<h2>Freshness, volume and drift</h2>" + _table(shown))

    body = "\n".join(sections) or '<p class="note">No results for this day yet.</p>'
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>choirflow report {dt}</title>
<style>{CSS}</style></head>
<body><h1>choirflow daily report: {dt}</h1>
{body}
<script>
window.addEventListener("load", () => {{
  const ok = [...document.images].every(i => i.complete && i.naturalWidth > 0);
  document.body.setAttribute("data-images-ok", String(ok));
  document.body.setAttribute("data-image-count", String(document.images.length));
}});
</script>
</body></html>
"""
    out = Path(settings.reports_dir) / dt / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
