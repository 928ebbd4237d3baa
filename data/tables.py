"""The ``table:PATH`` source: a CSV or Parquet file with a named target column.

Every other column is a numeric feature, except an optional ``sample_id`` column that names the rows (else
rows are named ``row-<n>``, n counting data rows from 1). Rows with an empty target are unlabeled. Class
labels may be strings or integers: they are mapped to ids through ``data.classes`` (by name, or as ids
``0..k-1``), else through their sorted unique values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from config.plan import DataSection
from data.dataset import UNLABELED, Dataset, DatasetMeta
from data.naming import SourceError
from data.validate import listing

ID_COLUMN = "sample_id"
_READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}


def load_table(path: Path, data: DataSection) -> Dataset:
    """Read a table source.

    Args:
        path: the CSV or Parquet file.
        data: the plan's data section: ``target``, ``task``, ``classes``.

    Returns:
        Features float32 ``(n, columns)``, labels int64 (-1 where the target is empty) or float32 targets
        (NaN where empty) for regression.

    Raises:
        SourceError: the file is missing or of another format, the target column is missing, a feature
            column is not numeric, sample ids repeat, or a label is not one of ``data.classes``.
    """
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise SourceError(f"data.source: {path}: expected a .csv or .parquet file, got {path.suffix!r}")
    if not path.is_file():
        raise SourceError(f"data.source: table file {path} does not exist")
    try:
        frame = reader(path)
    except (OSError, ValueError) as error:
        raise SourceError(f"{path}: can't read it as {path.suffix[1:]}: {error}") from None
    target = str(data.target)
    if target not in frame.columns:
        raise SourceError(
            f"data.target: {path} has no column {target!r}; "
            f"its columns are {', '.join(map(str, frame.columns))}"
        )
    if ID_COLUMN in frame.columns:
        ids = frame[ID_COLUMN].astype(str).to_numpy()
        repeated = pd.Series(ids)[pd.Series(ids).duplicated()].unique().tolist()
        if repeated:
            raise SourceError(f"{path}: column {ID_COLUMN!r} repeats ids: {listing(repeated)}")
    else:
        ids = np.array([f"row-{i + 1}" for i in range(len(frame))])
    features_frame = frame.drop(columns=[c for c in (target, ID_COLUMN) if c in frame.columns])
    not_numeric = [
        str(c) for c in features_frame.columns if not pd.api.types.is_numeric_dtype(features_frame[c])
    ]
    if not_numeric:
        raise SourceError(f"{path}: feature columns must be numeric, got text in {', '.join(not_numeric)}")
    if features_frame.shape[1] == 0:
        raise SourceError(f"{path}: no feature columns besides the target {target!r}")
    features = features_frame.to_numpy(dtype=np.float32)
    column = frame[target]
    empty = column.isna() | (column.astype(str).str.strip() == "")
    if data.task == "regression":
        labels = pd.to_numeric(column.where(~empty), errors="coerce")
        bad = np.flatnonzero(labels.isna().to_numpy() & ~empty.to_numpy())
        if bad.size:
            raise SourceError(f"{path}: column {target!r}: expected numbers, got text in rows {_rows(bad)}")
        classes: list[str] = []
        label_array = labels.to_numpy(dtype=np.float32)
    else:
        names = [None if gap else _label_name(value) for value, gap in zip(column, empty, strict=True)]
        classes, label_array = _class_ids(names, data.classes, path, target)
    meta = DatasetMeta(
        source=data.source,
        kind="tabular",
        task=data.task,
        classes=classes,
        input_shape=[features.shape[1]],
        feature_names=[str(c) for c in features_frame.columns],
    )
    return Dataset(features, label_array, ids, meta)


def _label_name(value: object) -> str | None:
    """A label as text; integral numbers as integers (pandas reads an int column with gaps as float)."""
    if value is None:
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _class_ids(
    names: list[str | None], plan_classes: list[str] | None, path: Path, target: str
) -> tuple[list[str], np.ndarray]:
    present = sorted({name for name in names if name is not None}, key=_natural)
    if plan_classes is None:
        classes = present
        lookup = {name: i for i, name in enumerate(classes)}
    elif all(name in plan_classes for name in present):
        classes, lookup = list(plan_classes), {name: i for i, name in enumerate(plan_classes)}
    elif all(name.isdigit() and int(name) < len(plan_classes) for name in present):
        # Integer labels 0..k-1 are ids into data.classes.
        classes, lookup = list(plan_classes), {str(i): i for i in range(len(plan_classes))}
    else:
        unknown = [name for name in present if name not in plan_classes]
        rows = np.flatnonzero([name in unknown for name in names])
        raise SourceError(
            f"{path}: column {target!r}: labels {listing(unknown)} are not in data.classes {plan_classes} "
            f"(rows {_rows(rows)})"
        )
    labels = np.array([UNLABELED if name is None else lookup[name] for name in names], dtype=np.int64)
    return classes, labels


def _natural(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.lstrip("-").isdigit() else (1, name)


def _rows(index: np.ndarray) -> str:
    """Data row numbers counted from 1, the first ten then how many more."""
    return listing([str(i + 1) for i in index])
