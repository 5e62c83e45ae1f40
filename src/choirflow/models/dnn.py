"""DNN: embeddings + MLP, no behaviour sequence; the floor every sequence model must beat.

Covington et al., "Deep Neural Networks for YouTube Recommendations" (RecSys 2016) style
embedding-and-MLP ranking baseline.
"""

from __future__ import annotations

import torch
from torch import nn

from choirflow.models.layers import Batch, FeatureEmbedding, mlp


class DNN(nn.Module):
    paper = "Deep Neural Networks for YouTube Recommendations (RecSys 2016)"

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        item_vectors: torch.Tensor | None = None,
        *,
        embedding_dim: int = 16,
        dnn_hidden: tuple[int, ...] = (256, 128),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim, item_vectors)
        width = self.embedding.context_dim + self.embedding.token_dim
        self.dnn = mlp(width, tuple(dnn_hidden), dropout=dropout, out_dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding.context(batch)
        target = self.embedding.target_token(batch)
        return self.dnn(torch.cat([fields, target], dim=-1)).squeeze(-1)


def build(vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    return DNN(vocab_sizes, item_vectors, **params)
