"""TIN: Temporal Interest Network for User Response Prediction.

Zhou et al., WWW'24 Companion (arXiv 2308.08487). Target-aware temporal encoding adds a
learned embedding of each behaviour's (log-bucketed) time gap to the target to both the
behaviour and the target (bucket 0); target-aware attention is a softmax over scaled dot
products of the encoded pair; the target-aware representation takes the Hadamard product
inside the weighted sum: u = sum_i softmax_i(<e_i, v_t> / sqrt(d)) * (e_i * v_t).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from choirflow.models.layers import (
    Batch,
    FeatureEmbedding,
    mlp,
    sequence_mask,
    time_gap_buckets,
)


class TemporalInterest(nn.Module):
    """TTE + TA + TR over a behaviour sequence."""

    def __init__(self, token_dim: int, time_buckets: int = 24) -> None:
        super().__init__()
        self.time_buckets = time_buckets
        self.time = nn.Embedding(time_buckets, token_dim)
        nn.init.normal_(self.time.weight, std=1e-2)
        self.out = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, token_dim))
        self.output_dim = token_dim

    def forward(
        self,
        target: torch.Tensor,
        history: torch.Tensor,
        gaps_hours: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        buckets = time_gap_buckets(gaps_hours, mask, self.time_buckets)
        e = history + self.time(buckets)  # [B, L, D]
        v = target + self.time.weight[0]  # [B, D]; the target sits at gap 0
        scores = torch.einsum("bld,bd->bl", e, v) / math.sqrt(e.shape[-1])
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        weights = torch.nan_to_num(weights, nan=0.0)  # a user with no history
        u = torch.einsum("bl,bld->bd", weights, e * v.unsqueeze(1))
        return self.out(u)


class TIN(nn.Module):
    paper = "Temporal Interest Network for User Response Prediction (WWW 2024 Companion)"

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        item_vectors: torch.Tensor | None = None,
        *,
        embedding_dim: int = 16,
        time_buckets: int = 24,
        dnn_hidden: tuple[int, ...] = (200, 80),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim, item_vectors)
        token = self.embedding.token_dim
        self.interest = TemporalInterest(token, time_buckets)
        # [context | u | target | u * target]: the interest, the target and their product.
        width = self.embedding.context_dim + 2 * self.interest.output_dim + token
        self.dnn = mlp(width, tuple(dnn_hidden), dropout=dropout, activation="dice", out_dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding.context(batch)
        target = self.embedding.target_token(batch)
        u = self.interest(
            target, self.embedding.history_tokens(batch), batch["gaps_hours"], sequence_mask(batch)
        )
        return self.dnn(torch.cat([fields, u, target, u * target], dim=-1)).squeeze(-1)


def build(vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    return TIN(vocab_sizes, item_vectors, **params)
