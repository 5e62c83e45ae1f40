"""A portable bundle of encoded samples: the arrays the trainer reads, in one compressed npz.

`export` (needs Spark) reads gold.samples and silver.item_embeddings from a warehouse the way
the daily run does (train window, last training day for validation, next day for evaluation),
encodes them once, adds the world's true click probabilities of the evaluation rows, and
writes the bundle. `load` (numpy + torch only) gives the arrays back, so the training studies
run anywhere torch runs, a GPU machine included.

    .venv/bin/python benchmarks/samples_bundle.py --warehouse DIR --raw DIR --day D --out FILE
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from choirflow.train.data import EncodedSamples  # noqa: E402

SPLITS = ("train", "valid", "eval")


def _flatten(prefix: str, data: EncodedSamples) -> dict[str, np.ndarray]:
    out = {}
    for f in fields(EncodedSamples):
        value = getattr(data, f.name)
        if value is None:
            continue
        if f.name == "sequences":
            for name, arr in value.items():
                out[f"{prefix}.seq.{name}"] = arr.astype(np.int32)
        elif value.dtype == object:
            out[f"{prefix}.{f.name}"] = value.astype(str)
        elif value.dtype == np.int64:
            out[f"{prefix}.{f.name}"] = value.astype(np.int32)
        else:
            out[f"{prefix}.{f.name}"] = value
    return out


def _unflatten(prefix: str, bundle) -> EncodedSamples:
    def get(name):
        key = f"{prefix}.{name}"
        return bundle[key] if key in bundle else None

    sequences = {
        key.split(".", 2)[2]: bundle[key].astype(np.int64)
        for key in bundle.files
        if key.startswith(f"{prefix}.seq.")
    }
    group = get("group")
    return EncodedSamples(
        categorical=get("categorical").astype(np.int64),
        sequences=sequences,
        gaps_hours=get("gaps_hours"),
        click=get("click"),
        conversion=get("conversion"),
        users=get("users").astype(object),
        activity_bucket=get("activity_bucket").astype(object),
        group=None if group is None else group.astype(np.int64),
        dense=get("dense"),
    )


def save(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """An npz that np.load reads, LZMA-compressed: the history gaps (float32) shrink about
    five times more than with savez_compressed's zlib, so a bundle fits what travels to a
    lent GPU machine."""
    import zipfile

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_LZMA) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def load(path: str | Path):
    """-> (splits: dict name -> EncodedSamples, vocab sizes, item vectors or None, p_click of
    the eval rows (NaN where unknown), meta)."""
    import json

    import torch

    bundle = np.load(path)
    splits = {s: _unflatten(s, bundle) for s in SPLITS}
    meta = json.loads(str(bundle["meta"]))
    vectors = torch.from_numpy(bundle["item_vectors"]) if "item_vectors" in bundle else None
    return splits, meta["vocab_sizes"], vectors, bundle["eval_p_click"], meta


def export(warehouse: str, raw: str, day: str, out: str, train_days: int = 7) -> None:
    import json
    import os

    os.environ["CHOIRFLOW__PATHS__WAREHOUSE"] = warehouse
    os.environ["CHOIRFLOW__PATHS__RAW"] = raw
    import pandas as pd

    from choirflow.config import load_settings
    from choirflow.dates import days_before
    from choirflow.spark import get_spark
    from choirflow.train.data import Vocabulary
    from choirflow.train.fit import encode_for
    from choirflow.train.inputs import load_item_vectors, load_samples

    settings = load_settings()
    spark = get_spark(settings)
    window = days_before(day, train_days)
    train_frame, version = load_samples(spark, settings, window)
    eval_frame, _ = load_samples(spark, settings, [day])
    vocab = Vocabulary.fit(train_frame)
    last = train_frame["dt"] == train_frame["dt"].max()
    arrays = {
        **_flatten("train", encode_for(train_frame[~last], vocab, settings)),
        **_flatten("valid", encode_for(train_frame[last], vocab, settings)),
        **_flatten("eval", encode_for(eval_frame, vocab, settings)),
    }
    # Each training row's day, so a study can train on the last k days only.
    arrays["train.dt"] = train_frame.loc[~last, "dt"].to_numpy().astype(str)
    vectors, _ = load_item_vectors(spark, settings, vocab)
    if vectors is not None:
        arrays["item_vectors"] = vectors.numpy()
    oracle = Path(raw).parent / "oracle" / "impressions.parquet"
    p_click = np.full(len(eval_frame), np.nan, dtype=np.float32)
    if oracle.exists():
        truth = pd.read_parquet(oracle, columns=["event_id", "p_click"]).set_index("event_id")
        p_click = eval_frame["event_id"].map(truth["p_click"]).to_numpy(dtype=np.float32)
    arrays["eval_p_click"] = p_click
    meta = {
        "vocab_sizes": {name: vocab.size(name) for name in vocab.values},
        "train_days": window,
        "eval_day": day,
        "gold_samples_version": version,
        "rows": {s: int(len(arrays[f"{s}.click"])) for s in SPLITS},
    }
    arrays["meta"] = np.array(json.dumps(meta))
    save(out, arrays)
    spark.stop()
    print(json.dumps(meta["rows"]), Path(out).stat().st_size // 2**20, "MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--day", required=True, help="the evaluation day")
    parser.add_argument("--train-days", type=int, default=7)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    export(args.warehouse, args.raw, args.day, args.out, args.train_days)
