"""Model zoo: one file per model, each naming its paper; shared parts in layers.py."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from choirflow.models import din

BUILDERS: dict[str, Callable[..., nn.Module]] = {"din": din.build}


def build_model(name: str, vocab_sizes: dict[str, int], **params) -> nn.Module:
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](vocab_sizes, **params)
