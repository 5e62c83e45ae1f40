"""Run by tests/test_trainer.py under `torchrun --nproc_per_node 2` (gloo on CPU): one DDP
training run; each rank writes its final weights and losses for the test to compare."""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from choirflow.models import build_model  # noqa: E402
from choirflow.train.data import Vocabulary, encode  # noqa: E402
from choirflow.train.loop import (  # noqa: E402
    distributed_context,
    load_model_config,
    pick_distributed_device,
    train,
)
from tests.test_models import _toy_frame  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1])
    name = sys.argv[2]
    device = pick_distributed_device(sys.argv[3] if len(sys.argv) > 3 else "cpu")
    frame = _toy_frame(800)
    vocab = Vocabulary.fit(frame)
    data = encode(frame, vocab, 5)
    torch.manual_seed(0)
    cfg = load_model_config(f"{name}_test")
    model = build_model(name, {k: vocab.size(k) for k in vocab.values}, **cfg.params)
    result = train(model, data, epochs=3, batch_size=64, learning_rate=0.01, seed=3,
                   device=device, progress=False)  # fmt: skip
    world, rank = distributed_context(device)
    torch.save(
        {
            "state": model.state_dict(),
            "losses": result.losses,
            "world": world,
            "device": str(device),
        },
        out / f"rank{rank}.pt",
    )
