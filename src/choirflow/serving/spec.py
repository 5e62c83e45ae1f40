"""The feature spec a served model is exported with, and the loader that scores raw samples.

A server gets samples as raw values (strings and numbers, as gold.samples holds them), not
indices. The spec says which fields the model reads, in which tensor and order, which
vocabulary each one indexes (index 0 pads a sequence or marks a missing value, 1 is a value
not seen in training, values start at 2), how wide each sequence is (right-aligned, most
recent last) and how counts are scaled; the vocabularies travel beside it. This module reads
only the spec and torch, so a server needs neither Spark nor the training code; the parity
test scores the same rows through it and through the training code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPEC_FILE, VOCAB_FILE, PROGRAM_FILE = "spec.json", "vocabularies.json", "model.pt2"
FORMAT = "choirflow-serving/1"


class ServingInputError(ValueError):
    """A sample the exported model cannot score as given (the message names the sample,
    the field and what was expected)."""


@dataclass
class ServedModel:
    spec: dict[str, Any]
    vocabularies: dict[str, dict[str, int]]
    program: torch.nn.Module

    @classmethod
    def load(cls, folder: str | Path) -> ServedModel:
        folder = Path(folder)
        spec = json.loads((folder / SPEC_FILE).read_text())
        if spec.get("format") != FORMAT:
            raise ValueError(f"{folder / SPEC_FILE}: format {spec.get('format')!r}, not {FORMAT}")
        first = spec["reserved_indices"]["first_value"]
        raw = json.loads((folder / VOCAB_FILE).read_text())
        vocabularies = {t: {v: i + first for i, v in enumerate(vals)} for t, vals in raw.items()}
        program = torch.export.load(str(folder / PROGRAM_FILE)).module()
        return cls(spec, vocabularies, program)

    @property
    def fields(self) -> set[str]:
        inputs = self.spec["inputs"]
        names = {f["name"] for key in ("categorical", "group", "sequences") for f in inputs[key]}
        return names | {inputs["gaps"]["name"], *inputs["dense"]["fields"]}

    def check(self, samples: list[dict[str, Any]]) -> None:
        """Every sample has exactly the spec's fields and sequences within their widths."""
        known = self.fields
        for n, sample in enumerate(samples):
            unknown, missing = sorted(set(sample) - known), sorted(known - set(sample))
            if unknown:
                raise ServingInputError(
                    f"sample {n}: unknown field {unknown[0]!r}; the model reads {sorted(known)}"
                )
            if missing:
                raise ServingInputError(f"sample {n}: field {missing[0]!r} is missing")
            for seq in self.spec["inputs"]["sequences"]:
                length = len(_items(sample[seq["name"]]))
                if length > seq["width"]:
                    raise ServingInputError(
                        f"sample {n}: {seq['name']} holds {length} items, wider than the "
                        f"model's {seq['width']} (send the most recent {seq['width']})"
                    )
            gaps = self.spec["inputs"]["gaps"]
            n_gaps, n_items = (
                len(_items(sample[gaps["name"]])),
                len(_items(sample[gaps["aligned_with"]])),
            )
            if n_gaps != n_items:
                raise ServingInputError(
                    f"sample {n}: {gaps['name']} has {n_gaps} values for {n_items} items in "
                    f"{gaps['aligned_with']}"
                )

    def _index(self, table: str, value: Any) -> int:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return self.spec["reserved_indices"]["padding"]
        return self.vocabularies[table].get(str(value), self.spec["reserved_indices"]["oov"])

    def tensors(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The model's input tensors for raw samples (checked first)."""
        self.check(samples)
        inputs = self.spec["inputs"]

        def table(fields: list[dict]) -> torch.Tensor:
            rows = [[self._index(f["vocabulary"], s[f["name"]]) for f in fields] for s in samples]
            return torch.tensor(rows, dtype=torch.int64).reshape(len(samples), len(fields))

        out = {"categorical": table(inputs["categorical"]), "group": table(inputs["group"])}
        for seq in inputs["sequences"]:
            out[seq["name"]] = torch.from_numpy(self._right_aligned(samples, seq))
        gaps = inputs["gaps"]
        hours = [[float(g) / 3600.0 for g in _items(s[gaps["name"]])] for s in samples]
        out["gaps_hours"] = torch.from_numpy(_right_align(hours, gaps["width"], np.float32))
        dense = inputs["dense"]
        counts = [[float(s[f] or 0) for f in dense["fields"]] for s in samples]
        flag, low = dense["low_activity_flag"]["field"], dense["low_activity_flag"]["value"]
        lows = [[1.0 if s[flag] == low else 0.0] for s in samples]
        out["dense"] = torch.from_numpy(
            np.concatenate([np.log1p(np.array(counts, np.float32).reshape(len(samples), -1)),
                            np.array(lows, np.float32).reshape(len(samples), 1)], axis=1)
        )  # fmt: skip
        return out

    def _right_aligned(self, samples: list[dict[str, Any]], seq: dict) -> np.ndarray:
        ids = [[self._index(seq["vocabulary"], v) for v in _items(s[seq["name"]])] for s in samples]
        return _right_align(ids, seq["width"], np.int64)

    @torch.no_grad()
    def score(self, samples: list[dict[str, Any]]) -> np.ndarray:
        """Click (or conversion) probabilities of raw samples."""
        if not samples:
            return np.zeros(0, dtype=np.float32)
        return torch.sigmoid(self.program(self.tensors(samples))).numpy()


def _items(value: Any) -> list:
    """A sequence value as a list (None, a list or an array)."""
    return [] if value is None else list(value)


def _right_align(rows: list[list], width: int, dtype) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=dtype)
    for n, row in enumerate(rows):
        if row:
            out[n, width - len(row) :] = row
    return out
