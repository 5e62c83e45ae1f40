"""Training throughput and peak memory of every model, and our DIN against FuxiCTR's DIN.

Method. Samples from a bundle (`samples_bundle.py`: gold.samples of the demo world, encoded
once) or, without one, random rows of the same shapes. Each model trains with its full config
in configs/models/ for `--epochs` epochs at `--batch-size`; the figure is training samples per
second of the loop alone (batches are slices of tensors already on the device), with the
peak memory (CUDA: max allocated; CPU: resident set growth) and the validation AUC.
The peer: FuxiCTR's DIN (benchmarks/fuxictr_peer.py, in FuxiCTR's own environment) on the same
training rows, batch size, embedding width, attention and MLP sizes, activation and epochs,
in the same run. Ours runs twice for it: `din` (with the frozen item vectors, as the daily
pipeline trains it) and `din_ids` (the same id features as the peer); the ratio uses `din_ids`.

    .venv/bin/python benchmarks/train.py --bundle benchmarks/data/demo.npz \
        [--fuxictr-python .cache/fuxictr-venv/bin/python] [--models din,tin] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from choirflow.evaluate.metrics import auc  # noqa: E402
from choirflow.models import BUILDERS, build_model  # noqa: E402
from choirflow.train.data import (  # noqa: E402
    CATEGORICAL_FIELDS,
    DENSE_FIELDS,
    GROUP_FIELDS,
    GROUP_SEQ_LEN,
    EncodedSamples,
)
from choirflow.train.loop import load_model_config, pick_device, predict, train  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "train.json"


def random_samples(rows: int, vocab: int, items: int, seq_len: int, seed: int) -> EncodedSamples:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, seq_len + 1, rows)
    mask = np.arange(seq_len)[None, :] >= seq_len - lengths[:, None]
    categorical = rng.integers(2, vocab, (rows, len(CATEGORICAL_FIELDS)))
    categorical[:, CATEGORICAL_FIELDS.index("item_id")] = rng.integers(2, items, rows)
    click = (rng.random(rows) < 1 / (1 + np.exp(-(categorical[:, 0] % 7 - 3.0)))).astype(np.float32)
    return EncodedSamples(
        categorical=categorical,
        sequences={
            "hist_item_ids": np.where(mask, rng.integers(2, items, (rows, seq_len)), 0),
            "hist_categories": np.where(mask, rng.integers(2, vocab, (rows, seq_len)), 0),
            "group_hist_categories": rng.integers(0, vocab, (rows, GROUP_SEQ_LEN)),
            "group_hist_top_categories": rng.integers(0, vocab, (rows, GROUP_SEQ_LEN)),
        },
        gaps_hours=np.where(mask, rng.exponential(24, (rows, seq_len)), 0).astype(np.float32),
        click=click,
        conversion=np.zeros(rows, dtype=np.float32),
        users=rng.integers(0, rows // 10 + 1, rows).astype(str).astype(object),
        activity_bucket=np.array(["low"] * rows, dtype=object),
        group=rng.integers(2, vocab, (rows, len(GROUP_FIELDS))),
        dense=rng.random((rows, len(DENSE_FIELDS) + 1)).astype(np.float32),
    )


def load_data(args) -> tuple[dict[str, EncodedSamples], dict[str, int], torch.Tensor | None]:
    if args.bundle:
        from samples_bundle import load

        splits, sizes, vectors, _, _ = load(args.bundle)
        return splits, sizes, vectors
    data = {
        "train": random_samples(args.rows, 50, args.items, 50, seed=0),
        "valid": random_samples(args.rows // 4, 50, args.items, 50, seed=1),
    }
    sizes = {name: 50 for name in (*CATEGORICAL_FIELDS, *GROUP_FIELDS)} | {"item_id": args.items}
    return data, sizes, torch.randn(args.items, 128)


def peer_npz(data: dict[str, EncodedSamples], sizes: dict[str, int], path: Path) -> None:
    """The same training and validation rows in the layout fuxictr_peer.py reads."""
    train_rows, valid_rows = data["train"], data["valid"]
    both = {
        "split": np.r_[np.zeros(len(train_rows), np.int8), np.ones(len(valid_rows), np.int8)],
        "click": np.r_[train_rows.click, valid_rows.click],
        "fields": np.array(CATEGORICAL_FIELDS),
    }
    for i, name in enumerate(CATEGORICAL_FIELDS):
        both[name] = np.r_[train_rows.categorical[:, i], valid_rows.categorical[:, i]]
        both[f"vocab_{name}"] = np.array(sizes[name])
    for seq in ("hist_item_ids", "hist_categories"):
        both[seq] = np.r_[train_rows.sequences[seq], valid_rows.sequences[seq]]
    np.savez(path, **both)


def measure(name, cfg_name, data, sizes, vectors, device, args) -> dict:
    cfg = load_model_config(cfg_name)
    torch.manual_seed(0)
    model = build_model(cfg.model, sizes, vectors, **cfg.params)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train(
        model, data["train"], epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=1e-3, seed=0, device=device, progress=False,
    )  # fmt: skip
    scores = predict(model, data["valid"], device)
    return {
        "samples_per_s": round(result.samples_per_second),
        "seconds": round(result.seconds, 2),
        "valid_auc": round(auc(data["valid"].click, scores), 4),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)
        if device.type == "cuda"
        else round((process.memory_info().rss - rss_before) / 2**30, 3),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "CPU RSS growth",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="")
    parser.add_argument("--rows", type=int, default=20000, help="random rows without a bundle")
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models", default=",".join(sorted(BUILDERS)))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fuxictr-python", default=os.environ.get("FUXICTR_PYTHON", ""))
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    device = pick_device(args.device)
    data, sizes, vectors = load_data(args)
    results: dict[str, dict] = {}
    for name in args.models.split(","):
        results[name] = measure(name, name, data, sizes, vectors, device, args)
        print(name, json.dumps(results[name]), flush=True)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, "
        + (torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"),
        "torch": torch.__version__,
        "command": "python benchmarks/train.py " + " ".join(sys.argv[1:]),
        "data": args.bundle or f"random {args.rows} rows",
        "train_rows": len(data["train"]),
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "models": results,
        "din_vs_fuxictr_ratio": None,
    }
    if args.fuxictr_python:
        results["din_ids"] = measure("din_ids", "din", data, sizes, None, device, args)
        print("din_ids", json.dumps(results["din_ids"]), flush=True)
        din = load_model_config("din").params
        with tempfile.TemporaryDirectory() as tmp:
            npz, peer_out = Path(tmp) / "peer.npz", Path(tmp) / "peer.json"
            peer_npz(data, sizes, npz)
            command = [
                args.fuxictr_python, str(ROOT / "benchmarks" / "fuxictr_peer.py"),
                "--npz", str(npz), "--out", str(peer_out), "--batch-size", str(args.batch_size),
                "--epochs", str(args.epochs), "--embedding-dim", str(din["embedding_dim"]),
                "--attention-hidden", ",".join(map(str, din["attention_hidden"])),
                "--dnn-hidden", ",".join(map(str, din["dnn_hidden"])), "--activation", "Dice",
                "--gpu", "0" if device.type == "cuda" else "-1",
            ]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, check=True)
            peer = json.loads(peer_out.read_text())
            peer["wall_seconds"] = round(time.perf_counter() - start, 1)
        out["fuxictr_din"] = peer
        out["din_vs_fuxictr_ratio"] = round(
            results["din_ids"]["samples_per_s"] / peer["samples_per_s"], 2
        )
        out["din_vs_fuxictr_auc_gap"] = round(
            results["din_ids"]["valid_auc"] - peer["valid_auc"], 4
        )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
