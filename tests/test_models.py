"""Model parts and a real training run of every model on the tiny world."""

import numpy as np
import pandas as pd
import pytest
import torch

from choirflow.evaluate import metrics
from choirflow.models import BUILDERS, build_model
from choirflow.train.data import CATEGORICAL_FIELDS, Vocabulary, _right_aligned, encode
from choirflow.train.loop import load_model_config, predict, train


@pytest.mark.unit
def test_sequences_are_right_aligned_and_truncated_to_the_most_recent():
    flat = np.array([1, 2, 3, 4, 5, 6])
    out = _right_aligned(flat, np.array([2, 0, 4]), 3, np.int64)
    np.testing.assert_array_equal(out, [[0, 1, 2], [0, 0, 0], [4, 5, 6]])


def _toy_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.integers(0, 5, n).astype(str) for name in CATEGORICAL_FIELDS})
    frame["hist_item_ids"] = [
        list(rng.integers(0, 5, rng.integers(0, 4)).astype(str)) for _ in range(n)
    ]
    frame["hist_categories"] = [list(map(str, h)) for h in frame["hist_item_ids"]]
    frame["hist_gap_seconds"] = [list(rng.random(len(h)) * 1e4) for h in frame["hist_item_ids"]]
    frame["click"] = (frame["item_id"].isin(["1", "2"])).astype(int)
    frame["conversion"] = 0
    return frame


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_padding_and_batch_order_do_not_change_scores(name):
    frame = _toy_frame(64)
    vocab = Vocabulary.fit(frame)
    cfg = load_model_config(f"{name}_test")
    model = build_model(name, {k: vocab.size(k) for k in vocab.values}, **cfg.params)
    short, long_ = encode(frame, vocab, 4), encode(frame, vocab, 9)
    device = torch.device("cpu")
    a, b = predict(model, short, device), predict(model, long_, device)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    perm = np.random.default_rng(1).permutation(len(frame))
    c = predict(model, encode(frame.iloc[perm].reset_index(drop=True), vocab, 4), device)
    np.testing.assert_allclose(a[perm], c, rtol=1e-5, atol=1e-6)


@pytest.mark.spark
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_model_learns_on_the_tiny_world(name, built, spark, settings, days):
    from choirflow.pipeline import load_samples

    train_frame, _ = load_samples(spark, settings, days[:2])
    eval_frame, _ = load_samples(spark, settings, days[2:3])
    vocab = Vocabulary.fit(train_frame)
    cfg = load_model_config(f"{name}_test")
    model = build_model(name, {k: vocab.size(k) for k in vocab.values}, **cfg.params)
    data = encode(train_frame, vocab, settings.features.max_seq_len)
    result = train(model, data, seed=1, device=torch.device("cpu"), progress=False, **cfg.train)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.05
    held_out = encode(eval_frame, vocab, settings.features.max_seq_len)
    scores = predict(model, held_out, torch.device("cpu"))
    assert metrics.auc(held_out.click, scores) > 0.56
