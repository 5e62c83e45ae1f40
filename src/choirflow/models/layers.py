"""Small named parts that models compose: embeddings, MLPs, activations, attention."""

from __future__ import annotations

import torch
from torch import nn

from choirflow.train.data import CATEGORICAL_FIELDS, SEQUENCE_FIELDS

Batch = dict[str, torch.Tensor]


class FeatureEmbedding(nn.Module):
    """One table per categorical field (index 0 = padding); sequence fields share their
    target field's table, so a clicked item and a candidate item live in one space."""

    def __init__(self, vocab_sizes: dict[str, int], dim: int) -> None:
        super().__init__()
        self.fields = list(CATEGORICAL_FIELDS)
        self.dim = dim
        self.tables = nn.ModuleDict(
            {name: nn.Embedding(vocab_sizes[name], dim, padding_idx=0) for name in self.fields}
        )
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=1e-2)
            with torch.no_grad():
                table.weight[0].zero_()

    def field(self, batch: Batch, name: str) -> torch.Tensor:
        """[B, D] embedding of one categorical field."""
        return self.tables[name](batch["categorical"][:, self.fields.index(name)])

    def all_fields(self, batch: Batch) -> torch.Tensor:
        """[B, F, D] embeddings of every categorical field."""
        cols = batch["categorical"]
        return torch.stack([self.tables[n](cols[:, i]) for i, n in enumerate(self.fields)], dim=1)

    def sequence(self, batch: Batch, name: str) -> torch.Tensor:
        """[B, L, D] embeddings of a sequence field through its target's table."""
        return self.tables[SEQUENCE_FIELDS[name]](batch[name])


class Dice(nn.Module):
    """DIN's data-adaptive activation: a PReLU whose switch point follows the batch statistics."""

    def __init__(self, width: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(width, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        p = torch.sigmoid(self.norm(flat))
        return (p * flat + (1 - p) * self.alpha * flat).reshape(shape)


def mlp(
    in_dim: int,
    hidden: tuple[int, ...],
    dropout: float = 0.0,
    activation: str = "relu",
    out_dim: int | None = None,
) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        layers.append(Dice(h) if activation == "dice" else nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    if out_dim is not None:
        layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def sequence_mask(batch: Batch, name: str = "hist_item_ids") -> torch.Tensor:
    """[B, L] True where a real behaviour sits (padding id 0 is False)."""
    return batch[name] != 0


class TargetAttention(nn.Module):
    """DIN's local activation unit: an MLP scores each behaviour against the target from
    [q, k, q - k, q * k]; weights are not softmax-normalised, so intensity is kept."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (64, 32), activation: str = "dice"):
        super().__init__()
        self.score = mlp(4 * dim, hidden, activation=activation, out_dim=1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = query.unsqueeze(1).expand_as(keys)
        weights = self.score(torch.cat([q, keys, q - keys, q * keys], dim=-1)).squeeze(-1)
        weights = weights * mask.to(weights.dtype)
        return torch.einsum("bl,bld->bd", weights, keys)
