"""Export a trained model for serving: a `torch.export` program with its feature spec.

Why torch.export (an ExportedProgram, `model.pt2`) and not TorchScript or ONNX: TorchScript is
deprecated in the torch this project locks (2.15 warns on trace and load); ONNX would add
onnx and onnxruntime to the lock for a second runtime whose kernels differ from training's,
while an ExportedProgram runs on the same kernels (scores equal to the last bits), loads with
torch alone and is what AOTInductor compiles for a C++ server. The batch dimension is
dynamic; sequence widths are fixed by the spec. Models export their eval-mode graph: the
attention scores every position and masks padding (`torch.compiler.is_exporting()`), which
gives the same scores as the training path's real-positions-only form.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from choirflow.fields import (
    CATEGORICAL_FIELDS,
    DENSE_FIELDS,
    GROUP_FIELDS,
    GROUP_SEQUENCE_FIELDS,
    SEQUENCE_FIELDS,
)
from choirflow.serving.spec import FORMAT, PROGRAM_FILE, SPEC_FILE, VOCAB_FILE
from choirflow.train.data import FIRST_VALUE, OOV, PAD, EncodedSamples, Vocabulary
from choirflow.train.loop import to_tensors

# Exported probabilities must equal the trained model's within this.
PARITY_TOLERANCE = 1e-5
LABELS = ("click", "conversion")


def feature_spec(example: EncodedSamples, item_embeddings_version: int | None) -> dict[str, Any]:
    """The inputs the exported program takes, in tensor order, with their vocabularies."""
    width = example.gaps_hours.shape[1]
    sequences = {**SEQUENCE_FIELDS, **GROUP_SEQUENCE_FIELDS}
    return {
        "format": FORMAT,
        "reserved_indices": {"padding": PAD, "oov": OOV, "first_value": FIRST_VALUE},
        "item_embeddings_version": item_embeddings_version,
        "inputs": {
            "categorical": [{"name": f, "vocabulary": f} for f in CATEGORICAL_FIELDS],
            "group": [{"name": f, "vocabulary": t} for f, t in GROUP_FIELDS.items()],
            "sequences": [
                {"name": f, "vocabulary": t, "width": int(example.sequences[f].shape[1])}
                for f, t in sequences.items()
            ],
            "gaps": {
                "name": "hist_gap_seconds",
                "width": int(width),
                "unit": "seconds",
                "aligned_with": "hist_item_ids",
            },
            "dense": {
                "fields": list(DENSE_FIELDS),
                "transform": "log1p",
                "low_activity_flag": {"field": "activity_bucket", "value": "low"},
            },
        },
        "rules": (
            "values are matched as strings; null is padding (index 0); a value not in the "
            "vocabulary is out of vocabulary (index 1); sequences are right-aligned, most "
            "recent last, at most `width` items; gaps in seconds before the impression"
        ),
    }


def served_module(model: torch.nn.Module) -> torch.nn.Module:
    """What scores in production: a distilled model serves its student."""
    return model.serving_module() if hasattr(model, "serving_module") else model


def export_model(
    model: torch.nn.Module,
    vocab: Vocabulary,
    example: EncodedSamples,
    folder: str | Path,
    about: dict[str, Any],
    item_embeddings_version: int | None = None,
) -> dict[str, Any]:
    """Write model.pt2, spec.json and vocabularies.json into `folder` (replaced whole) and
    return the spec; the exported program's probabilities on `example` must equal the
    model's within PARITY_TOLERANCE, else nothing is written."""
    module = served_module(model).to("cpu").eval()
    inputs = {k: v for k, v in to_tensors(example, torch.device("cpu")).items() if k not in LABELS}
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(
            module, (inputs,), dynamic_shapes=({k: {0: batch} for k in inputs},)
        )
        expected = torch.sigmoid(module(inputs)).numpy()
        got = torch.sigmoid(program.module()(inputs)).numpy()
    gap = float(np.abs(expected - got).max()) if len(got) else 0.0
    if gap > PARITY_TOLERANCE:
        raise RuntimeError(f"exported program differs from the model by {gap:.2e} on the example")
    spec = feature_spec(example, item_embeddings_version) | {
        "about": about, "parity": {"rows": len(got), "max_abs_diff": gap},
    }  # fmt: skip
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    torch.export.save(program, str(staging / PROGRAM_FILE))
    (staging / SPEC_FILE).write_text(json.dumps(spec, indent=2))
    (staging / VOCAB_FILE).write_text(json.dumps(vocab.values))
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)
    return spec
