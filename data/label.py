"""Labeling: annotators' labels checked, resolved and merged over the source's; the label stage's core.

Several annotators for one sample are resolved by majority; ties leave the sample unlabeled and are
reported. Unknown classes and unknown sample ids are errors (missing labels are caught reading the files,
in :mod:`data.labelfiles`). Identical samples with the same label are deduplicated, with different labels
they are an error; the labeled set is then validated before anything trains.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from config.plan import DataSection
from data.dataset import UNLABELED, Dataset
from data.labelfiles import Annotation
from data.validate import DataValidationError, deduplicate, listing, validate_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelResolution:
    """Labels decided per sample (class id, or value for regression), and what took deciding."""

    labels: dict[str, int | float]
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # resolved by majority
    ties: list[dict[str, Any]] = field(default_factory=list)  # left unlabeled


def resolve_labels(
    annotations: list[Annotation], classes: list[str], known_ids: set[str], task: str = "classification"
) -> LabelResolution:
    """Decide one label per sample: a majority of its annotators (for regression, their median).

    Args:
        annotations: every label read, in file order; an annotator's later label for a sample replaces
            their earlier one.
        classes: class names in id order; a label may be a class name or a class id.
        known_ids: the sample ids of the collected data.
        task: ``classification`` or ``regression``.

    Returns:
        The decided labels, the conflicts settled by majority, and the ties (left unlabeled).

    Raises:
        DataValidationError: rules ``unknown classes`` and ``unknown sample ids``, naming the file and rows.
    """
    problems: dict[str, list[tuple[str, str]]] = {}
    unknown_class = [a for a in annotations if _class_id(a.label, classes, task) is None]
    unknown_id = [a for a in annotations if a.sample_id not in known_ids]
    for rule, bad, describe in (
        ("unknown classes", unknown_class, lambda a: f"{a.where} ({a.sample_id}: {a.label!r})"),
        ("unknown sample ids", unknown_id, lambda a: f"{a.where} ({a.sample_id})"),
    ):
        for file in dict.fromkeys(a.file for a in bad):
            entries = [describe(a) for a in bad if a.file == file]
            expected = (
                f"expected one of {classes}" if rule == "unknown classes" else "not in the collected data"
            )
            if task == "regression" and rule == "unknown classes":
                expected = "expected numbers"
            problems.setdefault(file, []).append(
                (rule, f"{expected}, got {len(entries)}: {listing(entries)}")
            )
    if problems:
        file, found = next(iter(problems.items()))
        others = [
            f"{other}: {rule}: {detail}"
            for other, lines in list(problems.items())[1:]
            for rule, detail in lines
        ]
        found = found + [("also", line) for line in others]
        raise DataValidationError(file, found)
    votes: dict[str, dict[str, int | float]] = {}
    for index, a in enumerate(annotations):
        value = _class_id(a.label, classes, task)
        assert value is not None
        votes.setdefault(a.sample_id, {})[a.annotator or f"#{index}"] = value
    labels: dict[str, int | float] = {}
    conflicts: list[dict[str, Any]] = []
    ties: list[dict[str, Any]] = []
    for sample_id, by_annotator in votes.items():
        values = list(by_annotator.values())
        if task == "regression":
            labels[sample_id] = float(np.median(values))
            if len(set(values)) > 1:
                conflicts.append(
                    {"sample_id": sample_id, "votes": by_annotator, "decided": labels[sample_id]}
                )
            continue
        ranked = Counter(values).most_common()
        named = {annotator: classes[int(v)] for annotator, v in by_annotator.items()}
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            ties.append({"sample_id": sample_id, "votes": named})
            continue
        labels[sample_id] = ranked[0][0]
        if len(ranked) > 1:
            conflicts.append({"sample_id": sample_id, "votes": named, "decided": classes[int(ranked[0][0])]})
    return LabelResolution(labels, conflicts, ties)


def _class_id(label: str, classes: list[str], task: str) -> int | float | None:
    if task == "regression":
        try:
            return float(label)
        except ValueError:
            return None
    if label in classes:
        return classes.index(label)
    if label.isdigit() and int(label) < len(classes):
        return int(label)
    return None


def apply_labels(dataset: Dataset, resolution: LabelResolution) -> tuple[Dataset, list[str]]:
    """The dataset with the decided labels merged over the source's.

    Returns:
        (the relabeled dataset, the ids whose source label was replaced by a different one).
    """
    labels = dataset.labels.copy()
    changed = []
    position = {str(sample_id): i for i, sample_id in enumerate(dataset.sample_ids)}
    for sample_id, value in resolution.labels.items():
        i = position[sample_id]
        known = labels[i] != UNLABELED if labels.dtype.kind == "i" else not np.isnan(labels[i])
        if known and labels[i] != value:
            changed.append(sample_id)
        labels[i] = value
    return Dataset(dataset.features, labels, dataset.sample_ids, dataset.meta), changed


def class_balance(dataset: Dataset) -> dict[str, Any]:
    """Samples per class, shares, and the ratio of the largest class to the smallest."""
    if dataset.meta.task == "regression":
        return {"samples": len(dataset)}
    counts = np.bincount(dataset.labels[dataset.labels >= 0], minlength=dataset.meta.num_classes)
    total = int(counts.sum())
    smallest = int(counts.min()) if counts.size else 0
    return {
        "counts": {name: int(n) for name, n in zip(dataset.meta.classes, counts, strict=True)},
        "shares": {
            name: round(int(n) / total, 4) if total else 0.0
            for name, n in zip(dataset.meta.classes, counts, strict=True)
        },
        "imbalance_ratio": round(int(counts.max()) / smallest, 3) if smallest else None,
    }


@dataclass(frozen=True)
class Labeled:
    """What the label stage produces: the labeled set, the still-unlabeled queue, and the report."""

    labeled: Dataset
    queue: Dataset
    report: dict[str, Any]


def label_dataset(raw: Dataset, annotations: list[Annotation], data: DataSection, file: str) -> Labeled:
    """Merge annotators' labels over the source's, deduplicate, and validate what will train.

    Args:
        raw: the collected dataset.
        annotations: every label read from ``data.labeling.annotations``, in file order.
        data: the plan's data section.
        file: where the labeled dataset goes, named in validation errors.

    Returns:
        The labeled set (validated), the unlabeled queue, and the labeling report.

    Raises:
        DataValidationError: unknown classes or sample ids in the label files, identical samples with
            different labels, or a labeled set that breaks a rule (e.g. too few samples per class).
    """
    known = set(raw.sample_ids.tolist())
    resolution = resolve_labels(annotations, raw.meta.classes, known, data.task)
    merged, changed = apply_labels(raw, resolution)
    has_label = merged.labels != UNLABELED if data.task == "classification" else ~np.isnan(merged.labels)
    labeled, queue = merged.take(has_label), merged.take(~has_label)
    labeled, duplicates = deduplicate(labeled, data, file)
    if duplicates:
        dropped = sum(len(group["dropped"]) for group in duplicates)
        log.warning(
            "%s: dropped %d repeated copies of identical samples with the same label (%d groups); "
            "see labeling_report.json",
            file,
            dropped,
            len(duplicates),
        )
    validate_dataset(labeled, data, file, labeled=True)
    report = labeling_report(raw, labeled, queue, annotations, resolution, changed, duplicates)
    return Labeled(labeled, queue, report)


def labeling_report(
    raw: Dataset,
    labeled: Dataset,
    queue: Dataset,
    annotations: list[Annotation],
    resolution: LabelResolution,
    changed: list[str],
    duplicates: list[dict[str, Any]],
) -> dict[str, Any]:
    """What labeling did: counts, annotators, conflicts, ties, replaced labels, duplicates, balance."""
    return {
        "collected": len(raw),
        "labeled": len(labeled),
        "unlabeled": len(queue),
        "annotations": {
            "read": len(annotations),
            "files": sorted({a.file for a in annotations}),
            "annotators": sorted({a.annotator for a in annotations if a.annotator}),
            "samples_labeled": len(resolution.labels),
        },
        "conflicts_resolved_by_majority": resolution.conflicts,
        "ties_left_unlabeled": resolution.ties,
        "source_labels_replaced": changed,
        "duplicates_dropped": {
            "groups": len(duplicates),
            "samples": sum(len(group["dropped"]) for group in duplicates),
            "detail": duplicates,
        },
        "class_balance": class_balance(labeled),
    }
