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


# The models the learning test trained, by name: the serving test exports them (and trains
# its own only when run alone).
_TRAINED: dict[str, tuple[torch.nn.Module, Vocabulary]] = {}


def _train_on_tiny_world(name, spark, settings, days, epochs=None):
    from choirflow.train.inputs import load_samples

    train_frame, _ = load_samples(spark, settings, days[:2])
    vocab = Vocabulary.fit(train_frame)
    cfg = load_model_config(f"{name}_test")
    model = build_model(name, {k: vocab.size(k) for k in vocab.values}, **cfg.params)
    data = encode(train_frame, vocab, settings.features.max_seq_len)
    opts = cfg.train | ({"epochs": epochs} if epochs else {})
    result = train(model, data, seed=1, device=torch.device("cpu"), progress=False, **opts)
    _TRAINED[name] = (model, vocab)
    return model, vocab, result


@pytest.mark.spark
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_model_learns_on_the_tiny_world(name, built, spark, settings, days):
    from choirflow.train.inputs import load_samples

    model, vocab, result = _train_on_tiny_world(name, spark, settings, days)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.05
    eval_frame, _ = load_samples(spark, settings, days[2:3])
    held_out = encode(eval_frame, vocab, settings.features.max_seq_len)
    scores = predict(model, held_out, torch.device("cpu"))
    assert metrics.auc(held_out.click, scores) > 0.56


@pytest.mark.spark
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_model_serves_the_scores_it_was_trained_to_give(
    name, built, spark, settings, days, tmp_path
):
    """The exported program, fed the evaluation day's raw values through the spec, scores
    like the training code (its unseen users and items are out of vocabulary there too)."""
    from choirflow.serving.export import export_model
    from choirflow.serving.spec import ServedModel
    from choirflow.train.data import with_optional_columns
    from choirflow.train.inputs import load_samples

    model, vocab = _TRAINED.get(name) or _train_on_tiny_world(name, spark, settings, days, 1)[:2]
    frame, _ = load_samples(spark, settings, days[2:3])
    encoded = encode(frame, vocab, settings.features.max_seq_len)
    assert (encoded.categorical == 1).any(), "the evaluation day should hold unseen values"
    export_model(model, vocab, encode(frame.head(256), vocab, 50), tmp_path, {"model": name})
    served = ServedModel.load(tmp_path)
    raw = with_optional_columns(frame)[sorted(served.fields)].to_dict("records")
    got, want = served.score(raw), predict(model, encoded, torch.device("cpu"))
    differ = np.flatnonzero(np.abs(got - want) > 1e-5)
    assert not len(differ), pd.DataFrame(
        {"event_id": frame["event_id"].to_numpy()[differ], "served": got[differ],
         "trained": want[differ]}
    ).head(10).to_string()  # fmt: skip


@pytest.mark.unit
def test_the_served_model_refuses_unknown_fields_and_too_wide_sequences(tmp_path):
    from choirflow.serving.export import export_model
    from choirflow.serving.spec import ServedModel, ServingInputError
    from choirflow.train.data import with_optional_columns

    frame = with_optional_columns(_toy_frame(32))
    vocab = Vocabulary.fit(frame)
    model = build_model("din", {k: vocab.size(k) for k in vocab.values},
                        **load_model_config("din_test").params)  # fmt: skip
    export_model(model, vocab, encode(frame, vocab, 4), tmp_path, {"model": "din"})
    served = ServedModel.load(tmp_path)
    good = frame[sorted(served.fields)].to_dict("records")
    assert served.score(good).shape == (32,)
    with pytest.raises(ServingInputError, match="sample 0: unknown field 'colour'"):
        served.score([good[0] | {"colour": "red"}])
    with pytest.raises(ServingInputError, match="field 'hour' is missing"):
        served.score([{k: v for k, v in good[0].items() if k != "hour"}])
    wide = good[0] | {"hist_item_ids": ["1"] * 5, "hist_categories": ["1"] * 5,
                      "hist_gap_seconds": [1.0] * 5}  # fmt: skip
    with pytest.raises(ServingInputError, match="hist_item_ids holds 5 items, wider than .* 4"):
        served.score([wide])
    with pytest.raises(ServingInputError, match="hist_gap_seconds has 0 values for 1 items"):
        served.score([good[0] | {"hist_item_ids": ["1"], "hist_gap_seconds": []}])


