"""Small named parts that models compose: embeddings, MLPs, activations, attention."""

from __future__ import annotations

import torch
from torch import nn

from choirflow.fields import CATEGORICAL_FIELDS, SEQUENCE_FIELDS

Batch = dict[str, torch.Tensor]
# The fields that make an item token ([item id | category | projected vector]).
ITEM_FIELDS = ("item_id", "item_category")


class FeatureEmbedding(nn.Module):
    """One table per categorical field (index 0 = padding); sequence fields share their
    target field's table, so a clicked item and a candidate item live in one space.

    Item tokens are [item id | item category | W * frozen multimodal vector]: the frozen
    vectors (rows aligned with the item vocabulary) stay fixed, the projection W is trained.
    """

    def __init__(
        self, vocab_sizes: dict[str, int], dim: int, item_vectors: torch.Tensor | None = None
    ) -> None:
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
        self.has_item_vectors = item_vectors is not None
        if item_vectors is not None:
            if item_vectors.shape[0] != vocab_sizes["item_id"]:
                raise ValueError("item_vectors rows must match the item_id vocabulary")
            self.register_buffer("item_vectors", item_vectors.float(), persistent=False)
            self.item_projection = nn.Linear(item_vectors.shape[1], dim, bias=False)
        self.token_dim = dim * (3 if self.has_item_vectors else 2)
        # The fields every model reads beside the item tokens (user, context, item side info).
        self.context_fields = [f for f in self.fields if f not in ITEM_FIELDS]
        self.context_dim = len(self.context_fields) * dim

    def context(self, batch: Batch) -> torch.Tensor:
        """[B, context_dim] the non-item-token fields, flattened."""
        return self.all_fields(batch, exclude=ITEM_FIELDS).flatten(1)

    def field(self, batch: Batch, name: str) -> torch.Tensor:
        """[B, D] embedding of one categorical field."""
        return self.tables[name](batch["categorical"][:, self.fields.index(name)])

    def all_fields(self, batch: Batch, exclude: tuple[str, ...] = ()) -> torch.Tensor:
        """[B, F, D] embeddings of the categorical fields (minus `exclude`)."""
        cols = batch["categorical"]
        return torch.stack(
            [self.tables[n](cols[:, i]) for i, n in enumerate(self.fields) if n not in exclude],
            dim=1,
        )

    def sequence(self, batch: Batch, name: str) -> torch.Tensor:
        """[B, L, D] embeddings of a sequence field through its target's table."""
        return self.tables[SEQUENCE_FIELDS[name]](batch[name])

    def _token(self, item_idx: torch.Tensor, category_idx: torch.Tensor) -> torch.Tensor:
        parts = [self.tables["item_id"](item_idx), self.tables["item_category"](category_idx)]
        if self.has_item_vectors:
            parts.append(self.item_projection(self.item_vectors[item_idx]))
        return torch.cat(parts, dim=-1)

    def target_token(self, batch: Batch) -> torch.Tensor:
        """[B, token_dim] the candidate item."""
        cols = batch["categorical"]
        return self._token(
            cols[:, self.fields.index("item_id")], cols[:, self.fields.index("item_category")]
        )

    def history_tokens(self, batch: Batch) -> torch.Tensor:
        """[B, L, token_dim] the behaviour sequence (zeros at padding)."""
        tokens = self._token(batch["hist_item_ids"], batch["hist_categories"])
        return tokens * sequence_mask(batch).unsqueeze(-1).to(tokens.dtype)


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


ACTIVATIONS = {"relu": lambda width: nn.ReLU(), "dice": Dice, "prelu": nn.PReLU}


def activation_layer(name: str, width: int) -> nn.Module:
    """The named activation for a layer of `width` units; an unknown name is an error, never
    a silent ReLU (a typo in a model config would otherwise train a different model)."""
    try:
        return ACTIVATIONS[name](width)
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}"
        ) from None


