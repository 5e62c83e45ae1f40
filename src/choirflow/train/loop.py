"""The training loop: batches are slices of tensors prepared once; no per-sample Python."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from choirflow.config import project_root
from choirflow.train.data import FIRST_VALUE, EncodedSamples


@dataclass
class ModelConfig:
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


def load_model_config(name: str) -> ModelConfig:
    """configs/models/<name>.yaml (name may end in _test for the tiny variant)."""
    path = project_root() / "configs" / "models" / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no model config {path}")
    raw = yaml.safe_load(path.read_text())
    return ModelConfig(raw["model"], raw.get("params", {}), raw.get("train", {}))


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def to_tensors(data: EncodedSamples, device: torch.device) -> dict[str, torch.Tensor]:
    tensors = {
        "categorical": torch.from_numpy(data.categorical),
        "gaps_hours": torch.from_numpy(data.gaps_hours),
        "click": torch.from_numpy(data.click),
        "conversion": torch.from_numpy(data.conversion),
    }
    tensors.update({k: torch.from_numpy(v) for k, v in data.sequences.items()})
    if data.group is not None:
        tensors["group"] = torch.from_numpy(data.group)
    if data.dense is not None:
        tensors["dense"] = torch.from_numpy(data.dense)
    return {k: v.to(device) for k, v in tensors.items()}


def distributed_context(device: torch.device | None = None) -> tuple[int, int]:
    """(world size, rank): under `torchrun`, joins the process group once (NCCL when training
    on CUDA, gloo on the CPU); otherwise (1, 0)."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0
    if not dist.is_initialized():
        on_cuda = device is not None and device.type == "cuda"
        # CHOIRFLOW_DDP_BACKEND=gloo lets several ranks share one GPU (NCCL refuses that).
        backend = os.environ.get("CHOIRFLOW_DDP_BACKEND") or ("nccl" if on_cuda else "gloo")
        dist.init_process_group(backend)
    return dist.get_world_size(), dist.get_rank()


def pick_distributed_device(requested: str = "auto") -> torch.device:
    """Under torchrun with CUDA, each process takes the GPU of its LOCAL_RANK."""
    import os

    device = pick_device(requested)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