@pytest.mark.unit
def test_lightsuan_scores_shared_histories_once_and_alike():
    """Parallel inference: rows of one request share their encoded history; the scores are
    those of encoding every row on its own, and the candidate never changes the history."""
    from choirflow.models.suan import PROFILE_FIELDS

    frame = _toy_frame(48)
    frame[list(PROFILE_FIELDS)] = "1"  # one user, one history: one request of 48 candidates
    frame["hist_item_ids"] = [["1", "2", "3"]] * 48
    frame["hist_categories"] = [["1", "2", "3"]] * 48
    frame["hist_gap_seconds"] = [[300.0, 200.0, 100.0]] * 48
    vocab = Vocabulary.fit(frame)
    cfg = load_model_config("lightsuan_test")
    model = build_model("lightsuan", {k: vocab.size(k) for k in vocab.values}, **cfg.params)
    data = encode(frame, vocab, 6)
    from choirflow.train.loop import to_tensors

    batch = to_tensors(data, torch.device("cpu"))
    rows, inverse = model._shared_rows(batch)
    assert len(rows) == 1 and (inverse == 0).all()
    shared = predict(model, data, torch.device("cpu"))
    model.light = False  # the same weights without sharing (nor the window: 3 < window)
    np.testing.assert_allclose(shared, predict(model, data, torch.device("cpu")), atol=1e-6)


@pytest.mark.unit
def test_awmoe_masked_views_and_contrastive_loss():
    from choirflow.models.awmoe import info_nce, masked_view

    mask = torch.ones(4000, 10, dtype=torch.bool)
    mask[:, :3] = False
    view = masked_view(mask, 0.5, torch.Generator().manual_seed(0))
    assert not view[:, :3].any() and abs(view[:, 3:].float().mean().item() - 0.5) < 0.02
    a = torch.eye(4)
    # At tau 0.5 a matching row scores e^2 against three e^0: log(1 + 3 e^-2) when the rows
    # match, log(e^2 + 3) when every row is paired with another.
    assert info_nce(a, a, 0.5) == pytest.approx(np.log(1 + 3 * np.exp(-2)), abs=1e-5)
    assert info_nce(a, a[[1, 0, 3, 2]], 0.5) == pytest.approx(np.log(np.exp(2) + 3), abs=1e-5)


@pytest.mark.unit
def test_mlp_rejects_an_unknown_activation():
    from choirflow.models.layers import Dice, mlp

    with pytest.raises(ValueError, match="unknown activation 'gelu'.*dice.*relu"):
        mlp(4, (8,), activation="gelu")
    assert isinstance(mlp(4, (8,), activation="dice")[1], Dice)
    assert isinstance(mlp(4, (8,), activation="relu")[1], torch.nn.ReLU)


