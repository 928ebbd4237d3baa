"""Production samples back into the data phase: labeled feedback for retraining, a labeling queue otherwise.

- ``feedback_dataset``: the store's labeled predictions as a Dataset (sample ids ``feedback-<request_id>``),
  written to ``data/feedback/samples.npz`` + ``meta.json`` for the collect stage to merge and DVC to version.
- ``labeling_queue``: the window's unlabeled samples most worth a label: the least confident, and the ones
  furthest out on the drifted features; exported like the label stage's queue (CSV + Label Studio JSON),
  with the request id as ``sample_id`` so labels come back through ``POST /v1/feedback``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from config.layout import SAMPLES
from data.dataset import UNLABELED, Dataset, DatasetMeta
from monitoring.drift import DriftResult
from monitoring.features import CONFIDENCE

FEEDBACK_PREFIX = "feedback-"


def feedback_dataset(window: pd.DataFrame, meta: DatasetMeta) -> Dataset:
    """The labeled rows of a store window as a Dataset (the latest prediction per request id).

    Args:
        window: ``PredictionReader.window`` rows (``request_id``, ``features``, ``label``).
        meta: the champion's DatasetMeta (input shape, classes).

    Returns:
        Features in source units, labels (int class ids or float values), ids ``feedback-<request_id>``.

    Raises:
        ValueError: a labeled row's features don't have the model's input shape, or a class id is unknown.
    """
    labeled = window[window["label"].notna()].drop_duplicates("request_id", keep="last")
    shape = tuple(meta.input_shape)
    features = np.zeros((0, *shape), dtype="float32")
    if len(labeled):
        wrong = [
            rid for rid, x in zip(labeled["request_id"], labeled["features"], strict=True) if x.shape != shape
        ]
        if wrong:
            raise ValueError(
                f"Expected feedback inputs of shape {shape}. Received other shapes for {wrong[:5]}."
            )
        features = np.stack(labeled["features"].to_list()).astype("float32")
    values = labeled["label"].to_numpy()
    if meta.task == "classification":
        labels = values.astype("int64")
        unknown = sorted({int(v) for v in labels if not 0 <= v < meta.num_classes})
        if unknown:
            raise ValueError(f"Expected feedback class ids 0..{meta.num_classes - 1}. Received {unknown}.")
    else:
        labels = values.astype("float32")
    ids = np.array([f"{FEEDBACK_PREFIX}{rid}" for rid in labeled["request_id"]], dtype=str)
    return Dataset(features, labels, ids, meta)


def export_feedback(dataset: Dataset, folder: Path) -> Path:
    """Write the feedback dataset to ``folder`` (``data/feedback``) as ``samples.npz`` + ``meta.json``, for
    the collect stage; returns the npz path."""
    return dataset.save(folder, SAMPLES)


def labeling_queue(
    window: pd.DataFrame, frame: pd.DataFrame, reference: pd.DataFrame, result: DriftResult, size: int
) -> np.ndarray:
    """Unlabeled rows to label first: the least confident and the furthest out on drifted features.

    Args:
        window: the store rows (``label`` NaN where unlabeled).
        frame: the window's monitoring frame, row-aligned with ``window``.
        reference: the reference's monitoring frame.
        result: the drift check (which features drifted).
        size: how many rows at most.

    Returns:
        Positional indices into ``window``, most useful first, no repeats.
    """
    unlabeled = np.flatnonzero(window["label"].isna().to_numpy())
    if not len(unlabeled) or size <= 0:
        return np.zeros(0, dtype=int)
    drifted = [f.name for f in result.drifted_features if f.name in frame and frame[f.name].dtype.kind == "f"]
    outlying = np.zeros(len(frame))
    if drifted:
        spread = reference[drifted].std().replace(0, 1.0)
        outlying = ((frame[drifted] - reference[drifted].mean()).abs() / spread).max(axis=1).to_numpy()
    confidence = frame[CONFIDENCE].to_numpy() if CONFIDENCE in frame else np.zeros(len(frame))
    by_confidence = unlabeled[np.argsort(confidence[unlabeled], kind="stable")]
    by_outlying = unlabeled[np.argsort(-outlying[unlabeled], kind="stable")]
    chosen: list[int] = []
    for pair in zip(by_confidence, by_outlying, strict=True):
        for index in pair:
            if index not in chosen and len(chosen) < size:
                chosen.append(int(index))
    return np.array(chosen, dtype=int)


def export_labeling_queue(
    window: pd.DataFrame, rows: np.ndarray, meta: DatasetMeta, directory: Path
) -> list[Path]:
    """Write the queue (``queue.csv``, ``labelstudio_tasks.json``, config) for the chosen window rows.

    Args:
        window: the store rows.
        rows: positional indices (``labeling_queue``).
        meta: the champion's DatasetMeta (classes for the Label Studio config).
        directory: where the files go (``var/labeling/<time>/``).

    Returns:
        The files written.
    """
    from data.labelfiles import export_queue

    chosen = window.iloc[rows]
    shape = tuple(meta.input_shape)
    features = np.stack(chosen["features"].to_list()) if len(chosen) else np.zeros((0, *shape))
    dataset = Dataset(
        features.astype("float32"),
        np.full(len(chosen), UNLABELED, dtype="int64"),
        chosen["request_id"].to_numpy().astype(str),
        meta,
    )
    return export_queue(dataset, directory)
