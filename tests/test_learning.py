"""The papers' claims as robust tests: each plants one effect that only one model family can
see, strongly enough that the ordering cannot flip by seed. (The same claims on the demo
world, with its weaker mixed effects, are measured in benchmarks/quality.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from choirflow.evaluate import metrics
from choirflow.models import build_model
from choirflow.train.data import CATEGORICAL_FIELDS, Vocabulary, encode
from choirflow.train.loop import load_model_config, predict, train

pytestmark = pytest.mark.unit
CPU = torch.device("cpu")
ITEMS = [f"i{k}" for k in range(24)]


def _base(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Noise fields; the test sets what carries the signal."""
    frame = pd.DataFrame({f: rng.integers(0, 3, n).astype(str) for f in CATEGORICAL_FIELDS})
    frame["user_id"] = [f"u{k}" for k in rng.integers(0, 10**9, n)]  # cold users
    frame["item_id"] = rng.choice(ITEMS, n)
    frame["item_category"] = frame["item_id"].map(lambda i: f"c{int(i[1:]) % 4}")
    frame["hist_item_ids"] = [[] for _ in range(n)]
    frame["hist_gap_seconds"] = [[] for _ in range(n)]
    frame["activity_bucket"] = "low"
    frame["conversion"] = 0
    return frame


def _with_history(frame: pd.DataFrame) -> pd.DataFrame:
    frame["hist_categories"] = [[f"c{int(i[1:]) % 4}" for i in h] for h in frame["hist_item_ids"]]
    return frame


def _auc(name: str, train_frame: pd.DataFrame, test_frame: pd.DataFrame, epochs: int = 6) -> float:
    vocab = Vocabulary.fit(train_frame)
    cfg = load_model_config(f"{name}_test")
    torch.manual_seed(0)
    model = build_model(name, {k: vocab.size(k) for k in vocab.values}, **cfg.params)
    opts = {**cfg.train, "epochs": epochs, "learning_rate": 0.01}
    train(model, encode(train_frame, vocab, 8), seed=0, device=CPU, progress=False, **opts)
    held_out = encode(test_frame, vocab, 8)
    return metrics.auc(held_out.click, predict(model, held_out, CPU))


def _sequence_world(n: int, seed: int) -> pd.DataFrame:
    """Click if the candidate was clicked before: only a model reading the history can tell."""
    rng = np.random.default_rng(seed)
    frame = _base(n, rng)
    seen = rng.random(n) < 0.5
    histories = []
    for target, hit in zip(frame["item_id"], seen, strict=True):
        others = [i for i in rng.choice(ITEMS, 4) if i != target]
        histories.append(others + [target] if hit else others)
    frame["hist_item_ids"] = histories
    frame["hist_gap_seconds"] = [list(rng.uniform(60, 86400, len(h))) for h in histories]
    frame["click"] = (rng.random(n) < np.where(seen, 0.8, 0.1)).astype(int)
    return _with_history(frame)


def _decay_world(n: int, seed: int) -> pd.DataFrame:
    """The candidate is always in the history once; a click follows only when that past click
    was recent. Same items, same positions: only the time gaps separate the classes."""
    rng = np.random.default_rng(seed)
    frame = _base(n, rng)
    recent = rng.random(n) < 0.5
    histories, gaps = [], []
    for target, fresh in zip(frame["item_id"], recent, strict=True):
        items = [i for i in rng.choice(ITEMS, 4) if i != target]
        at = rng.integers(0, len(items) + 1)
        items.insert(at, target)
        gap = list(rng.uniform(3600 * 48, 3600 * 24 * 30, len(items)))
        gap[at] = rng.uniform(30, 1800) if fresh else rng.uniform(3600 * 24 * 7, 3600 * 24 * 30)
        histories.append(items)
        gaps.append(gap)
    frame["hist_item_ids"], frame["hist_gap_seconds"] = histories, gaps
    frame["click"] = (rng.random(n) < np.where(recent, 0.8, 0.1)).astype(int)
    return _with_history(frame)


def _group_world(n: int, seed: int) -> pd.DataFrame:
    """Cold, low-activity users without history; each semantic group favours one category."""
    rng = np.random.default_rng(seed)
    frame = _with_history(_base(n, rng))
    users = rng.integers(0, n // 5, n)  # about 5 impressions per user: low activity
    frame["user_id"] = [f"u{seed}-{u}" for u in users]  # the test users are new
    group = users % 4
    frame["group_c1"] = [f"{g}" for g in group]
    frame["group_c2"] = [f"{g}-0" for g in group]
    frame["group_c3"] = [f"{g}-0-0" for g in group]
    frame["group_id"] = frame["group_c2"]
    favourite = frame["item_category"] == [f"c{g}" for g in group]
    frame["click"] = (rng.random(n) < np.where(favourite, 0.7, 0.1)).astype(int)
    return frame


def test_a_sequence_model_beats_dnn_when_the_history_decides():
    train_frame, test_frame = _sequence_world(3000, 0), _sequence_world(1000, 1)
    din, dnn = _auc("din", train_frame, test_frame), _auc("dnn", train_frame, test_frame)
    assert din > 0.7 and din > dnn + 0.1, (din, dnn)


def test_tin_beats_din_when_the_effect_decays_with_time():
    train_frame, test_frame = _decay_world(3000, 0), _decay_world(1000, 1)
    tin, din = _auc("tin", train_frame, test_frame), _auc("din", train_frame, test_frame)
    assert tin > 0.7 and tin > din + 0.1, (tin, din)


def test_choirrec_beats_din_for_cold_low_activity_users_with_planted_groups():
    train_frame, test_frame = _group_world(3000, 0), _group_world(1000, 1)
    # Both get enough steps for an interaction of two fields to form.
    choirrec = _auc("choirrec", train_frame, test_frame, epochs=15)
    din = _auc("din", train_frame, test_frame, epochs=15)
    assert choirrec > 0.7 and choirrec > din + 0.1, (choirrec, din)
