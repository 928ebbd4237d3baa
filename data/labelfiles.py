"""Label files: the labeling queue out (CSV, Label Studio import JSON and config), annotators' labels in.

Out: ``queue.csv`` (``sample_id`` and the image path, or the feature columns) and ``labelstudio_tasks.json``
(Label Studio import tasks, ``data.sample_id`` on each) plus ``labelstudio_config.xml`` (a choices interface
with the dataset's classes). In: CSV ``sample_id,label[,annotator]`` or a Label Studio JSON export
(``annotations[].result[].value.choices``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from data.dataset import Dataset
from data.validate import DataValidationError, listing

QUEUE_CSV = "queue.csv"
LABELSTUDIO_TASKS = "labelstudio_tasks.json"
LABELSTUDIO_CONFIG = "labelstudio_config.xml"


@dataclass(frozen=True)
class Annotation:
    """One label given to one sample, as read from a label file."""

    sample_id: str
    label: str
    annotator: str
    file: str
    where: str  # "row 3" (CSV data rows counted from 1) or "task 2 (id 57)" (Label Studio, from 1)


def export_queue(dataset: Dataset, directory: Path, image_dir: str | None = None) -> list[Path]:
    """Write the labeling queue for ``dataset`` (the samples still unlabeled).

    Args:
        dataset: the samples to label.
        directory: where queue.csv, labelstudio_tasks.json and labelstudio_config.xml go.
        image_dir: for ``images:`` sources, the image folder as the plan names it; the queue then points at
            the image files (``<image_dir>/<sample_id>``) instead of listing pixel values.

    Returns:
        The files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    if image_dir is not None:
        columns = ["sample_id", "image"]
        rows = [{"sample_id": str(i), "image": f"{image_dir.rstrip('/')}/{i}"} for i in dataset.sample_ids]
    else:
        names = dataset.meta.feature_names or [
            f"f{j}" for j in range(int(np.prod(dataset.meta.input_shape, dtype=int)))
        ]
        columns = ["sample_id", *names]
        flat = dataset.features.reshape(len(dataset), len(names))
        rows = [
            {"sample_id": str(i), **dict(zip(names, map(float, x), strict=True))}
            for i, x in zip(dataset.sample_ids, flat, strict=True)
        ]
    with (directory / QUEUE_CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tasks = [{"data": row} for row in rows]
    (directory / LABELSTUDIO_TASKS).write_text(json.dumps(tasks, indent=1) + "\n")
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in dataset.meta.classes)
    shown = (
        '  <Image name="image" value="$image"/>'
        if image_dir
        else '  <Text name="sample" value="$sample_id"/>'
    )
    config = (
        f"<View>\n{shown}\n"
        f'  <Choices name="label" toName="{"image" if image_dir else "sample"}" choice="single">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )
    (directory / LABELSTUDIO_CONFIG).write_text(config)
    return [directory / QUEUE_CSV, directory / LABELSTUDIO_TASKS, directory / LABELSTUDIO_CONFIG]


def read_annotations(path: Path, name: str | None = None) -> list[Annotation]:
    """Read a label file: CSV ``sample_id,label[,annotator]`` or a Label Studio JSON export.

    Args:
        path: the file.
        name: how messages name the file (default: the path).

    Returns:
        One annotation per label given; Label Studio annotations that were cancelled are left out.

    Raises:
        DataValidationError: unreadable file, missing columns, or labels missing (rule ``missing labels``).
    """
    file = name or str(path)
    if not path.is_file():
        raise DataValidationError(file, [("label file", "not found")])
    if path.suffix.lower() == ".csv":
        annotations, missing = _read_csv(path, file)
    elif path.suffix.lower() == ".json":
        annotations, missing = _read_labelstudio(path, file)
    else:
        raise DataValidationError(
            file, [("label file", f"expected a .csv or Label Studio .json export, got {path.suffix!r}")]
        )
    if missing:
        raise DataValidationError(
            file, [("missing labels", f"{len(missing)} entries have no label: {listing(missing)}")]
        )
    return annotations


def _read_csv(path: Path, file: str) -> tuple[list[Annotation], list[str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "sample_id" not in columns or "label" not in columns:
            raise DataValidationError(
                file,
                [("label file", f"expected columns sample_id,label[,annotator], got {','.join(columns)}")],
            )
        annotations, missing = [], []
        for number, row in enumerate(reader, start=1):
            sample_id, label = (row.get("sample_id") or "").strip(), (row.get("label") or "").strip()
            if not sample_id or not label:
                missing.append(f"row {number}" + (f" ({sample_id})" if sample_id else ""))
                continue
            annotator = (row.get("annotator") or "").strip()
            annotations.append(Annotation(sample_id, label, annotator, file, f"row {number}"))
    return annotations, missing


def _read_labelstudio(path: Path, file: str) -> tuple[list[Annotation], list[str]]:
    try:
        tasks = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataValidationError(file, [("label file", f"not valid JSON: {error}")]) from None
    if not isinstance(tasks, list):
        raise DataValidationError(
            file,
            [("label file", f"expected a Label Studio export (a list of tasks), got {type(tasks).__name__}")],
        )
    annotations, missing = [], []
    for number, task in enumerate(tasks, start=1):
        where = f"task {number}" + (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
        sample_id = (
            str(((task or {}).get("data") or {}).get("sample_id", "")).strip()
            if isinstance(task, dict)
            else ""
        )
        if not sample_id:
            missing.append(f"{where}: no data.sample_id")
            continue
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                continue
            choices = [
                choice
                for result in annotation.get("result") or []
                for choice in ((result.get("value") or {}).get("choices") or [])
            ]
            if not choices:
                missing.append(f"{where} ({sample_id})")
                continue
            annotator = _annotator(annotation.get("completed_by"))
            annotations.append(Annotation(sample_id, str(choices[0]).strip(), annotator, file, where))
    return annotations, missing


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "")
    return "" if completed_by is None else str(completed_by)
