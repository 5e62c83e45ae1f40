"""DIN: Deep Interest Network for Click-Through Rate Prediction.

Zhou et al., KDD 2018 (arXiv 1706.06978); the baseline of the WWW'25 MM-CTR challenge.
Target attention pools the behaviour sequence against the candidate item (un-normalised
weights from an MLP over [t, h, t-h, t*h]), then an MLP scores it with the other fields.
"""

from __future__ import annotations

import torch
from torch import nn

from choirflow.models.layers import (
    Batch,
    FeatureEmbedding,
    TargetAttention,
    mlp,
    sequence_mask,
)


class DIN(nn.Module):
    paper = "Deep Interest Network for Click-Through Rate Prediction (KDD 2018)"

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        item_vectors: torch.Tensor | None = None,
        *,
        embedding_dim: int = 16,
        attention_hidden: tuple[int, ...] = (64, 32),
        attention_activation: str = "dice",
        dnn_hidden: tuple[int, ...] = (200, 80),
        dnn_activation: str = "dice",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim, item_vectors)
        token = self.embedding.token_dim
        self.attention = TargetAttention(token, tuple(attention_hidden), attention_activation)
        self.dnn = mlp(
            self.embedding.context_dim + token + self.attention.output_dim,
            tuple(dnn_hidden),
            dropout=dropout,
            activation=dnn_activation,
            out_dim=1,
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding.context(batch)
        target = self.embedding.target_token(batch)
        interest = self.attention(
            target, self.embedding.history_tokens(batch), sequence_mask(batch)
        )
        return self.dnn(torch.cat([fields, target, interest], dim=-1)).squeeze(-1)


def build(vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    return DIN(vocab_sizes, item_vectors, **params)
