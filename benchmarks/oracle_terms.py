"""Which planted terms of the true click logit does a trained model capture?

The world's click logit is a sum of named terms (user interest x item content, the decayed
sequence term, group x category affinity, item bias, position). A model's logit on the
evaluation day is regressed on those terms (least squares, position as dummies): a
coefficient of 1 means the term is fully captured at its true scale, 0 not at all; the
partial correlation says how closely the model follows a term once the others are held
fixed. "oracle without" is the oracle AUC with one term removed: what that term is worth.
Points at the term to work on when a model falls short of the oracle.

    .venv/bin/python benchmarks/oracle_terms.py --work /tmp/quality-world \
        --bundle benchmarks/data/quality.npz --models dnn,din,tin
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def planted_terms(world_dir: Path, event_ids: pd.Series) -> tuple[pd.DataFrame, np.ndarray]:
    """Each evaluation row's logit terms at their true weights, and its position."""
    truth = pd.read_parquet(world_dir / "oracle" / "impressions.parquet").set_index("event_id")
    rows = truth.loc[event_ids]
    cfg = json.loads((world_dir / "world.json").read_text())["config"]
    terms = pd.DataFrame(
        {
            "interest": cfg["w_interest"] * rows["interest_term"].to_numpy(),
            "sequence": cfg["w_sequence"] * rows["sequence_term"].to_numpy(),
            "affinity": cfg["w_affinity"] * rows["affinity_term"].to_numpy(),
            "item_bias": rows["item_bias"].to_numpy(),
        }
    )
    return terms, rows["position"].to_numpy().astype(int)


def _residual(target: np.ndarray, design: np.ndarray) -> np.ndarray:
    return target - design @ np.linalg.lstsq(design, target, rcond=None)[0]


def captured(logit: np.ndarray, terms: pd.DataFrame, position: np.ndarray) -> dict:
    """Coefficients and partial correlations of a model's logit on the planted terms."""
    dummies = (position[:, None] == np.unique(position)[None, 1:]).astype(float)
    fixed = np.column_stack([dummies, np.ones(len(logit))])
    design = np.column_stack([terms.to_numpy(), fixed])
    coef = np.linalg.lstsq(design, logit, rcond=None)[0]
    explained = 1 - (logit - design @ coef).var() / logit.var()
    partial = {}
    for name in terms.columns:
        others = np.column_stack([terms.drop(columns=name).to_numpy(), fixed])
        a, b = _residual(logit, others), _residual(terms[name].to_numpy(), others)
        partial[name] = round(float(np.corrcoef(a, b)[0, 1]), 3)
    term_coef = coef[: terms.shape[1]]  # the rest belong to position and the intercept
    pairs = zip(terms.columns, term_coef, strict=True)
    return {
        "coefficient": {n: round(float(c), 3) for n, c in pairs},
        "partial_correlation": partial,
        "variance_explained_by_terms": round(float(explained), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="the world folder of quality_world.py")
    parser.add_argument("--bundle", required=True, help="its bundle")
    parser.add_argument("--models", default="dnn,din,tin")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/oracle_terms.json"))
    args = parser.parse_args()
    work = Path(args.work)
    os.environ["CHOIRFLOW__PATHS__RAW"] = str(work / "raw")
    os.environ["CHOIRFLOW__PATHS__WAREHOUSE"] = str(work / "warehouse")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    from samples_bundle import load
    from sklearn.metrics import roc_auc_score

    from choirflow.config import load_settings
    from choirflow.models import build_model
    from choirflow.spark import get_spark
    from choirflow.train.inputs import load_samples
    from choirflow.train.loop import load_model_config, predict, train

    splits, sizes, vectors, p_click, meta = load(args.bundle)
    settings = load_settings()
    eval_frame, _ = load_samples(get_spark(settings), settings, [meta["eval_day"]])
    if not np.array_equal(eval_frame["click"].to_numpy(), splits["eval"].click):
        raise SystemExit("the warehouse's evaluation rows are not the bundle's")
    terms, position = planted_terms(work, eval_frame["event_id"])
    y = splits["eval"].click
    oracle_logit = np.log(p_click / (1 - p_click))
    result = {
        "command": "python benchmarks/oracle_terms.py " + " ".join(sys.argv[1:]),
        "oracle_auc": round(float(roc_auc_score(y, p_click)), 4),
        "oracle_auc_without": {
            n: round(float(roc_auc_score(y, oracle_logit - terms[n].to_numpy())), 4)
            for n in terms.columns
        },
        "models": {},
    }
    cpu = torch.device("cpu")
    for name in args.models.split(","):
        cfg = load_model_config(name)
        torch.manual_seed(0)
        model = build_model(cfg.model, sizes, vectors, **cfg.params)
        train(
            model, splits["train"], epochs=args.epochs, batch_size=2048, learning_rate=3e-3,
            seed=0, device=cpu, progress=False, valid=splits["valid"], patience=1,
        )  # fmt: skip
        scores = np.clip(predict(model, splits["eval"], cpu), 1e-6, 1 - 1e-6)
        row = {"auc": round(float(roc_auc_score(y, scores)), 4)}
        row |= captured(np.log(scores / (1 - scores)), terms, position)
        result["models"][name] = row
        print(name, json.dumps(row), flush=True)
    print(json.dumps(result["oracle_auc_without"]))
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
