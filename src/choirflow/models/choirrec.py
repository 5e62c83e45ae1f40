"""ChoirRec: Semantic User Grouping via LLMs for Conversion Rate Prediction of Low-Activity Users.

Zhai et al., arXiv 2510.09393 (Alibaba/Taobao). Two channels share the feature embedding:
- individual: the user's own fields and a target-attended behaviour sequence;
- group: the semantic group's hierarchical id (codes c1 -> c2 -> c3 fused coarse to fine), its
  majority-voted attributes and its target-attended group behaviour sequence.
Information flows one way, group -> individual, through a stop-gradient copy of the group
tower's first layer. An activity-conditioned reliability network mixes the two channel logits
and weights a gated distillation term between their predictions.

Distillation direction: the paper's gate admits samples of active users whose individual
prediction is confident, so by default the individual channel teaches the group channel
(`distill_direction="individual_to_group"`); the public re-implementation does the opposite,
available as "group_to_individual".
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from choirflow.fields import DENSE_FIELDS, GROUP_FIELDS
from choirflow.models.layers import (
    Batch,
    FeatureEmbedding,
    TargetAttention,
    mlp,
    sequence_mask,
)

_GROUP_COLUMNS = list(GROUP_FIELDS)
# The hierarchical codes (coarse to fine) and the voted attributes (sharing the user's tables).
_CODE_FIELDS = tuple(name for name in GROUP_FIELDS if re.fullmatch(r"group_c\d+", name))
_VOTED = {name: table for name, table in GROUP_FIELDS.items() if table != name}


def _group_column(batch: Batch, name: str) -> torch.Tensor:
    return batch["group"][:, _GROUP_COLUMNS.index(name)]


class GroupIdFusion(nn.Module):
    """h1 = E1[c1]; h_s = tanh(W_s [h_{s-1}; E_s[c_s]]); out = MLP([h1; h2; h3])."""

    def __init__(self, vocab_sizes: dict[str, int], dim: int) -> None:
        super().__init__()
        self.codes = nn.ModuleList(
            nn.Embedding(vocab_sizes[name], dim, padding_idx=0) for name in _CODE_FIELDS
        )
        self.steps = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in _CODE_FIELDS[1:])
        self.out = mlp(len(_CODE_FIELDS) * dim, (dim,), out_dim=dim)
        self.output_dim = self.out.output_dim

    def forward(self, batch: Batch) -> torch.Tensor:
        h = self.codes[0](_group_column(batch, _CODE_FIELDS[0]))
        hs = [h]
        for name, table, step in zip(_CODE_FIELDS[1:], self.codes[1:], self.steps, strict=True):
            h = torch.tanh(step(torch.cat([h, table(_group_column(batch, name))], dim=-1)))
            hs.append(h)
        return self.out(torch.cat(hs, dim=-1))


class Tower(nn.Module):
    """MLP whose first hidden layer is exposed (for injection) and whose middle output takes an
    additive injection before the last layer."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        if len(hidden) < 3:
            raise ValueError("a ChoirRec tower needs at least 3 hidden layers")
        self.first = mlp(in_dim, hidden[:1], dropout)
        self.middle = mlp(hidden[0], hidden[1:-1], dropout)
        self.last = mlp(hidden[-2], hidden[-1:], dropout)
        self.head = nn.Linear(hidden[-1], 1)

    def forward(self, x: torch.Tensor, inject=None) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.first(x)
        middle = self.middle(first)
        if inject is not None:
            middle = middle + inject(first)
        return first, self.head(self.last(middle)).squeeze(-1)


