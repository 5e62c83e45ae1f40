"""Training throughput and peak memory of every model, on CPU here (CUDA where present).

Batches have the shapes of gold.samples (the categorical fields, sequences of length 50,
128-d frozen item vectors); values are random, which does not change the cost of a step.
Each model uses its full config from configs/models/. Figures go to benchmarks/results/train.json.

    .venv/bin/python benchmarks/train.py [--rows 20000 --batch-size 1024 --epochs 1]
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
import pandas as pd
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from choirflow.models import BUILDERS, build_model  # noqa: E402
from choirflow.train.data import CATEGORICAL_FIELDS, Vocabulary, encode  # noqa: E402
from choirflow.train.loop import load_model_config, pick_device, train  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "train.json"


def synthetic_frame(rows: int, items: int, seq_len: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f: rng.integers(0, 50, rows).astype(str) for f in CATEGORICAL_FIELDS})
    frame["item_id"] = rng.integers(0, items, rows).astype(str)
    lengths = rng.integers(0, seq_len + 1, rows)
    frame["hist_item_ids"] = [rng.integers(0, items, n).astype(str) for n in lengths]
    frame["hist_categories"] = [rng.integers(0, 50, n).astype(str) for n in lengths]
    frame["hist_gap_seconds"] = [rng.exponential(3600 * 24, n) for n in lengths]
    frame["click"] = rng.integers(0, 2, rows)
    frame["conversion"] = 0
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models", default=",".join(sorted(BUILDERS)))
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    device = pick_device("auto")
    frame = synthetic_frame(args.rows, args.items, 50)
    vocab = Vocabulary.fit(frame)
    data = encode(frame, vocab, 50)
    vectors = torch.randn(vocab.size("item_id"), 128)
    process = psutil.Process()
    results = {}
    for name in args.models.split(","):
        cfg = load_model_config(name)
        torch.manual_seed(0)
        model = build_model(name, {k: vocab.size(k) for k in vocab.values}, vectors, **cfg.params)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rss_before = process.memory_info().rss
        t0 = time.perf_counter()
        result = train(
            model, data, epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3,
            seed=0, device=device, progress=False,
        )  # fmt: skip
        results[name] = {
            "samples_per_s": round(result.samples_per_second),
            "seconds": round(time.perf_counter() - t0, 2),
            "trainable_params": params,
            "rss_gib_after": round(process.memory_info().rss / 2**30, 2),
            "rss_growth_gib": round((process.memory_info().rss - rss_before) / 2**30, 3),
            "cuda_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if device.type == "cuda"
            else None,
        }
        print(name, json.dumps(results[name]), flush=True)
    out = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, device {device}",
        "torch": torch.__version__,
        "command": "python benchmarks/train.py " + " ".join(sys.argv[1:]),
        "rows": args.rows,
        "batch_size": args.batch_size,
        "models": results,
        "din_vs_fuxictr_ratio": None,  # FuxiCTR's DIN not measured yet: see benchmarks/README.md
    }
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
