"""AW-MoE: Attention Weighted Mixture of Experts with Contrastive Learning for Personalized
Ranking in E-commerce.

Zhang et al., ICDE 2023 (arXiv 2306.05011, JD.com). The behaviour sequence feeds both the
experts and the gate network:
- experts: K MLP towers over [context fields | target | target-attended interest], one logit each;
- gate network: a gate unit maps each behaviour to a K-wide expert preference, an activation
  unit (DIN's, against the target) weighs the behaviours, and the weighted sum (plus a base
  preference from the candidate and context, so a user without history still has a gate) is
  softmaxed over the experts: y = sigmoid(sum_k G_k * E_k);
- long-tail users are simulated by randomly masking behaviours: two masked views of each
  sample give two gate outputs, and an in-batch InfoNCE loss pulls a sample's two views
  together against the other samples of the batch (auxiliary to the click loss).
No public code exists; the shapes, the mask ratio, the loss weight and the temperature are
this file's choices, set in configs/models/awmoe.yaml.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from choirflow.models.layers import (
    Batch,
    FeatureEmbedding,
    TargetAttention,
    mlp,
    sequence_mask,
)


class AttentionWeightedGate(nn.Module):
    """G = softmax_K(W_0 [context | target] + sum_j a_j * W_g b_j), a_j from the activation
    unit against the target; masked positions contribute nothing."""

    def __init__(self, base_dim: int, token_dim: int, experts: int, hidden: tuple[int, ...]):
        super().__init__()
        self.base = nn.Linear(base_dim, experts)
        self.gate_unit = nn.Linear(token_dim, experts, bias=False)
        self.activation_unit = TargetAttention(token_dim, hidden, "dice")

    def forward(
        self, base: torch.Tensor, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """[B, K] gate logits (before the softmax over experts)."""
        # sum_j a_j * W_g b_j = W_g (sum_j a_j b_j): the activation unit's pooled history.
        pooled = self.activation_unit(target, history, mask)
        return self.base(base) + self.gate_unit(pooled)


def masked_view(mask: torch.Tensor, ratio: float, generator=None) -> torch.Tensor:
    """A copy of the sequence mask with each real behaviour dropped with probability `ratio`
    (a long-tail user made from an active one)."""
    keep = torch.rand(mask.shape, device=mask.device, generator=generator) >= ratio
    return mask & keep


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of `a` should match row i of `b` among all rows of `b`."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class AWMoE(nn.Module):
    paper = (
        "AW-MoE: Attention Weighted Mixture of Experts with Contrastive Learning for "
        "Personalized Ranking in E-commerce (ICDE 2023)"
    )

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        item_vectors: torch.Tensor | None = None,
        *,
        embedding_dim: int = 16,
        num_experts: int = 4,
        expert_hidden: tuple[int, ...] = (128, 64),
        attention_hidden: tuple[int, ...] = (64, 32),
        dropout: float = 0.1,
        mask_ratio: float = 0.5,
        contrastive_weight: float = 0.1,
        temperature: float = 0.2,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim, item_vectors)
        token = self.embedding.token_dim
        base = self.embedding.context_dim + token
        self.interest = TargetAttention(token, tuple(attention_hidden), "dice")
        self.experts = nn.ModuleList(
            mlp(base + token, tuple(expert_hidden), dropout=dropout, activation="dice", out_dim=1)
            for _ in range(num_experts)
        )
        self.gate = AttentionWeightedGate(base, token, num_experts, tuple(attention_hidden))
        self.mask_ratio = mask_ratio
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature

    def _inputs(self, batch: Batch):
        target = self.embedding.target_token(batch)
        base = torch.cat([self.embedding.context(batch), target], -1)
        return base, target, self.embedding.history_tokens(batch)

    def _logit(self, base, target, history, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit, gate logits) of one view of the sequence."""
        interest = self.interest(target, history, mask)
        expert_logits = torch.cat([e(torch.cat([base, interest], -1)) for e in self.experts], -1)
        gate_logits = self.gate(base, target, history, mask)
        mixed = (torch.softmax(gate_logits, dim=-1) * expert_logits).sum(-1)
        return mixed, gate_logits

    def forward(self, batch: Batch) -> torch.Tensor:
        base, target, history = self._inputs(batch)
        return self._logit(base, target, history, sequence_mask(batch))[0]

    def training_loss(self, batch: Batch, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BCE on the whole sequence + weight * InfoNCE between the gate outputs of two
        randomly masked views of it."""
        base, target, history = self._inputs(batch)
        mask = sequence_mask(batch)
        logit, _ = self._logit(base, target, history, mask)
        loss = F.binary_cross_entropy_with_logits(logit.float(), label)
        if self.contrastive_weight and len(label) > 1:
            view_a = self.gate(base, target, history, masked_view(mask, self.mask_ratio))
            view_b = self.gate(base, target, history, masked_view(mask, self.mask_ratio))
            loss = loss + self.contrastive_weight * info_nce(view_a, view_b, self.temperature)
        return loss, logit


def build(vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    return AWMoE(vocab_sizes, item_vectors, **params)
