"""gold.samples -> fixed-size numpy arrays, built once with vectorised code.

Categorical values map to indices through a vocabulary fitted on the training window
(0 = padding, 1 = out of vocabulary). Sequences are right-aligned into [N, L] arrays (most
recent behaviour last) so batches are plain slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from choirflow.fields import (
    CATEGORICAL_FIELDS,
    DENSE_FIELDS,
    GROUP_FIELDS,
    GROUP_SEQUENCE_FIELDS,
    SEQUENCE_FIELDS,
)

# Reserved indices of every vocabulary: 0 pads a sequence or marks a missing value, 1 is a
# value not seen in training; a vocabulary's own values start at FIRST_VALUE.
PAD, OOV = 0, 1
FIRST_VALUE = 2

# The default of settings.groups.group_seq_len; encode() takes the setting.
GROUP_SEQ_LEN = 20
SAMPLE_COLUMNS = [
    *CATEGORICAL_FIELDS,
    *SEQUENCE_FIELDS,
    "hist_gap_seconds",
    "click",
    "conversion",
    "event_id",
    "dt",
    *GROUP_FIELDS,
    *GROUP_SEQUENCE_FIELDS,
    *DENSE_FIELDS,
]
# Columns gold.samples gained later (and importers may lack): absent means padding (or 0).
USER_CATEGORY_FIELDS = ("user_category_ctr_level", "user_category_impressions_level")
OPTIONAL_COLUMNS = (*GROUP_FIELDS, *GROUP_SEQUENCE_FIELDS, *DENSE_FIELDS, *USER_CATEGORY_FIELDS)


def _tables() -> dict[str, list[str]]:
    """Vocabulary (embedding table) name -> every column whose values index it."""
    sources: dict[str, list[str]] = {}
    for name in CATEGORICAL_FIELDS:
        sources.setdefault(name, []).append(name)
    for column, table in {**SEQUENCE_FIELDS, **GROUP_FIELDS, **GROUP_SEQUENCE_FIELDS}.items():
        sources.setdefault(table, []).append(column)
    return sources


def with_optional_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Tables written before groups (or the user x category levels) existed, or by importers,
    lack those columns."""
    frame = frame.copy()
    for column in OPTIONAL_COLUMNS:
        if column not in frame:
            frame[column] = 0 if column in DENSE_FIELDS else None
    return frame


@dataclass
class Vocabulary:
    """Per-field value -> index maps; sequence fields reuse their target field's map."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def size(self, name: str) -> int:
        return len(self.values[name]) + FIRST_VALUE

    def index(self, name: str) -> pd.Index:
        return pd.Index(self.values[name])

    @classmethod
    def fit(cls, frame: pd.DataFrame, min_count: int = 1) -> Vocabulary:
        frame = with_optional_columns(frame)
        values: dict[str, list[str]] = {}
        for table, columns in _tables().items():
            parts = []
            for column in columns:
                if column in SEQUENCE_FIELDS or column in GROUP_SEQUENCE_FIELDS:
                    parts.append(pd.Series(_flatten(frame[column])[0]).astype(str))
                else:
                    parts.append(frame[column].dropna().astype(str))
            counts = pd.concat(parts, ignore_index=True).value_counts()
            values[table] = sorted(counts[counts >= min_count].index.tolist())
        return cls(values)


def _flatten(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A column of lists/arrays -> (all elements, length per row)."""
    lengths = column.map(lambda v: 0 if v is None else len(v)).to_numpy(dtype=np.int64)
    parts = [np.asarray(v) for v in column if v is not None and len(v)]
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=object)
    return flat, lengths


def _lookup(index: pd.Index, values: np.ndarray) -> np.ndarray:
    pos = index.get_indexer(values)
    return np.where(pos >= 0, pos + FIRST_VALUE, OOV).astype(np.int64)


def _right_aligned(flat: np.ndarray, lengths: np.ndarray, max_len: int, dtype) -> np.ndarray:
    n = len(lengths)
    out = np.zeros((n, max_len), dtype=dtype)
    if flat.size == 0:
        return out
    rows = np.repeat(np.arange(n), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    within = np.arange(flat.size) - starts  # position inside its row's list
    cols = max_len - np.repeat(lengths, lengths) + within  # right-align
    keep = cols >= 0  # longer lists keep their most recent max_len items
    out[rows[keep], cols[keep]] = flat[keep]
    return out


@dataclass
class EncodedSamples:
    categorical: np.ndarray  # [N, F] int64
    sequences: dict[str, np.ndarray]  # name -> [N, L] int64
    gaps_hours: np.ndarray  # [N, L] float32, 0 at padding
    click: np.ndarray  # [N] float32
    conversion: np.ndarray  # [N] float32
    users: np.ndarray  # [N] object, for grouped metrics
    activity_bucket: np.ndarray  # [N] object
    group: np.ndarray | None = None  # [N, len(GROUP_FIELDS)] int64
    dense: np.ndarray | None = None  # [N, len(DENSE_FIELDS) + 1] float32, last = low activity

    def __len__(self) -> int:
        return len(self.click)


def _categorical(frame: pd.DataFrame, vocab: Vocabulary, fields: dict[str, str]) -> np.ndarray:
    return np.stack(
        [
            np.where(
                frame[name].isna().to_numpy(),
                PAD,
                _lookup(vocab.index(table), frame[name].astype(str).to_numpy()),
            )
            for name, table in fields.items()
        ],
        axis=1,
    )


def _sequence(frame: pd.DataFrame, vocab: Vocabulary, column: str, table: str, max_len: int):
    flat, lengths = _flatten(frame[column])
    ids = _lookup(vocab.index(table), flat.astype(str)) if flat.size else flat.astype(np.int64)
    return _right_aligned(ids, lengths, max_len, np.int64)


def encode(
    frame: pd.DataFrame, vocab: Vocabulary, max_len: int, group_seq_len: int = GROUP_SEQ_LEN
) -> EncodedSamples:
    """Behaviour sequences keep their last `max_len` items, group sequences their last
    `group_seq_len` (settings.features.max_seq_len and settings.groups.group_seq_len)."""
    frame = with_optional_columns(frame)
    categorical = _categorical(frame, vocab, {n: n for n in CATEGORICAL_FIELDS})
    sequences = {
        seq: _sequence(frame, vocab, seq, target, max_len)
        for seq, target in SEQUENCE_FIELDS.items()
    }
    for seq, target in GROUP_SEQUENCE_FIELDS.items():
        sequences[seq] = _sequence(frame, vocab, seq, target, group_seq_len)
    flat_gap, gap_len = _flatten(frame["hist_gap_seconds"])
    gaps = _right_aligned(flat_gap.astype(np.float32) / 3600.0, gap_len, max_len, np.float32)
    counts = frame[list(DENSE_FIELDS)].fillna(0).to_numpy(dtype=np.float32)
    low = (frame["activity_bucket"].astype(str) == "low").to_numpy(dtype=np.float32)
    return EncodedSamples(
        categorical=categorical,
        sequences=sequences,
        gaps_hours=gaps,
        click=frame["click"].to_numpy(dtype=np.float32),
        conversion=frame["conversion"].to_numpy(dtype=np.float32),
        users=frame["user_id"].to_numpy(dtype=object),
        activity_bucket=frame["activity_bucket"].to_numpy(dtype=object),
        group=_categorical(frame, vocab, GROUP_FIELDS),
        dense=np.concatenate([np.log1p(counts), low[:, None]], axis=1),
    )
