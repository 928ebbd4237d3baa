"""Validation before anything trains: bad data stops the pipeline with the file, the samples and the rule.

Rules: shapes, dtypes, unique sample ids, NaN/inf, value ranges, unlabeled samples, duplicate samples
(identical features), minimum samples per class, and the same sample in two splits (by id and by content).
Every broken rule is collected into one :class:`DataValidationError`, one line per rule::

    data/labeled/samples.npz: non-finite values: 2 samples hold NaN or inf: sample ids a, b (rows 3, 17)

Rows are indices into the arrays of the file named (0-based).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from config.plan import DataSection
from data.dataset import UNLABELED, Dataset

# The values features may take, by source kind: pixels of 8-bit images, digits' 16 grey levels.
_RANGES = {"sklearn:digits": (0.0, 16.0), "keras": (0.0, 255.0), "images": (0.0, 255.0)}


class DataValidationError(ValueError):
    """Data that must not train. ``problems`` holds (rule, detail) pairs; the message has one line each."""

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {rule}: {detail}" for rule, detail in problems))

    @property
    def rules(self) -> list[str]:
        return [rule for rule, _ in self.problems]


def listing(items: Sequence[Any], limit: int = 10) -> str:
    """The first ``limit`` items, comma separated, then ``and N more``."""
    shown = ", ".join(str(item) for item in list(items)[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def where(index: np.ndarray, sample_ids: np.ndarray) -> str:
    """``sample ids a, b (rows 3, 17)`` for the rows at ``index``."""
    index = np.asarray(index)
    return f"sample ids {listing(sample_ids[index].tolist())} (rows {listing(index.tolist())})"


def feature_range(source: str) -> tuple[float, float] | None:
    """The range a source's features must lie in, or None where any finite value is fine (tables)."""
    return _RANGES.get(source) or _RANGES.get(source.partition(":")[0])


def validate_dataset(dataset: Dataset, data: DataSection, file: str, *, labeled: bool = True) -> None:
    """Check one dataset against the rules.

    Args:
        dataset: the arrays and their meta.
        data: the plan's data section (task, min_samples_per_class).
        file: the file the dataset was read from or is written to, named in every message.
        labeled: True for data that trains (every sample labeled, no duplicates, enough per class);
            False for raw collected data, which may hold unlabeled samples and duplicates.

    Raises:
        DataValidationError: one line per broken rule.
    """
    problems = _structure(dataset, data)
    if problems:  # the content checks below assume the structure holds
        raise DataValidationError(file, problems)
    features, labels, ids = dataset.features, dataset.labels, dataset.sample_ids
    flat = features.reshape(len(features), -1)
    classification = data.task == "classification"

    repeated = _repeated(ids)
    if repeated.size:
        problems.append(("unique sample ids", f"{repeated.size} rows repeat an id: {where(repeated, ids)}"))
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad.size:
        problems.append(("non-finite values", f"{bad.size} samples hold NaN or inf: {where(bad, ids)}"))
    bounds = feature_range(dataset.meta.source)
    if bounds is not None:
        finite = np.where(np.isfinite(flat), flat, bounds[0])  # NaN/inf are reported above
        outside = np.flatnonzero(((finite < bounds[0]) | (finite > bounds[1])).any(axis=1))
        if outside.size:
            problems.append(
                (
                    "value range",
                    f"expected features in [{bounds[0]:g}, {bounds[1]:g}] for {dataset.meta.source}, "
                    f"{outside.size} samples fall outside "
                    f"(min {finite.min():g}, max {finite.max():g}): "
                    f"{where(outside, ids)}",
                )
            )
    if classification:
        k = dataset.meta.num_classes
        invalid = np.flatnonzero((labels >= k) | (labels < UNLABELED))
        if invalid.size:
            found = listing(sorted(set(labels[invalid].tolist())))
            problems.append(
                ("label range", f"expected class ids 0..{k - 1}, got {found}: {where(invalid, ids)}")
            )
    unlabeled = np.flatnonzero(labels == UNLABELED) if classification else np.flatnonzero(np.isnan(labels))
    if labeled and unlabeled.size:
        problems.append(
            ("unlabeled samples", f"{unlabeled.size} samples have no label: {where(unlabeled, ids)}")
        )
    if labeled:
        groups = duplicate_groups(features)
        if groups:
            shown = "; ".join(where(group, ids) for group in groups[:5])
            more = f"; and {len(groups) - 5} more groups" if len(groups) > 5 else ""
            problems.append(
                (
                    "duplicate samples",
                    f"{len(groups)} groups of samples have identical features: {shown}{more}",
                )
            )
        problems += _min_per_class(dataset, data)
    if problems:
        raise DataValidationError(file, problems)


