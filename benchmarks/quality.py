"""Learning correctness on the synthetic world: do the models find the planted structure?

Method. A bundle from `samples_bundle.py` (the quality world's from `quality_world.py`, or
the demo world's: training days, the last one for validation, the next day for evaluation).
Every model trains with its full config in configs/models/, early stopping on validation
AUC, for each seed; the evaluation day is scored with AUC, impression-weighted GAUC, and
GAUC of low-activity users. The world's true click probabilities give the ceiling (oracle
AUC). The paper claims checked:
- sequence models beat DNN (AUC);
- TIN beats DIN (AUC), since the world plants a time-decayed sequence effect;
- ChoirRec beats DIN on the GAUC of low-activity users (planted group x category affinity);
- the best model's AUC is within 0.01 of the oracle AUC (`best_auc_gap_to_oracle`).

    python benchmarks/quality.py --bundle benchmarks/data/quality.npz \
        --output benchmarks/results/quality.json [--seeds 0,1,2 --epochs 6]
    python benchmarks/quality.py --merge part1.json,part2.json --output merged.json

`--without f1,f2` blanks categorical fields to padding in every split: an ablation of what
those inputs add, on the same rows and seeds. `--merge` combines runs made apart (one
process per seed, `gpu_quality.sh`) after checking that they scored the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from samples_bundle import load  # noqa: E402

from choirflow.evaluate import metrics  # noqa: E402
from choirflow.models import build_model  # noqa: E402
from choirflow.train.data import CATEGORICAL_FIELDS, PAD, EncodedSamples  # noqa: E402
from choirflow.train.loop import load_model_config, pick_device, predict, train  # noqa: E402

MODELS = ("dnn", "din", "tin", "qin", "transformer_dcn", "choirrec")


def evaluate(labels, scores, users, buckets) -> dict[str, float]:
    low = buckets == "low"
    return {
        "auc": metrics.auc(labels, scores),
        "gauc": metrics.gauc_impression_weighted(labels, scores, users),
        "gauc_low": metrics.gauc_impression_weighted(labels[low], scores[low], users[low]),
        "logloss": metrics.logloss(labels, scores),
    }


def paired_gain(runs: dict[str, list[dict]], a: str, b: str, key: str) -> dict:
    """Mean per-seed gain of model a over model b (same seed, same data) with a percentile
    bootstrap interval over seeds: a claim "holds" only when the whole interval is above 0,
    so a gain smaller than the seed-to-seed noise is not reported as a win."""
    by_seed = {r["seed"]: r[key] for r in runs[b]}
    gains = np.array([r[key] - by_seed[r["seed"]] for r in runs[a] if r["seed"] in by_seed])
    rng = np.random.default_rng(0)
    means = rng.choice(gains, size=(10_000, len(gains))).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": round(float(gains.mean()), 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "seeds": len(gains),
        "holds": bool(low > 0),
    }


def summarize(runs: dict[str, list[dict]], oracle: dict, without: list[str]) -> dict:
    """Means over seeds, the claims and the paired gains of every model's runs."""

    def mean(name: str, key: str) -> float:
        return float(np.mean([r[key] for r in runs[name]]))

    summary = {
        name: {k: round(mean(name, k), 4) for k in ("auc", "gauc", "gauc_low", "logloss")}
        | {"auc_std": round(float(np.std([r["auc"] for r in runs[name]])), 4)}
        | ({"valid_auc": round(mean(name, "valid_auc"), 4)} if "valid_auc" in runs[name][0] else {})
        for name in runs
    }
    best = max(summary, key=lambda n: summary[n]["auc"])
    sequence_models = [n for n in runs if n != "dnn"]
    claims = {}
    if "dnn" in runs and sequence_models:
        claims["sequence_models_beat_dnn"] = all(
            summary[n]["auc"] > summary["dnn"]["auc"] for n in sequence_models
        )
    if {"tin", "din"} <= set(runs):
        claims["tin_beats_din_auc"] = summary["tin"]["auc"] > summary["din"]["auc"]
    if {"choirrec", "din"} <= set(runs):
        claims["choirrec_beats_din_gauc_low"] = (
            summary["choirrec"]["gauc_low"] > summary["din"]["gauc_low"]
        )
    if {"awmoe", "din"} <= set(runs):
        claims["awmoe_beats_din_gauc_low"] = (
            summary["awmoe"]["gauc_low"] > summary["din"]["gauc_low"]
        )
    if {"lightsuan_distilled", "lightsuan"} <= set(runs):
        claims["distilled_lightsuan_beats_lightsuan_auc"] = (
            summary["lightsuan_distilled"]["auc"] > summary["lightsuan"]["auc"]
        )
    pairs = [("tin", "din", "auc"), ("choirrec", "din", "gauc_low")]
    pairs += [
        ("awmoe", "din", "gauc_low"),
        ("awmoe", "awmoe_no_cl", "gauc_low"),
        ("awmoe", "awmoe_no_cl", "auc"),
        ("lightsuan_distilled", "lightsuan", "auc"),
    ]
    pairs += [(name, "dnn", "auc") for name in sequence_models]
    paired = {
        f"{a}_minus_{b}_{key}": paired_gain(runs, a, b, key)
        for a, b, key in pairs
        if {a, b} <= set(runs)
    }
    gap = round(oracle["auc"] - summary[best]["auc"], 4)
    claims["best_within_0.01_of_oracle"] = gap <= 0.01
    return {
        "without_fields": without,
        "oracle": {k: round(v, 4) for k, v in oracle.items()},
        "summary": summary,
        "best_model": best,
        "best_auc_gap_to_oracle": gap,
        "claims": claims,
        "paired": paired,
        "runs": runs,
    }


