"""The peer of benchmarks/train.py: FuxiCTR's DIN on the same samples, in FuxiCTR's own
environment (`bash benchmarks/fuxictr_env.sh` makes it; fuxictr needs ray and is kept out of
the project lock).

The `fuxictr` wheel ships the library (BaseModel, FeatureEmbeddingDict, DIN_Attention,
MLP_Block, its npz data loader) but not the model zoo, so DIN is composed here from those
parts as FuxiCTR's DIN is: embeddings, target attention over the (item, category) history,
the pooled history in place of the sequence fields, an MLP. Training is FuxiCTR's
`BaseModel.train_epoch` (its loader, Adam, BCE, gradient clipping); only the epochs are timed.

    <fuxictr venv>/bin/python benchmarks/fuxictr_peer.py --npz F --out F.json [--batch-size ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from fuxictr.features import FeatureMap
from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader
from fuxictr.pytorch.layers import DIN_Attention, FeatureEmbeddingDict, MLP_Block
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything

HISTORY = {"hist_item_ids": "item_id", "hist_categories": "item_category"}


class PeerDIN(BaseModel):
    def __init__(
        self, feature_map, embedding_dim, attention_hidden, dnn_hidden, activation, lr, gpu
    ):
        super().__init__(
            feature_map, model_id="din_peer", gpu=gpu, model_root=tempfile.mkdtemp(),
            verbose=0, metrics=["logloss", "AUC"],
        )  # fmt: skip
        self.embedding_dim = embedding_dim
        self.embedding = FeatureEmbeddingDict(feature_map, embedding_dim)
        self.attention = DIN_Attention(
            2 * embedding_dim,
            attention_units=attention_hidden,
            hidden_activations=activation,
            output_activation=None,
            dropout_rate=0,
            use_softmax=False,
        )
        self.dnn = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=dnn_hidden,
            hidden_activations=activation,
            output_activation=self.output_activation,
        )
        self.compile("adam", "binary_crossentropy", lr)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        x = self.get_inputs(inputs)
        emb = self.embedding(x)
        target = torch.cat([emb["item_id"], emb["item_category"]], dim=-1)
        history = torch.cat([emb["hist_item_ids"], emb["hist_categories"]], dim=-1)
        pooled = self.attention(target, history, x["hist_item_ids"].long() != 0)
        emb["hist_item_ids"], emb["hist_categories"] = pooled.split(self.embedding_dim, dim=-1)
        return {"y_pred": self.dnn(self.embedding.dict2tensor(emb, flatten_emb=True))}


def feature_map(npz, fields: list[str], seq_len: int, embedding_dim: int) -> FeatureMap:
    """What FuxiCTR's preprocessing would write to feature_map.json, built in memory."""
    fmap = FeatureMap("peer", data_dir=tempfile.gettempdir())
    fmap.default_emb_dim = embedding_dim
    features = OrderedDict()
    for f in fields:
        size = int(npz[f"vocab_{f}"])
        features[f] = {"source": "", "type": "categorical", "padding_idx": 0, "vocab_size": size}
    for seq, target in HISTORY.items():
        features[seq] = {
            "source": "", "type": "sequence", "feature_encoder": None, "share_embedding": target,
            "padding_idx": 0, "max_len": seq_len, "vocab_size": int(npz[f"vocab_{target}"]),
        }  # fmt: skip
    fmap.features = features
    fmap.labels = ["click"]
    fmap.num_fields = fmap.get_num_fields()
    fmap.total_features = sum(int(npz[f"vocab_{f}"]) for f in fields)
    fmap.set_column_index()
    return fmap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--attention-hidden", default="64,32")
    parser.add_argument("--dnn-hidden", default="200,80")
    parser.add_argument("--activation", default="Dice")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--gpu", type=int, default=-1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(2024)
    npz = np.load(args.npz)
    fields = [str(f) for f in npz["fields"]]
    seq_len = int(npz["hist_item_ids"].shape[1])
    split = npz["split"]
    columns = [*fields, *HISTORY, "click"]
    work = Path(tempfile.mkdtemp(prefix="fuxictr-peer-"))
    fmap = feature_map(npz, fields, seq_len, args.embedding_dim)
    loaders = {}
    for name, code in (("train", 0), ("valid", 1)):
        rows = np.flatnonzero(split == code)
        np.savez(work / f"{name}.npz", **{c: npz[c][rows] for c in columns})
        loaders[name] = NpzDataLoader(
            fmap, str(work / f"{name}.npz"), split=name,
            batch_size=args.batch_size, shuffle=name == "train", num_workers=args.num_workers,
        )  # fmt: skip
    model = PeerDIN(
        fmap, args.embedding_dim,
        [int(h) for h in args.attention_hidden.split(",")],
        [int(h) for h in args.dnn_hidden.split(",")],
        args.activation, args.learning_rate, args.gpu,
    )  # fmt: skip
    # What BaseModel.fit sets before its epochs; evaluation inside an epoch is switched off.
    model._max_gradient_norm, model._total_steps = 10.0, 0
    model._eval_steps, model._stop_training = 1 << 62, False
    if args.gpu >= 0:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model._epoch_index = epoch
        model.train_epoch(loaders["train"])
    if args.gpu >= 0:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    logs = model.evaluate(loaders["valid"], metrics=["AUC", "logloss"])
    import fuxictr

    result = {
        "samples_per_s": round(int((split == 0).sum()) * args.epochs / seconds),
        "seconds": round(seconds, 2),
        "valid_auc": round(float(logs["AUC"]), 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "fuxictr_version": fuxictr.__version__,
        "torch_version": torch.__version__,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
