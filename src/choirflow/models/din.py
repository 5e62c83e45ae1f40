"""DIN: Deep Interest Network for Click-Through Rate Prediction.

Zhou et al., KDD 2018 (arXiv 1706.06978); the baseline of the WWW'25 MM-CTR challenge.
Target attention pools the behaviour sequence against the candidate item, then an MLP with
Dice activations scores the concatenation with the other fields.
"""

from __future__ import annotations

import torch
from torch import nn

from choirflow.models.layers import Batch, FeatureEmbedding, TargetAttention, mlp, sequence_mask


class DIN(nn.Module):
    paper = "Deep Interest Network for Click-Through Rate Prediction (KDD 2018)"

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        attention_hidden: tuple[int, ...] = (64, 32),
        dnn_hidden: tuple[int, ...] = (200, 80),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim)
        target_dim = 2 * embedding_dim  # item id + item category
        self.attention = TargetAttention(target_dim, tuple(attention_hidden))
        n_fields = len(self.embedding.fields)
        self.dnn = mlp(
            n_fields * embedding_dim + target_dim,
            tuple(dnn_hidden),
            dropout=dropout,
            activation="dice",
            out_dim=1,
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding.all_fields(batch)
        query = torch.cat(
            [self.embedding.field(batch, "item_id"), self.embedding.field(batch, "item_category")],
            dim=-1,
        )
        keys = torch.cat(
            [
                self.embedding.sequence(batch, "hist_item_ids"),
                self.embedding.sequence(batch, "hist_categories"),
            ],
            dim=-1,
        )
        interest = self.attention(query, keys, sequence_mask(batch))
        return self.dnn(torch.cat([fields.flatten(1), interest], dim=-1)).squeeze(-1)


def build(vocab_sizes: dict[str, int], **params) -> nn.Module:
    return DIN(vocab_sizes, **params)
