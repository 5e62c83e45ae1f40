"""QIN: Quadratic Interest Network (2nd place, WWW'25 MM-CTR challenge; arXiv 2504.17699).

Adaptive Sparse Target Attention: bias-free Q/K/V with width 2D, scaled scores passed
through ReLU instead of softmax (irrelevant behaviours get exactly zero), masked, an output
projection and a residual on the target. A Quadratic Neural Network of residual quadratic
layers x' = x * sum_r h_r(x) (R rows, BatchNorm, PReLU, dropout) models high-order
interactions; a linear head scores.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from choirflow.models.layers import Batch, FeatureEmbedding, sequence_mask


class AdaptiveSparseTargetAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        width = 2 * dim
        self.q = nn.Linear(dim, width, bias=False)
        self.k = nn.Linear(dim, width, bias=False)
        self.v = nn.Linear(dim, width, bias=False)
        self.o = nn.Linear(width, dim, bias=False)
        self.scale = 1.0 / math.sqrt(width)
        self.output_dim = dim  # projected back, plus the target

    def forward(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        scores = torch.einsum("bd,bld->bl", self.q(target), self.k(history)) * self.scale
        scores = torch.relu(scores) * mask.to(scores.dtype)
        return self.o(torch.einsum("bl,bld->bd", scores, self.v(history))) + target


class QuadraticLayer(nn.Module):
    def __init__(self, dim: int, rows: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.rows = rows
        self.output_dim = dim
        self.expand = nn.Linear(dim, rows * dim)
        self.inner_dropout = nn.Dropout(dropout)
        self.post = nn.Sequential(nn.BatchNorm1d(dim), nn.PReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inner_dropout(self.expand(x)).view(x.shape[0], self.rows, -1).sum(dim=1)
        return self.post(x * h) + x


class QIN(nn.Module):
    paper = "Quadratic Interest Network for Multimodal Click-Through Rate Prediction (2025)"

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        item_vectors: torch.Tensor | None = None,
        *,
        embedding_dim: int = 16,
        quadratic_layers: int = 4,
        quadratic_rows: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim, item_vectors)
        token = self.embedding.token_dim
        self.attention = AdaptiveSparseTargetAttention(token)
        width = self.embedding.context_dim + token + self.attention.output_dim
        self.qnn = nn.Sequential(
            *(QuadraticLayer(width, quadratic_rows, dropout) for _ in range(quadratic_layers))
        )
        self.head = nn.Linear(width, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding.context(batch)
        target = self.embedding.target_token(batch)
        interest = self.attention(
            target, self.embedding.history_tokens(batch), sequence_mask(batch)
        )
        return self.head(self.qnn(torch.cat([fields, target, interest], dim=-1))).squeeze(-1)


def build(vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    if "rows" in params:  # checkpoints saved before `rows` was named `quadratic_rows`
        params["quadratic_rows"] = params.pop("rows")
    return QIN(vocab_sizes, item_vectors, **params)