def last_days(bundle: str, train: EncodedSamples, k: int) -> EncodedSamples:
    """The training rows of the last k training days (the bundle's `train.dt`)."""
    from dataclasses import replace

    day = np.load(bundle)["train.dt"]
    keep = np.isin(day, sorted(set(day))[-k:])

    def cut(value):
        if isinstance(value, dict):
            return {name: array[keep] for name, array in value.items()}
        return None if value is None else value[keep]

    return replace(train, **{f: cut(getattr(train, f)) for f in train.__dataclass_fields__})


def merge(paths: list[str], output: str) -> None:
    """One result file from runs made apart (e.g. one process per seed on one GPU). Parts
    must have scored the same rows against the same oracle; a part that cannot be read (a
    process killed while writing) is left out with a message."""
    parts: dict[str, dict] = {}
    for path in paths:
        try:
            parts[path] = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"[merge] {path} left out: {err}", file=sys.stderr)
    if not parts:
        raise SystemExit("[merge] no part could be read")
    first_path, first = next(iter(parts.items()))
    for key in ("data", "oracle", "without_fields"):
        differing = [path for path, part in parts.items() if part[key] != first[key]]
        if differing:
            raise SystemExit(f"[merge] {differing} differ from {first_path} in {key!r}")
    runs: dict[str, list[dict]] = {}
    for part in parts.values():
        for name, rows in part["runs"].items():
            runs.setdefault(name, []).extend(rows)
    for name, rows in runs.items():
        seeds = [r["seed"] for r in rows]
        if len(seeds) != len(set(seeds)):
            raise SystemExit(f"[merge] {name} has a seed twice: {sorted(seeds)}")
        rows.sort(key=lambda r: r["seed"])
    results = summarize(runs, first["oracle"], first["without_fields"])
    results.update(
        machine=first["machine"],
        command=f"python benchmarks/quality.py --merge {','.join(parts)} --output {output}",
        parts=[part["command"] for part in parts.values()],
        data=first["data"],
    )
    _write_json(output, results)


def _write_json(path: str, results: dict) -> None:
    """Whole or not at all: a process killed mid-write leaves the previous file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="samples bundle (not needed with --merge)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0, help="Adam's L2 term")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", required=True, help="result file (JSON)")
    parser.add_argument(
        "--without", default="", help="categorical fields blanked to padding everywhere (ablation)"
    )
    parser.add_argument("--merge", default="", help="result files to combine into --output")
    parser.add_argument(
        "--train-days", type=int, default=0, help="train on the last K training days only"
    )
    parser.add_argument(
        "--params", default="", help="model parameter overrides, k=v[,k=v] (YAML values)"
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge.split(","), args.output)
        return
    if not args.bundle:
        parser.error("--bundle is needed to train")
    os.environ.setdefault("TQDM_DISABLE", "1")
    splits, sizes, vectors, p_click, meta = load(args.bundle)
    without = [name for name in args.without.split(",") if name]
    for name in without:
        column = CATEGORICAL_FIELDS.index(name)  # an unknown name fails here, before training
        for split in splits.values():
            split.categorical[:, column] = PAD  # the padding row is zero and never trained
    if args.train_days:
        splits["train"] = last_days(args.bundle, splits["train"], args.train_days)
    overrides = {
        k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.params.split(",") if kv)
    }
    device = pick_device(args.device)
    ev = splits["eval"]
    known = ~np.isnan(p_click)
    oracle = evaluate(ev.click[known], p_click[known], ev.users[known], ev.activity_bucket[known])
    runs: dict[str, list[dict]] = {}

    def write() -> dict:  # after every model: a run cut short keeps the models it finished
        results = summarize(runs, oracle, without)
        results.update(
            machine=f"{platform.machine()}, {os.cpu_count()} cores, "
            + (torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"),
            command="python benchmarks/quality.py " + " ".join(sys.argv[1:]),
            data=meta,
        )
        _write_json(args.output, results)
        return results

    for name in args.models.split(","):
        cfg = load_model_config(name)
        for seed in (int(s) for s in args.seeds.split(",")):
            torch.manual_seed(seed)
            model = build_model(cfg.model, sizes, vectors, **(cfg.params | overrides))
            start = time.perf_counter()
            result = train(
                model, splits["train"], epochs=args.epochs, batch_size=args.batch_size,
                learning_rate=args.learning_rate, seed=seed, device=device, progress=False,
                valid=splits["valid"], patience=2, weight_decay=args.weight_decay,
            )  # fmt: skip
            scores = predict(model, ev, device)
            row = evaluate(ev.click, scores, ev.users, ev.activity_bucket)
            row.update(
                seed=seed,
                best_epoch=result.best_epoch,
                valid_auc=max(result.valid_aucs, default=float("nan")),
                seconds=round(time.perf_counter() - start, 1),
                samples_per_s=round(result.samples_per_second),
            )
            runs.setdefault(name, []).append(row)
            print(
                name,
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )
        results = write()
    print(
        json.dumps(
            {
                k: results[k]
                for k in ("oracle", "summary", "best_auc_gap_to_oracle", "claims", "paired")
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