@pytest.mark.unit
def test_factored_target_attention_equals_the_plain_concatenated_form():
    """The first layer applied to [q, k, q - k, q * k] built in full gives the same scores and
    pooled vector as the factored form the model uses."""
    from choirflow.models.layers import TargetAttention

    torch.manual_seed(0)
    for activation, softmax in (("dice", False), ("relu", True)):
        attention = TargetAttention(6, (8, 4), activation, softmax=softmax).eval()
        query, keys = torch.randn(5, 6), torch.randn(5, 7, 6)
        mask = torch.rand(5, 7) > 0.3
        mask[0] = False  # an empty history pools to zero
        rows, cols = mask.nonzero(as_tuple=True)
        q, k = query[rows], keys[rows, cols]
        plain = attention.score(torch.cat([q, k, q - k, q * k], dim=-1)).squeeze(-1)
        factored = attention._scores(query, rows, k)
        torch.testing.assert_close(factored, plain, rtol=1e-5, atol=1e-6)
        weights = torch.zeros(mask.shape).index_put((rows, cols), plain)
        if softmax:
            weights = weights.masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0)
        expected = torch.einsum("bl,bld->bd", weights * mask, keys)
        torch.testing.assert_close(attention(query, keys, mask), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.unit
def test_cross_net_v2_golden_values():
    """x_{l+1} = x0 * (W x_l + b) + x_l, worked out by hand for W = diag(1, 2), b = (0.5, -1),
    x0 = (1, 2): x1 = (2.5, 8), x2 = (5.5, 38); the low-rank form W = U V^T gives the same."""
    from choirflow.models.layers import CrossNetV2

    full = CrossNetV2(2, num_layers=2, rank=None)
    low = CrossNetV2(2, num_layers=2, rank=2)
    with torch.no_grad():
        for layer in full.maps:
            layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
            layer.bias.copy_(torch.tensor([0.5, -1.0]))
        for down, up in low.maps:
            down.weight.copy_(torch.eye(2))  # V^T
            up.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # U
            up.bias.copy_(torch.tensor([0.5, -1.0]))
    x0 = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(full(x0), torch.tensor([[5.5, 38.0]]))
    torch.testing.assert_close(low(x0), torch.tensor([[5.5, 38.0]]))
    one = CrossNetV2(2, num_layers=1, rank=None)
    one.maps[0].load_state_dict(full.maps[0].state_dict())
    torch.testing.assert_close(one(x0), torch.tensor([[2.5, 8.0]]))


@pytest.mark.unit
def test_choirrec_distillation_gate_and_term_golden_values():
    """Only active users with a confident individual prediction teach, and the term is the
    alpha-weighted squared gap averaged over them (values worked out by hand)."""
    from choirflow.models.choirrec import distillation_gate, distillation_term

    clicks = torch.tensor([0.0, 3.0, 3.0, 10.0, 2.0])
    p_ind = torch.tensor([0.9, 0.55, 0.7, 0.2, 0.95])
    gate = distillation_gate(clicks, p_ind, activity_threshold=2.0, confidence_threshold=0.1)
    assert gate.tolist() == [False, False, True, True, False]
    p_grp = torch.tensor([0.5, 0.5, 0.5, 0.6, 0.5])
    alpha = torch.tensor([1.0, 1.0, 0.5, 0.25, 1.0])
    # (0.5 * 0.2^2 + 0.25 * 0.4^2) / 2 = (0.02 + 0.04) / 2 = 0.03
    term = distillation_term(p_ind, p_grp, alpha, gate, "individual_to_group")
    torch.testing.assert_close(term, torch.tensor(0.03))
    none = distillation_term(p_ind, p_grp, alpha, torch.zeros(5, dtype=torch.bool), "x")
    assert none.item() == 0.0
    # The student gets the gradient, the teacher none.
    p_grp = p_grp.clone().requires_grad_()
    p_ind = p_ind.clone().requires_grad_()
    distillation_term(p_ind, p_grp, alpha, gate, "individual_to_group").backward()
    assert p_ind.grad is None or not p_ind.grad.any()
    assert p_grp.grad[2] != 0 and p_grp.grad[0] == 0


@pytest.mark.unit
def test_group_sequences_follow_the_group_seq_len_setting():
    """A longer setting keeps more of the group sequence (the encoder used to cut at 20)."""
    frame = _toy_frame(8)
    frame["group_hist_categories"] = [[str(i % 5) for i in range(30)]] * len(frame)
    vocab = Vocabulary.fit(frame)
    assert encode(frame, vocab, 4, group_seq_len=30).sequences["group_hist_categories"].shape == (
        8,
        30,
    )
    assert (encode(frame, vocab, 4, group_seq_len=30).sequences["group_hist_categories"] > 0).all()
    assert encode(frame, vocab, 4, group_seq_len=5).sequences["group_hist_categories"].shape[1] == 5
    from choirflow.config import load_settings
    from choirflow.train.fit import encode_for

    longer = load_settings(environ={"CHOIRFLOW__GROUPS__GROUP_SEQ_LEN": "30"})
    assert encode_for(frame, vocab, longer).sequences["group_hist_categories"].shape[1] == 30


@pytest.mark.unit
def test_reserved_indices_are_named_and_values_start_after_them():
    from choirflow.train.data import FIRST_VALUE, OOV, PAD

    frame = _toy_frame(16)
    vocab = Vocabulary.fit(frame)
    assert (PAD, OOV, FIRST_VALUE) == (0, 1, 2)
    assert vocab.size("item_id") == len(vocab.values["item_id"]) + FIRST_VALUE
    unseen = frame.head(1).assign(item_id="never-seen")
    encoded = encode(unseen, vocab, 4)
    assert encoded.categorical[0, CATEGORICAL_FIELDS.index("item_id")] == OOV
    first = frame.head(1).assign(item_id=vocab.values["item_id"][0])
    assert encode(first, vocab, 4).categorical[0, CATEGORICAL_FIELDS.index("item_id")] == 2
