"""What the train and evaluate stages leave for the rest of the lifecycle, written and read in one place.

- ``artifacts/train.json``: the ``TrainRecord`` of the version the train stage registered.
- ``reports/metrics.json`` + ``reports/predictions_test.npz``: the evaluate stage's measurements and its
  outputs on the test split, which the gate compares with the champion's row by row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from config.layout import PREPARED_DIR, TEST_PREDICTIONS, TRAIN_RECORD, ProjectLayout
from data.dataset import Dataset


class StageFileError(ValueError):
    """A stage's file is unreadable or disagrees with another; the message names the file."""


@dataclass(frozen=True)
class TrainRecord:
    """``artifacts/train.json``: the run and registered version the train stage produced, and how it went."""

    run_id: str
    model_name: str
    version: str
    model_uri: str = ""
    sha256: str = ""
    accelerator: str = ""
    epochs_run: int = 0
    stopped_by: str = ""
    best_epoch: int | None = None
    seconds: float = 0.0
    samples_per_second: float = 0.0
    plan_hash: str = ""

    def write(self, layout: ProjectLayout) -> Path:
        return write_json(layout.train_record, asdict(self))

    @classmethod
    def read(cls, layout: ProjectLayout) -> TrainRecord | None:
        """The record, or None before the train stage ever ran.

        Raises:
            StageFileError: the file is not a train record (names what is missing).
        """
        path = layout.train_record
        if not path.is_file():
            return None
        try:
            content = json.loads(path.read_text())
            known = {name: content[name] for name in cls.__dataclass_fields__ if name in content}
            return cls(**{**known, "version": str(content["version"])})
        except (ValueError, KeyError, TypeError) as error:
            raise StageFileError(
                f"{TRAIN_RECORD}: expected model_name, version and run_id; got an unreadable record ({error})"
            ) from None


def read_evaluation(layout: ProjectLayout, test: Dataset) -> tuple[dict[str, Any], np.ndarray]:
    """The evaluate stage's metrics and its outputs on ``test`` (the prepared test split).

    Raises:
        StageFileError: the outputs are for other rows than ``test`` (the evaluate stage is stale).
    """
    from models.evaluate import read_predictions

    metrics = json.loads(layout.test_metrics.read_text())
    outputs, _, sample_ids = read_predictions(layout.test_predictions)
    if sample_ids.tolist() != test.sample_ids.astype(str).tolist():
        raise StageFileError(
            f"Expected {TEST_PREDICTIONS} on the rows of {PREPARED_DIR}/test.npz. "
            "Received other rows (re-run `dvc repro evaluate`)."
        )
    return metrics, outputs


def write_json(path: Path, content: dict[str, Any]) -> Path:
    """``content`` as sorted, indented JSON (stable bytes for DVC); parent folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    return path
