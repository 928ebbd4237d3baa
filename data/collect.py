"""Collect: the core of the ``collect`` stage, the plan's source read and checked."""

from __future__ import annotations

from pathlib import Path

from data.dataset import Dataset
from data.sources import load_source
from data.validate import validate_dataset
from pipeline.plan import DataSection


def collect(data: DataSection, root: Path, file: str) -> Dataset:
    """Read every sample of the plan's source and check its structure.

    Args:
        data: the plan's data section.
        root: the project root (relative source paths).
        file: where the raw dataset goes, named in validation errors.

    Returns:
        Every sample, labeled or not.

    Raises:
        SourceError: the source can't be read.
        DataValidationError: shapes, dtypes, ids, NaN/inf or value ranges are wrong.
    """
    dataset = load_source(data, root)
    validate_dataset(dataset, data, file, labeled=False)
    return dataset
