"""The one in-memory and on-disk form a dataset takes between stages.

On disk a dataset is ``<name>.npz`` (arrays ``features``, ``labels``, ``sample_ids``) beside ``meta.json``
(what the arrays mean). Every stage reads and writes this form, so DVC sees plain files.

- ``features``: float32, shape ``(n, *input_shape)``: images ``(n, h, w)`` grey or ``(n, h, w, 3)`` RGB in
  their source units (digits 0..16, 8-bit images 0..255), tables ``(n, columns)``.
- ``labels``: int64 class ids ``0..num_classes-1`` (``UNLABELED`` = -1 where no label is known yet), or
  float32 targets for regression.
- ``sample_ids``: str, unique, stable across stages (the source names them; labels are joined on them).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from config.layout import META_FILE

UNLABELED = -1


@dataclass(frozen=True)
class DatasetMeta:
    """What a dataset's arrays mean."""

    source: str
    kind: Literal["image", "tabular"]
    task: Literal["classification", "regression"]
    classes: list[str]
    input_shape: list[int]
    feature_names: list[str] = field(default_factory=list)
    # Fitted in `prepare` on the train split: {"method": "standard", "mean": [...], "std": [...]} etc.
    scaling: dict[str, Any] = field(default_factory=lambda: {"method": "none"})

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DatasetMeta:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray
    labels: np.ndarray
    sample_ids: np.ndarray
    meta: DatasetMeta

    def __post_init__(self) -> None:
        n = len(self.features)
        if len(self.labels) != n or len(self.sample_ids) != n:
            raise ValueError(
                f"Expected features, labels and sample_ids of one length. Received {n}, "
                f"{len(self.labels)}, {len(self.sample_ids)}."
            )

    def __len__(self) -> int:
        return len(self.features)

    def take(self, index: np.ndarray) -> Dataset:
        """The rows at ``index`` (an int index array or boolean mask)."""
        return replace(
            self, features=self.features[index], labels=self.labels[index], sample_ids=self.sample_ids[index]
        )

    def save(self, directory: str | Path, name: str) -> Path:
        """Write ``<directory>/<name>.npz`` and ``<directory>/meta.json``; returns the npz path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.npz"
        write_npz(
            path,
            {"features": self.features, "labels": self.labels, "sample_ids": self.sample_ids.astype(str)},
        )
        (directory / META_FILE).write_text(self.meta.to_json() + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path, name: str) -> Dataset:
        """Read ``<directory>/<name>.npz`` and ``<directory>/meta.json``."""
        directory = Path(directory)
        meta = DatasetMeta.from_json((directory / META_FILE).read_text())
        with np.load(directory / f"{name}.npz", allow_pickle=False) as arrays:
            return cls(
                features=arrays["features"],
                labels=arrays["labels"],
                sample_ids=arrays["sample_ids"],
                meta=meta,
            )


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez``, but with fixed zip timestamps: the same data always hashes the same for DVC."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


class MissingInputError(FileNotFoundError):
    """A dataset's files are not there: the stage that makes them has not run."""


def load_stage_output(directory: Path, name: str, producer: str, shown_as: str) -> Dataset:
    """``Dataset.load`` of a stage's output, with an error that says which stage to run when it is missing.

    Args:
        directory: the stage's output folder.
        name: the dataset's name in it (``samples``, ``train``, ``test``, ...).
        producer: the stage that writes it (named in the error: ``dvc repro <producer>``).
        shown_as: the folder as the user knows it (``data/prepared``), for the message.

    Raises:
        MissingInputError: the npz or its meta.json is missing.
    """
    missing = [
        f"{shown_as}/{file}" for file in (f"{name}.npz", META_FILE) if not (directory / file).is_file()
    ]
    if missing:
        raise MissingInputError(
            f"{', '.join(missing)} not found: run the {producer} stage first "
            f"(`lifecycle run` or `dvc repro {producer}`)"
        )
    return Dataset.load(directory, name)