def _structure(dataset: Dataset, data: DataSection) -> list[tuple[str, str]]:
    problems = []
    features, labels, ids, meta = dataset.features, dataset.labels, dataset.sample_ids, dataset.meta
    if list(features.shape[1:]) != list(meta.input_shape):
        problems.append(
            (
                "shape",
                f"expected features of shape (n, {', '.join(map(str, meta.input_shape))}) as meta.json "
                f"says, got {features.shape}",
            )
        )
    if labels.ndim != 1 or ids.ndim != 1:
        problems.append(("shape", f"expected 1-D labels and sample_ids, got {labels.shape} and {ids.shape}"))
    if features.dtype != np.float32:
        problems.append(("dtype", f"expected float32 features, got {features.dtype}"))
    expected = "int64" if data.task == "classification" else "float32"
    if labels.dtype != np.dtype(expected):
        problems.append(("dtype", f"expected {expected} labels for {data.task}, got {labels.dtype}"))
    if ids.dtype.kind != "U":
        problems.append(("dtype", f"expected str sample_ids, got {ids.dtype}"))
    if data.task == "classification" and meta.num_classes < 2:
        problems.append(("classes", f"expected at least 2 classes in meta.json, got {meta.classes}"))
    return problems


def _repeated(values: np.ndarray) -> np.ndarray:
    _, first, counts = np.unique(values, return_index=True, return_counts=True)
    keep = np.zeros(len(values), dtype=bool)
    keep[first] = True
    return np.flatnonzero(~keep) if (counts > 1).any() else np.array([], dtype=int)


def row_digests(features: np.ndarray) -> list[bytes]:
    """A content hash per sample: equal hashes mean identical features."""
    flat = np.ascontiguousarray(features.reshape(len(features), -1))
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


def duplicate_groups(features: np.ndarray) -> list[np.ndarray]:
    """Index groups (size >= 2, in row order) of samples whose features are identical."""
    groups: dict[bytes, list[int]] = {}
    for index, digest in enumerate(row_digests(features)):
        groups.setdefault(digest, []).append(index)
    return [np.array(group) for group in groups.values() if len(group) > 1]


def _min_per_class(dataset: Dataset, data: DataSection) -> list[tuple[str, str]]:
    minimum = data.min_samples_per_class
    if data.task == "regression":
        if len(dataset) < minimum:
            return [("min samples", f"expected at least {minimum} samples, got {len(dataset)}")]
        return []
    k = dataset.meta.num_classes
    counts = np.bincount(dataset.labels[(dataset.labels >= 0) & (dataset.labels < k)], minlength=k)
    short = [f"{dataset.meta.classes[i]!r}: {n}" for i, n in enumerate(counts) if n < minimum]
    if short:
        return [
            (
                "min samples per class",
                f"data.min_samples_per_class is {minimum}, got {listing(short)}",
            )
        ]
    return []


def deduplicate(dataset: Dataset, data: DataSection, file: str) -> tuple[Dataset, list[dict[str, Any]]]:
    """Drop repeated copies of identical samples that carry the same label; keep the first of each group.

    Args:
        dataset: labeled samples.
        data: the plan's data section (task).
        file: named in the error.

    Returns:
        (the dataset without the repeats, one report entry per group: kept id, dropped ids, label).

    Raises:
        DataValidationError: identical samples carry different labels (rule ``conflicting duplicates``).
    """
    ids, labels = dataset.sample_ids, dataset.labels
    conflicts, report, drop = [], [], []
    for group in duplicate_groups(dataset.features):
        values = labels[group]
        if len(set(values.tolist())) > 1:
            named = [f"{ids[i]} ({_label_name(labels[i], dataset, data)})" for i in group]
            conflicts.append(", ".join(named))
            continue
        report.append(
            {
                "kept": str(ids[group[0]]),
                "dropped": [str(ids[i]) for i in group[1:]],
                "label": _label_name(values[0], dataset, data),
            }
        )
        drop.extend(group[1:].tolist())
    if conflicts:
        detail = (
            f"{len(conflicts)} groups of identical samples carry different labels: {listing(conflicts, 5)}; "
            "give them one label in a data.labeling.annotations file"
        )
        raise DataValidationError(file, [("conflicting duplicates", detail)])
    keep = np.ones(len(dataset), dtype=bool)
    keep[drop] = False
    return dataset.take(keep), report


def _label_name(value: Any, dataset: Dataset, data: DataSection) -> str:
    if data.task == "classification" and 0 <= int(value) < dataset.meta.num_classes:
        return dataset.meta.classes[int(value)]
    return f"{value:g}" if data.task == "regression" else str(value)


def validate_splits(splits: Mapping[str, Dataset], file: str) -> None:
    """No sample may sit in two splits: not by id, not by identical features.

    Args:
        splits: split name -> dataset (train, val, test).
        file: the folder or file the splits are written to, named in the error.

    Raises:
        DataValidationError: rule ``leakage``, naming both splits and the samples.
    """
    problems = []
    names = list(splits)
    seen_ids = {name: set(splits[name].sample_ids.tolist()) for name in names}
    digests = {name: row_digests(splits[name].features) for name in names}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = sorted(seen_ids[first] & seen_ids[second])
            if shared:
                problems.append(
                    ("leakage", f"{len(shared)} sample ids in both {first} and {second}: {listing(shared)}")
                )
            content = set(digests[first])
            index = np.array([j for j, d in enumerate(digests[second]) if d in content], dtype=int)
            if index.size:
                problems.append(
                    (
                        "leakage",
                        f"{index.size} {second} samples have features identical to a {first} sample: "
                        f"{where(index, splits[second].sample_ids)}",
                    )
                )
    if problems:
        raise DataValidationError(file, problems)