def mlp(
    in_dim: int,
    hidden: tuple[int, ...],
    dropout: float = 0.0,
    activation: str = "relu",
    out_dim: int | None = None,
) -> nn.Sequential:
    """Linear layers with an activation (and dropout) after each hidden one; the returned
    module's `output_dim` is the width it produces."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        layers.append(activation_layer(activation, h))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    if out_dim is not None:
        layers.append(nn.Linear(width, out_dim))
        width = out_dim
    stack = nn.Sequential(*layers)
    stack.output_dim = width
    return stack


def sequence_mask(batch: Batch, name: str = "hist_item_ids") -> torch.Tensor:
    """[B, L] True where a real behaviour sits (padding id 0 is False)."""
    return batch[name] != 0


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L, D] -> [B, D] max over real positions (0 for an empty sequence)."""
    filled = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    return torch.where(torch.isfinite(filled), filled, torch.zeros_like(filled))


def time_gap_buckets(gaps_hours: torch.Tensor, mask: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Log2-bucketed gap in minutes, 1..n_buckets-1 at real positions, 0 at padding."""
    minutes = (gaps_hours.clamp(min=0) * 60.0).float()
    bucket = 1 + torch.floor(torch.log2(1 + minutes)).long().clamp(0, n_buckets - 2)
    return torch.where(mask, bucket, torch.zeros_like(bucket))


class CrossNetV2(nn.Module):
    """DCNv2 cross layers x_{l+1} = x0 * (W x_l + b) + x_l; with `rank`, W = U V^T (low rank),
    the practical default when the input is wide."""

    def __init__(self, dim: int, num_layers: int = 3, rank: int | None = 64) -> None:
        super().__init__()
        if rank:
            self.maps = nn.ModuleList(
                nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))
                for _ in range(num_layers)
            )
        else:
            self.maps = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))
        self.output_dim = dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for m in self.maps:
            x = x0 * m(x) + x
        return x


class TargetAttention(nn.Module):
    """DIN's local activation unit: an MLP scores each behaviour against the target from
    [q, k, q - k, q * k]; weights are not softmax-normalised, so intensity is kept."""

    def __init__(
        self,
        dim: int,
        hidden: tuple[int, ...] = (64, 32),
        activation: str = "dice",
        softmax: bool = False,
    ):
        super().__init__()
        self.score = mlp(4 * dim, hidden, activation=activation, out_dim=1)
        self.softmax = softmax  # ChoirRec normalises with a masked softmax
        self.output_dim = dim  # a weighted sum of the keys

    def _scores(self, query: torch.Tensor, rows: torch.Tensor | None, keys: torch.Tensor):
        """score([q, k, q-k, q*k]) for the (query row, key) pairs, without building the 4D-wide
        input: the first layer splits into (W_q + W_d) q + (W_k - W_d) k + W_p (q*k), and the
        query part is computed once per query row. `rows` None: keys [B, L, D] against
        queries [B, 1, D], every position scored."""
        first, rest = self.score[0], self.score[1:]
        w_q, w_k, w_d, w_p = first.weight.split(query.shape[-1], dim=1)
        per_query = query @ (w_q + w_d).T + first.bias
        if rows is not None:  # keys are the real positions, one row each
            per_query, query = per_query[rows], query[rows]
        hidden = per_query + keys @ (w_k - w_d).T + (query * keys) @ w_p.T
        return rest(hidden).squeeze(-1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Only real positions are scored (histories are mostly short): padding costs nothing and
        # stays out of Dice's batch statistics.
        if torch.compiler.is_exporting():  # a fixed graph: every position, padding masked below
            weights = self._scores(query.unsqueeze(1), None, keys).masked_fill(~mask, 0.0)
        else:
            rows, cols = mask.nonzero(as_tuple=True)
            weights = torch.zeros(mask.shape, dtype=keys.dtype, device=keys.device)
            if len(rows):
                scores = self._scores(query, rows, keys[rows, cols])
                weights = weights.index_put((rows, cols), scores.to(weights.dtype))
        if self.softmax:
            weights = weights.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            weights = torch.nan_to_num(weights, nan=0.0)  # an empty sequence pools to zero
        else:
            weights = weights * mask.to(weights.dtype)
        return torch.einsum("bl,bld->bd", weights, keys)
