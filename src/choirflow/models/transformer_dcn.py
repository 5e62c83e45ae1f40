"""Transformer + DCNv2: the 1st-place model of the WWW'25 MM-CTR challenge (team momo,
arXiv 2505.03543), a TransAct-style layout.

Each history token is concatenated with the target token; a post-LN Transformer encoder
(no positional encoding, key-padding mask) runs over them. The readout flattens the last k
positions and adds a projection of the masked max-pool. A DCNv2 in parallel form (cross
layers beside an MLP) takes [context fields | target | readout]. The cross layers are low
rank by default: the paper's full-rank layers on a 9,088-wide input hold ~250M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from choirflow.models.layers import (
    Batch,
    CrossNetV2,
    FeatureEmbedding,
    masked_max,
    mlp,
    sequence_mask,
)


class TargetConcatTransformer(nn.Module):
    def __init__(
        self, token_dim: int, *, num_layers: int = 2, num_heads: int = 1, ffn_dim: int = 256,
        dropout: float = 0.2, last_k: int = 16,
    ) -> None:  # fmt: skip
        super().__init__()
        width = 2 * token_dim
        layer = nn.TransformerEncoderLayer(
            width, num_heads, dim_feedforward=ffn_dim, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.pool_projection = nn.Linear(width, width)
        self.last_k = last_k
        self.output_dim = (last_k + 1) * width  # the last k positions and the pooled one

    def forward(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        b, length, _ = history.shape
        tokens = torch.cat([history, target.unsqueeze(1).expand(-1, length, -1)], dim=-1)
        attend = mask.clone()
        attend[~mask.any(dim=1), -1] = True  # a user with no history keeps one (padded) slot
        out = self.encoder(tokens, src_key_padding_mask=~attend)
        out = out * attend.unsqueeze(-1).to(out.dtype)
        if length < self.last_k:  # right-aligned: pad on the left
            out_k = nn.functional.pad(out, (0, 0, self.last_k - length, 0))
            attend_k = nn.functional.pad(attend, (self.last_k - length, 0))
        else:
            out_k, attend_k = out[:, -self.last_k :], attend[:, -self.last_k :]
        flat = (out_k * attend_k.unsqueeze(-1).to(out.dtype)).flatten(1)
        pooled = self.pool_projection(masked_max(out, attend))
        return torch.cat([flat, pooled], dim=-1)


class TransformerDCN(nn.Module):
    paper = "Transformer + DCNv2, 1st place WWW'25 EReL@MIR MM-CTR challenge (2025)"

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        item_vectors: torch.Tensor | None = None,
        *,
        embedding_dim: int = 16,
        transformer_layers: int = 2,
        transformer_heads: int = 1,
        transformer_ffn: int = 256,
        transformer_dropout: float = 0.2,
        last_k: int = 16,
        cross_layers: int = 3,
        cross_rank: int | None = 64,
        dnn_hidden: tuple[int, ...] = (1024, 512, 256),
        head_hidden: tuple[int, ...] = (64, 32),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim, item_vectors)
        token = self.embedding.token_dim
        self.sequence = TargetConcatTransformer(
            token,
            num_layers=transformer_layers,
            num_heads=transformer_heads,
            ffn_dim=transformer_ffn,
            dropout=transformer_dropout,
            last_k=last_k,
        )
        width = self.embedding.context_dim + token + self.sequence.output_dim
        self.cross = CrossNetV2(width, num_layers=cross_layers, rank=cross_rank)
        self.deep = mlp(width, tuple(dnn_hidden), dropout=dropout)
        parallel = self.cross.output_dim + self.deep.output_dim
        self.head = mlp(parallel, tuple(head_hidden), out_dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding.context(batch)
        target = self.embedding.target_token(batch)
        readout = self.sequence(target, self.embedding.history_tokens(batch), sequence_mask(batch))
        x = torch.cat([fields, target, readout], dim=-1)
        return self.head(torch.cat([self.cross(x), self.deep(x)], dim=-1)).squeeze(-1)


def build(vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    return TransformerDCN(vocab_sizes, item_vectors, **params)
