"""SUAN and LightSUAN: Exploring Scaling Laws of CTR Model for Online Performance Improvement.

Lai et al., RecSys 2025 (arXiv 2508.15326; code laiweijiang/SUAN, TF1). SUAN stacks Unified
Attention Blocks over a target-aware token sequence: the behaviours, then the candidate as the
last token, under a causal and padding mask. One block (pre-norm, RMSNorm):
1. self-attention, bias-free projections, logits plus a relative bias: a learnt position bias
   (a Toeplitz matrix from a vector of 2N+1) and a learnt bias per log2 bucket of the time
   gap between the two tokens;
2. adaptive fusion: cross-attention from the tokens to the user-profile fields, mixed with
   the tokens by a two-branch SENet gate (softmax over the branches per channel);
3. a SwiGLU feed-forward (hidden 3d), residual.
The readout is the candidate token's last state with the context fields through a Dice MLP.
The grade is the number of stacked blocks.

Because the mask is causal, behaviour tokens never see the candidate (the fusion gate pools
the behaviours only): a user's sequence is encoded once and each candidate adds one token.
The code is written that way, history first, then the candidate against the stored keys.
LightSUAN (`light=True`): behaviours attend only to the `window` behaviours before them (the
candidate still reads them all), and a batch encodes each distinct sequence once, shared by
every candidate of the same request ("parallel inference"). `SUANDistilled` trains a
high-grade SUAN teacher and a LightSUAN student in one run (online distillation: both learn
the clicks, the student also the teacher's probabilities) and serves the student.
The paper's released code does not define grade, the sparse attention or the distillation
loss; those are this file's readings, said in the README.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from choirflow.models.layers import Batch, FeatureEmbedding, mlp, sequence_mask, time_gap_buckets

# The user-level fields the fusion cross-attends to (the same for every candidate of a user).
PROFILE_FIELDS = ("user_id", "age_band", "gender", "city_tier", "activity_bucket")


def _bucket(minutes: torch.Tensor, n_buckets: int) -> torch.Tensor:
    return torch.floor(torch.log2(1 + minutes.abs())).long().clamp(0, n_buckets - 1)


class RelativeBias(nn.Module):
    """[B, H, Tq, Tk] position bias b_pos[i - j] + time bias b_time[bucket(|t_i - t_j|)]."""

    def __init__(self, heads: int, max_len: int, n_buckets: int) -> None:
        super().__init__()
        self.max_len, self.n_buckets = max_len, n_buckets
        self.position = nn.Parameter(torch.zeros(heads, 2 * max_len + 1))
        self.time = nn.Parameter(torch.zeros(heads, n_buckets))

    def forward(self, q_pos, k_pos, q_minutes, k_minutes) -> torch.Tensor:
        rel = (q_pos[:, None] - k_pos[None, :]).clamp(-self.max_len, self.max_len) + self.max_len
        gap = _bucket(q_minutes[:, :, None] - k_minutes[:, None, :], self.n_buckets)
        return self.position[:, rel].unsqueeze(0) + self.time[:, gap].permute(1, 0, 2, 3)


class UnifiedAttentionBlock(nn.Module):
    """Self-attention with relative bias, profile cross-attention fused by a 2-way SENet
    gate, SwiGLU; `forward` takes the queries' tokens and the keys' normalised states apart so
    a candidate token can attend to a stored history."""

    def __init__(self, d: int, heads: int, max_len: int, n_buckets: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm_in, self.norm_attn, self.norm_fuse = nn.RMSNorm(d), nn.RMSNorm(d), nn.RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.bias = RelativeBias(heads, max_len, n_buckets)
        self.cross_q, self.cross_kv = nn.Linear(d, d, bias=False), nn.Linear(d, 2 * d, bias=False)
        self.squeeze = nn.Sequential(nn.Linear(d, max(d // 4, 1)), nn.ReLU())
        self.excite = nn.Linear(max(d // 4, 1), 2 * d)
        self.ffn_in, self.ffn_out = nn.Linear(d, 6 * d), nn.Linear(3 * d, d)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, H, T, dh]

    def attend(self, h_q, h_kv, allowed, bias) -> torch.Tensor:
        d = h_q.shape[-1]
        q = self._heads(F.linear(h_q, self.qkv.weight[:d]))
        k, v = (
            self._heads(F.linear(h_kv, self.qkv.weight[d : 2 * d])),
            self._heads(F.linear(h_kv, self.qkv.weight[2 * d :])),
        )
        logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + bias
        weights = logits.masked_fill(~allowed.unsqueeze(1), float("-inf")).softmax(-1)
        return self.out((weights @ v).transpose(1, 2).flatten(2))

    def cross(self, x: torch.Tensor, profile: torch.Tensor) -> torch.Tensor:
        k, v = self.cross_kv(profile).chunk(2, dim=-1)
        q = self.cross_q(x)
        weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
        return weights @ v

    def fusion_weights(self, x: torch.Tensor, cross: torch.Tensor, mask: torch.Tensor):
        """[B, 2, d] per-channel softmax over (tokens, cross) from the pooled behaviours."""
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = ((x + cross) * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.excite(self.squeeze(pooled)).unflatten(-1, (2, -1)).softmax(1)

    def forward(self, x, prefix, allowed, bias, profile, mask=None, fusion=None):
        """One block over tokens `x` whose keys are `prefix` (stored history states; None:
        none) followed by x's own normalised states;
        with `mask` the fusion gate is pooled from x's real tokens, else `fusion` is given.
        Returns (new x, x's normalised states, the fusion weights)."""
        h = self.norm_in(x)
        keys = h if prefix is None else torch.cat([prefix, h], dim=1)
        x = self.norm_attn(h + self.dropout(self.attend(h, keys, allowed, bias)))
        cross = self.cross(x, profile)
        if fusion is None:
            fusion = self.fusion_weights(x, cross, mask)
        fused = fusion[:, :1] * x + fusion[:, 1:] * cross
        x = self.norm_fuse(x + self.dropout(fused))
        gate, value = self.ffn_in(x).chunk(2, dim=-1)
        return x + self.ffn_out(F.silu(gate) * value), h, fusion


class SUAN(nn.Module):
    paper = "Exploring Scaling Laws of CTR Model for Online Performance Improvement (RecSys 2025)"

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        item_vectors: torch.Tensor | None = None,
        *,
        embedding_dim: int = 16,
        model_dim: int = 32,
        grade: int = 2,
        heads: int = 2,
        max_len: int = 50,
        time_buckets: int = 24,
        dnn_hidden: tuple[int, ...] = (200, 80),
        dropout: float = 0.0,
        light: bool = False,
        window: int = 8,
    ) -> None:
        super().__init__()
        if grade < 1:
            raise ValueError("a SUAN needs at least one block (grade >= 1)")
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim, item_vectors)
        self.project = nn.Linear(self.embedding.token_dim, model_dim)
        self.time = nn.Embedding(time_buckets, model_dim)
        self.position = nn.Embedding(max_len + 1, model_dim)
        self.profile = nn.Linear(embedding_dim, model_dim)
        self.blocks = nn.ModuleList(
            UnifiedAttentionBlock(model_dim, heads, max_len, time_buckets, dropout)
            for _ in range(grade)
        )
        width = self.embedding.context_dim + model_dim + self.embedding.token_dim
        self.dnn = mlp(width, tuple(dnn_hidden), activation="dice", out_dim=1)
        self.time_buckets, self.light, self.window = time_buckets, light, window
        self.max_len = max_len

    def _history(self, batch: Batch, rows: torch.Tensor | None):
        """Tokens, minutes, mask and profile of the sequences in `rows` (None: all)."""
        pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
        mask = pick(sequence_mask(batch))
        minutes = pick(batch["gaps_hours"]).float() * 60.0
        items = self.embedding.history_tokens({k: pick(batch[k]) for k in _SEQUENCE_KEYS})
        length = mask.shape[1]
        buckets = time_gap_buckets(minutes / 60.0, mask, self.time_buckets)
        # Positions count back from the candidate (0), so left padding moves nothing.
        back = (length - torch.arange(length, device=mask.device)).clamp(max=self.max_len)
        positions = self.position(back).unsqueeze(0)
        tokens = self.project(items) + self.time(buckets) + positions
        fields = [self.embedding.field({"categorical": pick(batch["categorical"])}, f)
                  for f in PROFILE_FIELDS]  # fmt: skip
        return tokens, minutes, mask, self.profile(torch.stack(fields, 1))

    def _history_allowed(self, mask: torch.Tensor) -> torch.Tensor:
        """[B, L, L]: causal, real keys, the diagonal (a padding query has a key), and for
        LightSUAN only the `window` most recent."""
        length = mask.shape[1]
        i = torch.arange(length, device=mask.device)
        causal = i[None, :] <= i[:, None]
        if self.light:
            causal = causal & (i[:, None] - i[None, :] < self.window)
        return (causal.unsqueeze(0) & mask.unsqueeze(1)) | torch.eye(
            length, dtype=torch.bool, device=mask.device
        ).unsqueeze(0)

    def _shared_rows(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(distinct rows, each row's distinct index) of the history and profile inputs;
        (None, None) unless LightSUAN's parallel inference applies."""
        if not self.light:
            return None, None
        profile = batch["categorical"][:, [self.embedding.fields.index(f) for f in PROFILE_FIELDS]]
        key = torch.cat(
            [batch["hist_item_ids"], batch["hist_categories"],
             batch["gaps_hours"].float().contiguous().view(torch.int32).long(), profile], dim=1,
        )  # fmt: skip
        distinct, inverse = torch.unique(key, dim=0, return_inverse=True)
        rows = torch.arange(inverse.shape[0], device=key.device)
        first = torch.zeros(distinct.shape[0], dtype=torch.long, device=key.device)
        first = first.scatter_reduce(0, inverse, rows, reduce="amin", include_self=False)
        return first, inverse

    def encode(self, batch: Batch) -> torch.Tensor:
        """[B, model_dim] the candidate token's last state."""
        rows, inverse = self._shared_rows(batch)
        x, minutes, mask, profile = self._history(batch, rows)
        length = mask.shape[1]
        pos = torch.arange(length + 1, device=x.device)
        allowed = self._history_allowed(mask)
        states = []
        for block in self.blocks:
            bias = block.bias(pos[:length], pos[:length], minutes, minutes)
            x, h, fusion = block(x, None, allowed, bias, profile, mask=mask)
            states.append((h, fusion))
        return self._candidate(batch, states, minutes, mask, profile, inverse)

    def _candidate(self, batch, states, minutes, mask, profile, inverse) -> torch.Tensor:
        """The candidate token through every block, attending to the stored history states."""
        expand = (lambda t: t) if inverse is None else (lambda t: t.index_select(0, inverse))
        minutes, mask, profile = expand(minutes), expand(mask), expand(profile)
        length = mask.shape[1]
        zero = self.time.weight[0] + self.position.weight[0]
        t = (self.project(self.embedding.target_token(batch)) + zero).unsqueeze(1)
        allowed = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1).unsqueeze(1)
        pos = torch.arange(length + 1, device=t.device)
        k_minutes = torch.cat([minutes, torch.zeros_like(minutes[:, :1])], dim=1)
        for block, (h_hist, fusion) in zip(self.blocks, states, strict=True):
            bias = block.bias(pos[length:], pos, k_minutes[:, length:], k_minutes)
            t, _, _ = block(t, expand(h_hist), allowed, bias, profile, fusion=expand(fusion))
        return t.squeeze(1)

    def forward(self, batch: Batch) -> torch.Tensor:
        u = self.encode(without_empty_columns(batch))
        fields = self.embedding.context(batch)
        return self.dnn(torch.cat([fields, u, self.embedding.target_token(batch)], -1)).squeeze(-1)


_SEQUENCE_KEYS = ("hist_item_ids", "hist_categories")


def without_empty_columns(batch: Batch) -> Batch:
    """The batch with the sequence columns that are padding in every row dropped (histories
    are right-aligned, so from the left): attention costs the square of the width, and
    positions count back from the candidate, so the scores do not change."""
    if torch.compiler.is_exporting():
        return batch
    real = sequence_mask(batch).any(0)
    first = int(real.float().argmax()) if bool(real.any()) else real.numel() - 1
    if first == 0:
        return batch
    trimmed = {k: batch[k][:, first:] for k in (*_SEQUENCE_KEYS, "gaps_hours")}
    return {**batch, **trimmed}


class SUANDistilled(nn.Module):
    """Online distillation: a SUAN teacher and a LightSUAN student learn together; the student
    also fits the teacher's (detached) probabilities. Scores are the student's."""

    paper = SUAN.paper

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        item_vectors: torch.Tensor | None = None,
        *,
        teacher: dict | None = None,
        student: dict | None = None,
        distill_weight: float = 1.0,
        embedding_dim: int = 16,
    ) -> None:
        super().__init__()
        self.teacher = SUAN(vocab_sizes, item_vectors, **{"embedding_dim": embedding_dim,
                                                          **(teacher or {})})  # fmt: skip
        student = {"embedding_dim": embedding_dim, "light": True, **(student or {})}
        self.student = SUAN(vocab_sizes, item_vectors, **student)
        self.distill_weight = distill_weight

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.student(batch)

    def serving_module(self) -> nn.Module:
        return self.student

    def training_loss(self, batch: Batch, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        teacher, student = self.teacher(batch).float(), self.student(batch).float()
        loss = F.binary_cross_entropy_with_logits(teacher, label)
        loss = loss + F.binary_cross_entropy_with_logits(student, label)
        soft = torch.sigmoid(teacher).detach()
        distill = F.binary_cross_entropy_with_logits(student, soft)
        return loss + self.distill_weight * distill, student


def build(vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    return SUAN(vocab_sizes, item_vectors, **params)


def build_light(vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    return SUAN(vocab_sizes, item_vectors, **{"light": True, **params})


def build_distilled(vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    return SUANDistilled(vocab_sizes, item_vectors, **params)
