"""The trainer: resume after a kill equals an uninterrupted run, early stopping, warm start."""

import numpy as np
import pytest
import torch

from choirflow.models import build_model
from choirflow.train.data import Vocabulary, encode
from choirflow.train.loop import load_model_config, train, warm_start
from tests.test_models import _toy_frame

pytestmark = pytest.mark.unit
CPU = torch.device("cpu")


def _model(vocab, seed=0):
    torch.manual_seed(seed)
    cfg = load_model_config("din_test")
    return build_model("din", {k: vocab.size(k) for k in vocab.values}, **cfg.params)


def test_resume_after_a_kill_gives_the_same_weights(tmp_path):
    frame = _toy_frame(400)
    vocab = Vocabulary.fit(frame)
    data = encode(frame, vocab, 5)
    opts = dict(batch_size=64, learning_rate=0.01, seed=3, device=CPU, progress=False)
    straight = _model(vocab)
    train(straight, data, epochs=3, checkpoint_dir=tmp_path / "a", **opts)
    interrupted = _model(vocab)
    train(interrupted, data, epochs=1, checkpoint_dir=tmp_path / "b", **opts)  # "killed" here
    resumed = _model(vocab, seed=99)  # a new process: fresh weights, then the checkpoint
    result = train(resumed, data, epochs=3, checkpoint_dir=tmp_path / "b", **opts)
    assert result.resumed_from_epoch == 1
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(value, resumed.state_dict()[key], msg=key)


def test_early_stopping_restores_the_best_epoch():
    frame = _toy_frame(400)
    vocab = Vocabulary.fit(frame)
    noise = _toy_frame(300, seed=5)
    noise["click"] = np.random.default_rng(0).integers(0, 2, len(noise))  # nothing to learn
    result = train(
        _model(vocab), encode(frame, vocab, 5), epochs=20, batch_size=64, learning_rate=0.01,
        seed=1, device=CPU, progress=False, valid=encode(noise, vocab, 5), patience=2,
    )  # fmt: skip
    assert result.stopped_early and result.epochs_run < 20
    assert result.best_epoch == int(np.argmax(result.valid_aucs)) + 1


def test_weight_decay_shrinks_the_weights_on_the_same_steps():
    frame = _toy_frame(400)
    vocab = Vocabulary.fit(frame)
    data = encode(frame, vocab, 5)
    opts = dict(epochs=2, batch_size=64, learning_rate=0.01, seed=3, device=CPU, progress=False)
    norms = {}
    for decay in (0.0, 0.1):
        model = _model(vocab)
        train(model, data, weight_decay=decay, **opts)
        norms[decay] = torch.cat([p.detach().flatten() for p in model.parameters()]).norm()
    assert norms[0.1] < 0.9 * norms[0.0]


def test_warm_start_maps_embedding_rows_by_value(tmp_path):
    frame = _toy_frame(200)
    vocab = Vocabulary.fit(frame)
    old = _model(vocab)
    train(old, encode(frame, vocab, 5), epochs=1, batch_size=64, learning_rate=0.01, seed=1,
          device=CPU, progress=False)  # fmt: skip
    path = tmp_path / "champion.pt"
    torch.save({"state_dict": old.state_dict(), "meta": {"vocab": vocab.values}}, path)
    shifted = Vocabulary({k: (["new-value"] + v) for k, v in vocab.values.items()})
    new = build_model(
        "din", {k: shifted.size(k) for k in shifted.values}, **load_model_config("din_test").params
    )
    assert warm_start(new, shifted, path) > 10
    value = vocab.values["item_id"][0]
    old_row = old.embedding.tables["item_id"].weight[vocab.values["item_id"].index(value) + 2]
    new_row = new.embedding.tables["item_id"].weight[shifted.values["item_id"].index(value) + 2]
    torch.testing.assert_close(old_row, new_row)


@pytest.mark.parametrize("name", ["din", "choirrec"])
def test_torchrun_ddp_ranks_end_with_identical_weights_and_learn(tmp_path, name):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(root / "tests" / "ddp_worker.py"), str(tmp_path), name],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    # Parameters agree exactly; BatchNorm running statistics (Dice) are broadcast from rank 0
    # at each forward, so after the last step they hold each rank's own batch.
    for key, value in ranks[0]["state"].items():
        if "running_" not in key and "num_batches" not in key:
            torch.testing.assert_close(value, ranks[1]["state"][key], msg=key)
    # Each rank saw its own half: different losses, both falling.
    assert ranks[0]["losses"] != ranks[1]["losses"]
    for r in ranks:
        assert np.mean(r["losses"][-5:]) < np.mean(r["losses"][:5])


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path):
    """Promotion and warm start read model.pt while a rerun may be writing it: a write that
    dies half way must not leave half a file (it goes to a temporary name, then is renamed)."""
    from choirflow.train.loop import save_checkpoint

    frame = _toy_frame(32)
    vocab = Vocabulary.fit(frame)
    path = tmp_path / "model.pt"
    save_checkpoint(path, _model(vocab), {"run": 1})
    with pytest.raises(Exception, match="(?i)pickle|lambda"):
        save_checkpoint(path, _model(vocab, seed=1), {"run": 2, "broken": lambda: None})
    assert torch.load(path, weights_only=False)["meta"] == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"] or all(
        p.name.startswith(".") for p in tmp_path.iterdir() if p.name != "model.pt"
    )
