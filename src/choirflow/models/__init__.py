"""Model zoo: one file per model, each naming its paper; shared parts in layers.py."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from choirflow.models import awmoe, choirrec, din, dnn, qin, suan, tin, transformer_dcn

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "dnn": dnn.build,
    "din": din.build,
    "tin": tin.build,
    "qin": qin.build,
    "transformer_dcn": transformer_dcn.build,
    "choirrec": choirrec.build,
    "awmoe": awmoe.build,
    "suan": suan.build,
    "lightsuan": suan.build_light,
    "lightsuan_distilled": suan.build_distilled,
}


def build_model(name: str, vocab_sizes: dict[str, int], item_vectors=None, **params) -> nn.Module:
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](vocab_sizes, item_vectors, **params)
