"""The files one training run leaves behind, named once.

`<models>/<record name>/<day>/` holds the checkpoint, the evaluation day's predictions (read by
promotion and the report) and the loss curve (read by the report); `train_state/` holds the
resumable training state while the run is in progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHECKPOINT = "model.pt"
EVAL_PREDICTIONS = "eval_predictions.parquet"
TRAINING_CURVE = "training_curve.json"
TRAIN_STATE = "train_state"


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run's files under its folder."""

    folder: Path

    @classmethod
    def of(cls, models_dir: str | Path, record_name: str, dt: str) -> RunFiles:
        return cls(Path(models_dir) / record_name / dt)

    @classmethod
    def beside(cls, checkpoint: str | Path) -> RunFiles:
        return cls(Path(checkpoint).parent)

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT

    @property
    def predictions(self) -> Path:
        return self.folder / EVAL_PREDICTIONS

    @property
    def curve(self) -> Path:
        return self.folder / TRAINING_CURVE

    @property
    def train_state(self) -> Path:
        return self.folder / TRAIN_STATE
