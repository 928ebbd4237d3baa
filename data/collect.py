"""Collect: the core of the ``collect`` stage, the plan's source read and checked, plus production feedback.

Labeled production samples that monitoring exported to ``data/feedback/samples.npz`` (ids
``feedback-<request_id>``, versioned with ``dvc add data/feedback``) are appended to the source, so a retrain
learns from them. The folder is a dependency of the collect stage in dvc.yaml: it must exist, even empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from config.layout import FEEDBACK_DIR, SAMPLES, ProjectLayout
from config.plan import DataSection
from data.dataset import Dataset
from data.sources import SourceError, load_source
from data.validate import DataValidationError, listing, validate_dataset

KEEP_FILE = ".keep"


def ensure_feedback_dir(layout: ProjectLayout) -> Path:
    """Create ``data/feedback`` (with a ``.keep`` file) when missing: the collect stage's DVC dependency.

    Returns:
        The folder.
    """
    folder = layout.feedback_dir
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.iterdir()):
        (folder / KEEP_FILE).touch()
    return folder


def collect(data: DataSection, layout: ProjectLayout, file: str) -> Dataset:
    """Read every sample of the plan's source, append the exported feedback, and check the structure.

    Args:
        data: the plan's data section.
        layout: the project (relative source paths are taken from its root; feedback from ``data/feedback``).
        file: where the raw dataset goes, named in validation errors.

    Returns:
        Every sample, labeled or not; feedback samples last.

    Raises:
        SourceError: the source or the feedback file can't be read.
        DataValidationError: shapes, dtypes, ids, NaN/inf or value ranges are wrong, or the feedback doesn't
            fit the source (input shape, task, classes, sample ids).
    """
    dataset = load_source(data, layout.root)
    feedback = load_feedback(layout.feedback_dir)
    if feedback is not None:
        dataset = append_feedback(dataset, feedback, (FEEDBACK_DIR / f"{SAMPLES}.npz").as_posix())
    validate_dataset(dataset, data, file, labeled=False)
    return dataset


def load_feedback(folder: Path) -> Dataset | None:
    """The feedback dataset in ``folder`` (``data/feedback``), or None where no ``samples.npz`` was exported.

    Raises:
        SourceError: the file or its ``meta.json`` can't be read.
    """
    path = folder / f"{SAMPLES}.npz"
    if not path.is_file():
        return None
    try:
        return Dataset.load(folder, SAMPLES)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SourceError(
            f"{path}: expected a feedback dataset (samples.npz with features, labels, sample_ids beside "
            f"meta.json). Received an unreadable one: {error}"
        ) from error


def append_feedback(source: Dataset, feedback: Dataset, file: str) -> Dataset:
    """The source with the feedback samples appended (the source's meta and dtypes kept).

    Args:
        source: the plan's source.
        feedback: the exported production samples.
        file: the feedback file, named in errors.

    Returns:
        ``source`` then ``feedback``.

    Raises:
        DataValidationError: the feedback's input shape, task or classes differ from the source's, or its
            sample ids repeat the source's or each other.
    """
    s, f = source.meta, feedback.meta
    problems: list[tuple[str, str]] = []
    shape = tuple(feedback.features.shape[1:])
    if list(shape) != list(s.input_shape) or list(f.input_shape) != list(s.input_shape):
        problems.append(
            ("input shape", f"expected {tuple(s.input_shape)} like the source, got {shape} ({f.input_shape})")
        )
    if f.task != s.task:
        problems.append(("task", f"expected {s.task!r} like the source, got {f.task!r}"))
    elif s.task == "classification" and list(f.classes) != list(s.classes):
        problems.append(("classes", f"expected {s.classes} like the source, got {f.classes}"))
    ids = feedback.sample_ids.astype(str)
    clashing = sorted(set(ids) & set(source.sample_ids.astype(str)))
    if clashing:
        problems.append(("sample ids", f"already in the source: {listing(clashing)}"))
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        problems.append(("sample ids", f"repeated in the feedback: {listing(values[counts > 1].tolist())}"))
    if problems:
        fix = "re-export it from the store for this plan, or delete it and `dvc add data/feedback`"
        problems.append(("what to do", fix))
        raise DataValidationError(file, problems)
    return Dataset(
        features=np.concatenate([source.features, feedback.features.astype(source.features.dtype)]),
        labels=np.concatenate([source.labels, feedback.labels.astype(source.labels.dtype)]),
        sample_ids=np.concatenate([source.sample_ids.astype(str), ids]),
        meta=s,
    )