class _WithLoss(nn.Module):
    """The training objective as one module, so DDP sees the whole forward (a model's own
    `training_loss`, as ChoirRec's distillation term, included)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], label: torch.Tensor):
        if hasattr(self.model, "training_loss"):
            return self.model.training_loss(batch, label)
        logits = self.model(batch)
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), label), logits


def _slice(tensors: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v.index_select(0, idx) for k, v in tensors.items()}


@dataclass
class TrainResult:
    losses: list[float]
    samples_per_second: float
    seconds: float
    epochs_run: int = 0
    valid_aucs: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    resumed_from_epoch: int = 0


def _valid_auc(model: nn.Module, valid: EncodedSamples, device: torch.device, label: str) -> float:
    from choirflow.evaluate.metrics import auc

    scores = predict(model, valid, device)
    model.train()
    return auc(getattr(valid, label), scores)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train(
    model: nn.Module,
    data: EncodedSamples,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: torch.device,
    label: str = "click",
    progress: bool = True,
    valid: EncodedSamples | None = None,
    patience: int | None = None,
    lr_plateau_factor: float = 0.1,
    checkpoint_dir: Path | None = None,
    grad_clip: float = 10.0,
    weight_decay: float = 0.0,
) -> TrainResult:
    """Adam (L2 `weight_decay` on every parameter, embeddings included) with gradient
    clipping; with `valid`: AUC per epoch, learning rate cut on a plateau, early stopping
    after `patience` epochs without gain (best weights restored); with `checkpoint_dir`: a
    checkpoint per epoch, and a rerun resumes after the last one. bf16 autocast on CUDA.
    Under `torchrun`, DistributedDataParallel: every rank draws the same permutation and
    takes its own stride of it, so ranks step in lockstep on disjoint rows; validation runs
    on every rank alike (same weights, same decisions), rank 0 writes."""
    torch.manual_seed(seed)
    model.to(device).train()
    world, rank = distributed_context(device)
    step_module: nn.Module = _WithLoss(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_module = DistributedDataParallel(
            step_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
        batch_size = max(1, batch_size // world)
        progress = progress and rank == 0
    tensors = to_tensors(data, device)
    # One multi-tensor (CPU) or fused (CUDA) update instead of a loop over parameters.
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    optimizer = torch.optim.Adam(
        model.parameters(), lr=learning_rate, weight_decay=weight_decay, **fast
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=lr_plateau_factor, patience=0
    )
    generator = torch.Generator(device="cpu").manual_seed(seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    n = len(data)
    losses: list[float] = []
    aucs: list[float] = []
    best: tuple[float, int, dict] | None = None
    first_epoch = 0
    last = checkpoint_dir / "last.pt" if checkpoint_dir else None
    if last is not None and last.exists():
        state = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        losses, aucs, first_epoch = state["losses"], state["aucs"], state["epoch"]
        best = state.get("best")
    start = time.perf_counter()
    seen = 0
    stopped = False
    epoch = first_epoch
    for epoch in range(first_epoch, epochs):
        order = torch.randperm(n, generator=generator)
        if world > 1:  # equal shares, so every rank runs the same number of steps
            order = order[: n - n % world][rank::world]
        order = order.to(device)
        bar = tqdm(
            range(0, len(order), batch_size),
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not progress,
            mininterval=2.0,
        )
        for lo in bar:
            batch = _slice(tensors, order[lo : lo + batch_size])
            with autocast:
                loss, logits = step_module(batch, batch[label])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
            seen += len(logits)
            rate = seen / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", samples_per_s=f"{rate:,.0f}")
        if valid is not None:
            score = _valid_auc(model, valid, device, label)
            aucs.append(score)
            scheduler.step(score)
            if best is None or score > best[0]:
                weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best = (score, epoch + 1, weights)
            elif patience is not None and epoch + 1 - best[1] >= patience:
                stopped = True
        if last is not None and rank == 0:
            _save_state(
                last,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "losses": losses,
                    "aucs": aucs,
                    "epoch": epoch + 1,
                    "best": best,
                },
            )
        if stopped:
            break
    if best is not None:
        model.load_state_dict(best[2])
    seconds = time.perf_counter() - start
    return TrainResult(
        losses,
        seen / max(seconds, 1e-9),
        seconds,
        epochs_run=(epoch + 1) if epochs else 0,
        valid_aucs=aucs,
        best_epoch=best[1] if best else None,
        stopped_early=stopped,
        resumed_from_epoch=first_epoch,
    )


def warm_start(model: nn.Module, vocab, checkpoint_path: str | Path) -> int:
    """Copy a previous model's weights into `model`: embedding rows by vocabulary value (the
    vocabularies of two days differ), every other tensor where the shapes agree. Returns the
    number of tensors copied."""
    old = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    old_state, old_vocab = old["state_dict"], old["meta"]["vocab"]
    new_state = model.state_dict()
    copied = 0
    with torch.no_grad():
        for key, tensor in new_state.items():
            if key not in old_state:
                continue
            source = old_state[key]
            field_name = key.split(".")[2] if key.startswith("embedding.tables.") else None
            if field_name and field_name in old_vocab and field_name in vocab.values:
                old_index = {v: i + FIRST_VALUE for i, v in enumerate(old_vocab[field_name])}
                rows = [
                    (i + FIRST_VALUE, old_index[v])
                    for i, v in enumerate(vocab.values[field_name])
                    if v in old_index
                ]
                if rows:
                    dst, src = map(list, zip(*rows, strict=True))
                    tensor[dst] = source[src].to(tensor.dtype)
                    copied += 1
            elif source.shape == tensor.shape:
                tensor.copy_(source)
                copied += 1
    model.load_state_dict(new_state)
    return copied


@torch.no_grad()
def predict(
    model: nn.Module, data: EncodedSamples, device: torch.device, batch_size: int = 8192
) -> np.ndarray:
    model.to(device).eval()
    tensors = to_tensors(data, device)
    out = []
    for lo in range(0, len(data), batch_size):
        idx = torch.arange(lo, min(lo + batch_size, len(data)), device=device)
        out.append(torch.sigmoid(model(_slice(tensors, idx))).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Atomic like the training state: a reader (promotion, warm start) never sees half a file."""
    _save_state(path, {"state_dict": model.state_dict(), "meta": meta})