class ChoirRec(nn.Module):
    paper = (
        "ChoirRec: Semantic User Grouping via LLMs for CVR Prediction of Low-Activity Users "
        "(arXiv 2510.09393)"
    )

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        item_vectors: torch.Tensor | None = None,
        *,
        embedding_dim: int = 16,
        group_dim: int = 32,
        attention_hidden: tuple[int, ...] = (64, 32),
        tower_hidden: tuple[int, ...] = (128, 64, 32),
        injection_hidden: tuple[int, ...] = (64,),
        reliability_hidden: tuple[int, ...] = (32, 16),
        dropout: float = 0.0,
        distill_weight: float = 0.005,
        distill_direction: str = "individual_to_group",
        activity_threshold: float = 2.0,
        confidence_threshold: float = 0.1,
        channel_loss_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if distill_direction not in ("individual_to_group", "group_to_individual"):
            raise ValueError(f"unknown distill_direction {distill_direction!r}")
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim, item_vectors)
        token = self.embedding.token_dim
        # Individual channel: [context fields | target | attended behaviours].
        self.individual_attention = TargetAttention(
            token, tuple(attention_hidden), "relu", softmax=True
        )
        individual_in = self.embedding.context_dim + token + self.individual_attention.output_dim
        # Group channel: its parts in concatenation order, with their widths (_group_input
        # concatenates in this order).
        self.group_id = GroupIdFusion(vocab_sizes, group_dim)
        self.group_category_attention = TargetAttention(
            embedding_dim, tuple(attention_hidden), "relu", softmax=True
        )
        self.group_top_attention = TargetAttention(
            embedding_dim, tuple(attention_hidden), "relu", softmax=True
        )
        self.group_widths = {
            "group_id": self.group_id.output_dim,
            **{name: embedding_dim for name in _VOTED},
            "category_interest": self.group_category_attention.output_dim,
            "top_category_interest": self.group_top_attention.output_dim,
            "target": token,
            "top_category": embedding_dim,
        }
        self.individual = Tower(individual_in, tuple(tower_hidden), dropout)
        self.group = Tower(sum(self.group_widths.values()), tuple(tower_hidden), dropout)
        # group -> individual injection: [individual first layer; sg(group first layer)].
        self.injection = mlp(2 * tower_hidden[0], tuple(injection_hidden), out_dim=tower_hidden[-2])
        self.reliability = mlp(len(DENSE_FIELDS) + 1, tuple(reliability_hidden), out_dim=2)
        self.distill_weight = distill_weight
        self.distill_direction = distill_direction
        self.activity_threshold = activity_threshold
        self.confidence_threshold = confidence_threshold
        self.channel_loss_weight = channel_loss_weight

    def _individual_input(self, batch: Batch) -> torch.Tensor:
        fields = self.embedding.context(batch)
        target = self.embedding.target_token(batch)
        interest = self.individual_attention(
            target, self.embedding.history_tokens(batch), sequence_mask(batch)
        )
        return torch.cat([fields, target, interest], dim=-1)

    def _group_input(self, batch: Batch) -> torch.Tensor:
        tables = self.embedding.tables
        category = self.embedding.field(batch, "item_category")
        top = self.embedding.field(batch, "item_top_category")
        seq_cat = batch["group_hist_categories"]
        seq_top = batch["group_hist_top_categories"]
        parts = {
            "group_id": self.group_id(batch),
            **{name: tables[table](_group_column(batch, name)) for name, table in _VOTED.items()},
            "category_interest": self.group_category_attention(
                category, tables["item_category"](seq_cat), seq_cat != 0
            ),
            "top_category_interest": self.group_top_attention(
                top, tables["item_top_category"](seq_top), seq_top != 0
            ),
            "target": self.embedding.target_token(batch),
            "top_category": top,
        }
        return torch.cat([parts[name] for name in self.group_widths], dim=-1)

    def parts(self, batch: Batch) -> dict[str, torch.Tensor]:
        group_first, z_group = self.group(self._group_input(batch))
        frozen_group = group_first.detach()  # one way: no gradient from the individual side

        def inject(individual_first: torch.Tensor) -> torch.Tensor:
            return self.injection(torch.cat([individual_first, frozen_group], dim=-1))

        _, z_individual = self.individual(self._individual_input(batch), inject)
        alphas = torch.sigmoid(self.reliability(batch["dense"]))
        alpha_distill, alpha_fusion = alphas[:, 0], alphas[:, 1]
        logit = (1 - alpha_fusion) * z_individual + alpha_fusion * z_group
        return {
            "logit": logit,
            "individual": z_individual,
            "group": z_group,
            "alpha_distill": alpha_distill,
            "alpha_fusion": alpha_fusion,
        }

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.parts(batch)["logit"]

    def training_loss(self, batch: Batch, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BCE of the fused logit + lambda * gated, reliability-weighted squared gap between the
        channel predictions + (optionally) each channel's own BCE, so that a channel the fusion
        weight turns down still learns (the auxiliary losses of the earlier re-implementation)."""
        p = self.parts(batch)
        loss = F.binary_cross_entropy_with_logits(p["logit"].float(), label)
        if self.channel_loss_weight:
            loss = loss + self.channel_loss_weight * (
                F.binary_cross_entropy_with_logits(p["individual"].float(), label)
                + F.binary_cross_entropy_with_logits(p["group"].float(), label)
            )
        p_ind = torch.sigmoid(p["individual"].float())
        p_grp = torch.sigmoid(p["group"].float())
        clicks_30d = torch.expm1(batch["dense"][:, DENSE_FIELDS.index("clicks_30d")])
        gate = distillation_gate(
            clicks_30d, p_ind, self.activity_threshold, self.confidence_threshold
        )
        distill = distillation_term(
            p_ind, p_grp, p["alpha_distill"].float(), gate, self.distill_direction
        )
        return loss + self.distill_weight * distill, p["logit"]


def distillation_gate(
    clicks_30d: torch.Tensor,
    p_individual: torch.Tensor,
    activity_threshold: float,
    confidence_threshold: float,
) -> torch.Tensor:
    """[B] bool: the samples that teach (active users whose individual prediction is
    confident: more than `activity_threshold` clicks in 30 days and |p - 0.5| above
    `confidence_threshold`)."""
    confident = (p_individual - 0.5).abs() > confidence_threshold
    return (clicks_30d > activity_threshold) & confident


def distillation_term(
    p_individual: torch.Tensor,
    p_group: torch.Tensor,
    alpha: torch.Tensor,
    gate: torch.Tensor,
    direction: str,
) -> torch.Tensor:
    """Mean over the gated samples of alpha * (student - sg(teacher))^2; 0 when none pass."""
    if direction == "individual_to_group":
        gap = (p_group - p_individual.detach()) ** 2
    else:
        gap = (p_individual - p_group.detach()) ** 2
    g = gate.float()
    return (g * alpha * gap).sum() / g.sum().clamp(min=1.0)


def build(vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    return ChoirRec(vocab_sizes, item_vectors, **params)
