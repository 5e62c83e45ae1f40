"""Serving latency and throughput of exported models (torch.export programs with their spec).

Method. From a warehouse the daily pipeline built (the quality world's, `quality_world.py`),
each model trains one epoch on the day before the evaluation day (full config: the weights
do not change the cost, the widths do), is exported as the daily promotion exports the
champion (`serving.export`), and is loaded back with `ServedModel` (torch only). Then:
- a request: one user's row of the evaluation day with 100 candidates (the item-side fields of
  100 other rows); p50 and p99 over `--requests` requests, end to end (raw values -> spec
  encoding -> program -> probabilities) and the program alone on the request's tensors;
- batch throughput: the whole evaluation day in batches of 4,096 raw rows, end to end and
  the program alone (samples/s).
The parity of each export (max |served - trained| over the evaluation day) is recorded too.

    .venv/bin/python benchmarks/serving.py --work /tmp/quality-world \
        --output benchmarks/results/serving.json [--models din,lightsuan]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MODELS = ("dnn", "din", "tin", "qin", "transformer_dcn", "choirrec", "awmoe", "suan",
          "lightsuan", "lightsuan_distilled")  # fmt: skip
# The fields that change with the candidate inside one request; the rest are the user's and
# the request's.
CANDIDATE_FIELDS = ("item_id", "item_category", "item_top_category", "item_brand",
                    "price_bucket", "views_level", "likes_level", "user_category_ctr_level",
                    "user_category_impressions_level", "position")  # fmt: skip


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}  # fmt: skip


def _requests(rows: list[dict], n: int, candidates: int, seed: int = 0) -> list[list[dict]]:
    """`n` requests: a user row (one with a long history) and `candidates` candidate items."""
    rng = np.random.default_rng(seed)
    lengths = [0 if r["hist_item_ids"] is None else len(r["hist_item_ids"]) for r in rows]
    longest = np.argsort(lengths)[::-1]
    out = []
    for _ in range(n):
        user = rows[longest[int(rng.integers(0, 200))]]
        picks = rng.choice(len(rows), candidates, replace=False)
        out.append([user | {f: rows[i][f] for f in CANDIDATE_FIELDS} for i in picks])
    return out


def measure(served, rows: list[dict], requests: list[list[dict]], batch: int) -> dict:
    for request in requests[:20]:  # warm-up
        served.score(request)
    end_to_end, program = [], []
    for request in requests:
        t0 = time.perf_counter()
        served.score(request)
        end_to_end.append(time.perf_counter() - t0)
        tensors = served.tensors(request)
        t0 = time.perf_counter()
        with torch.no_grad():
            served.program(tensors)
        program.append(time.perf_counter() - t0)
    t_all = t_program = 0.0
    for lo in range(0, len(rows), batch):
        chunk = rows[lo : lo + batch]
        t0 = time.perf_counter()
        tensors = served.tensors(chunk)
        t1 = time.perf_counter()
        with torch.no_grad():
            served.program(tensors)
        t2 = time.perf_counter()
        t_all, t_program = t_all + t2 - t0, t_program + t2 - t1
    return {
        "request_end_to_end": _percentiles(end_to_end),
        "request_program_only": _percentiles(program),
        "batch_samples_per_s_end_to_end": round(len(rows) / t_all),
        "batch_samples_per_s_program_only": round(len(rows) / t_program),
    }


def one_model(name: str, args, settings, vocab, vectors, version, frames) -> dict:
    """Train one epoch, export, load back, check parity, measure."""
    from choirflow.models import build_model
    from choirflow.serving.export import export_model
    from choirflow.serving.spec import ServedModel
    from choirflow.train.data import with_optional_columns
    from choirflow.train.fit import encode_for
    from choirflow.train.loop import load_model_config, predict, train

    train_frame, eval_frame = frames
    cfg = load_model_config(name)
    sizes = {k: vocab.size(k) for k in vocab.values}
    model = build_model(cfg.model, sizes, vectors, **cfg.params)
    t0 = time.perf_counter()
    train(model, encode_for(train_frame, vocab, settings), epochs=1, batch_size=2048,
          learning_rate=3e-3, seed=0, device=torch.device("cpu"), progress=False)  # fmt: skip
    trained_s = time.perf_counter() - t0
    folder = Path(tempfile.mkdtemp(prefix=f"serving-{name}-"))
    example = encode_for(eval_frame.head(2048), vocab, settings)
    export_model(model, vocab, example, folder, {"model": name}, version)
    served = ServedModel.load(folder)
    rows = with_optional_columns(eval_frame)[sorted(served.fields)].to_dict("records")
    trained = predict(model, encode_for(eval_frame, vocab, settings), torch.device("cpu"))
    parity = float(np.abs(served.score(rows) - trained).max())
    requests = _requests(rows, args.requests, args.candidates)
    return {
        "parity_max_abs_diff": parity,
        "train_seconds_one_epoch": round(trained_s, 1),
        "parameters": sum(p.numel() for p in served.program.parameters()),
        **measure(served, rows, requests, args.batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a world folder built by quality_world.py")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/serving.json"))
    args = parser.parse_args()
    os.environ["CHOIRFLOW__PATHS__WAREHOUSE"] = str(Path(args.work) / "warehouse")
    from choirflow.config import load_settings
    from choirflow.spark import get_spark
    from choirflow.tables import GOLD_SAMPLES, read
    from choirflow.train.data import Vocabulary
    from choirflow.train.inputs import load_item_vectors, load_samples

    settings = load_settings()
    spark = get_spark(settings)
    days = sorted(
        r.dt for r in read(spark, GOLD_SAMPLES, settings).select("dt").distinct().collect()
    )
    train_frame, _ = load_samples(spark, settings, [days[-2]])
    eval_frame, _ = load_samples(spark, settings, [days[-1]])
    vocab = Vocabulary.fit(train_frame)
    vectors, version = load_item_vectors(spark, settings, vocab)
    frames = (train_frame, eval_frame)
    results = {}
    for name in args.models.split(","):
        results[name] = one_model(name, args, settings, vocab, vectors, version, frames)
        print(name, json.dumps(results[name]), flush=True)
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "eval_day": days[-1], "eval_rows": len(eval_frame), "candidates": args.candidates,
        "requests": args.requests, "batch": args.batch, "models": results,
        "command": "python benchmarks/serving.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    Path(args.output).write_text(json.dumps(out, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
