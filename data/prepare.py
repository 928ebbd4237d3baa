"""Prepare: a deterministic stratified train/val/test split, scaling fitted on train, a reference sample.

Arrays stay in source units: the fitted scaling goes into ``meta.scaling`` and the model applies it as its
first layer, so serving takes raw inputs. The reference sample (drawn from train, stratified) is what
monitoring compares live traffic with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from config.layout import REFERENCE, SPLITS
from config.plan import DataSection, SplitSection
from data.dataset import Dataset
from data.validate import DataValidationError


@dataclass(frozen=True)
class Prepared:
    """The splits (train, val, test, reference) sharing one meta with the fitted scaling, and the report."""

    splits: dict[str, Dataset]
    report: dict[str, Any]


def split_dataset(dataset: Dataset, split: SplitSection, task: str, file: str) -> dict[str, Dataset]:
    """Split into train/val/test, stratified by class for classification, seeded by ``split.seed``.

    Args:
        dataset: labeled, deduplicated samples.
        split: the fractions and the seed.
        task: ``classification`` (stratified) or ``regression`` (shuffled).
        file: named when a class is too small to split.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``; the same inputs always give the same splits.

    Raises:
        DataValidationError: rule ``split``: a split would be empty or a class is too small to stratify.
    """
    index = np.arange(len(dataset))
    labels = dataset.labels if task == "classification" else None
    try:
        # Whole counts, so float fractions (0.15 / 0.85 * 85 = 15.000000000000002) can't round up a sample.
        n_test, n_val = round(len(index) * split.test), round(len(index) * split.val)
        rest, test = train_test_split(index, test_size=n_test, random_state=split.seed, stratify=labels)
        rest_labels = None if labels is None else labels[rest]
        train, val = train_test_split(rest, test_size=n_val, random_state=split.seed, stratify=rest_labels)
    except ValueError as error:
        counts = ""
        if labels is not None:
            values, sizes = np.unique(labels, return_counts=True)
            names = dataset.meta.classes
            shown = ", ".join(
                f"{names[v]!r}: {n}" for v, n in zip(values.tolist(), sizes.tolist(), strict=True)
            )
            counts = f" (samples per class: {shown})"
        fractions = f"{split.train:g}/{split.val:g}/{split.test:g}"
        detail = f"can't split {len(dataset)} samples {fractions}{counts}: {error}"
        raise DataValidationError(file, [("split", detail)]) from None
    return {"train": dataset.take(train), "val": dataset.take(val), "test": dataset.take(test)}


def fit_scaling(features: np.ndarray, method: str) -> dict[str, Any]:
    """Per-feature statistics of the train features, shaped like one sample.

    Args:
        features: train features ``(n, *input_shape)``.
        method: ``none``, ``standard`` (mean, std) or ``minmax`` (min, max).

    Returns:
        ``meta.scaling``: ``{"method": ...}`` plus nested lists of the input shape. A constant feature keeps
        std 0 (or max == min); the model divides by 1 there.
    """
    if method == "none":
        return {"method": "none"}
    values = features.astype(np.float64)
    if method == "standard":
        return {"method": method, "mean": values.mean(axis=0).tolist(), "std": values.std(axis=0).tolist()}
    if method == "minmax":
        return {"method": method, "min": values.min(axis=0).tolist(), "max": values.max(axis=0).tolist()}
    raise ValueError(f"data.scaling: expected none, standard or minmax, got {method!r}")


def reference_sample(train: Dataset, size: int, seed: int, task: str) -> Dataset:
    """A sample of ``size`` train rows (stratified for classification); all of train when it is smaller."""
    if size >= len(train):
        return train
    labels = train.labels if task == "classification" else None
    try:
        chosen, _ = train_test_split(
            np.arange(len(train)), train_size=size, random_state=seed, stratify=labels
        )
    except ValueError:  # a class too small to stratify at this size: a plain random sample
        chosen, _ = train_test_split(np.arange(len(train)), train_size=size, random_state=seed)
    return train.take(np.sort(chosen))


def prepare(dataset: Dataset, data: DataSection, file: str) -> Prepared:
    """Split, fit the scaling on train, draw the reference sample, and count what went where.

    Args:
        dataset: the labeled dataset.
        data: the plan's data section (split, scaling, reference_size, task).
        file: where the splits are written, named in errors.

    Returns:
        The four datasets (one meta, with ``scaling``) and the report for ``prepare_report.json``.
    """
    splits = split_dataset(dataset, data.split, data.task, file)
    meta = replace(dataset.meta, scaling=fit_scaling(splits["train"].features, data.scaling))
    splits = {name: replace(part, meta=meta) for name, part in splits.items()}
    splits[REFERENCE] = reference_sample(splits["train"], data.reference_size, data.split.seed, data.task)
    return Prepared(splits, prepare_report(splits, data))


def prepare_report(splits: dict[str, Dataset], data: DataSection) -> dict[str, Any]:
    """Sizes and samples per class per split, with the seed and fractions that made them."""
    report: dict[str, Any] = {
        "seed": data.split.seed,
        "fractions": {name: getattr(data.split, name) for name in SPLITS},
        "scaling": data.scaling,
        "sizes": {name: len(part) for name, part in splits.items()},
    }
    if data.task == "classification":
        classes = next(iter(splits.values())).meta.classes
        report["counts"] = {
            name: dict(
                zip(
                    classes,
                    np.bincount(part.labels, minlength=len(classes)).astype(int).tolist(),
                    strict=True,
                )
            )
            for name, part in splits.items()
        }
    else:
        report["target"] = {
            name: {"mean": float(part.labels.mean()), "std": float(part.labels.std())}
            for name, part in splits.items()
        }
    return report
