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
from choirflow.train.data import EncodedSamples


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
    return {k: v.to(device) for k, v in tensors.items()}


def _slice(tensors: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v.index_select(0, idx) for k, v in tensors.items()}


@dataclass
class TrainResult:
    losses: list[float]
    samples_per_second: float
    seconds: float


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
) -> TrainResult:
    torch.manual_seed(seed)
    model.to(device).train()
    tensors = to_tensors(data, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    n = len(data)
    losses: list[float] = []
    start = time.perf_counter()
    seen = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        bar = tqdm(
            range(0, n, batch_size),
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not progress,
            mininterval=2.0,
        )
        for lo in bar:
            batch = _slice(tensors, order[lo : lo + batch_size])
            logits = model(batch)
            loss = loss_fn(logits, batch[label])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            seen += len(logits)
            rate = seen / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", samples_per_s=f"{rate:,.0f}")
    seconds = time.perf_counter() - start
    return TrainResult(losses, seen / max(seconds, 1e-9), seconds)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)
