"""Shared fixtures for tests/data: plan data sections and small sources in their real file formats.

- ``data_section(**fields)``: a validated ``DataSection`` (default ``sklearn:digits``) with fields overridden.
- ``write_image(path, value)``: one flat image file.
- ``image_folder``: a PNG/JPEG class-folder tree (``cat/``, ``dog/``, ``unlabeled/``) under tmp_path.
- ``make_dataset(labels)``: a small image ``Dataset`` (ids s0, s1, ...), for validation/label/prepare tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from config.plan import DataSection
from data.dataset import Dataset, DatasetMeta


@pytest.fixture
def data_section() -> Callable[..., DataSection]:
    def build(**fields: Any) -> DataSection:
        return DataSection.model_validate({"source": "sklearn:digits", **fields})

    return build


def _write_image(path: Path, value: int, size: tuple[int, int] = (6, 4), mode: str = "L") -> None:
    """A flat image of one grey (or RGB) value, ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


@pytest.fixture
def write_image() -> Callable[..., None]:
    """``write_image(path, value, size=(w, h), mode="L")``: a flat image file in the format of its suffix."""
    return _write_image


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``images/``: cat (3 PNG), dog (2 PNG + 1 JPEG), unlabeled (2 PNG); every image 6x4 and distinct."""
    root = tmp_path / "images"
    for i in range(3):
        _write_image(root / "cat" / f"c{i}.png", 10 + i)
    for i in range(2):
        _write_image(root / "dog" / f"d{i}.png", 100 + i)
    _write_image(root / "dog" / "d2.jpg", 200)
    for i in range(2):
        _write_image(root / "unlabeled" / f"u{i}.png", 50 + i)
    return root


def make_meta(classes: list[str] | None = None, source: str = "sklearn:digits") -> DatasetMeta:
    return DatasetMeta(
        source=source,
        kind="image",
        task="classification",
        classes=classes or ["a", "b", "c"],
        input_shape=[2, 2],
    )


def _make_dataset(labels: list[int], *, seed: int = 0, source: str = "sklearn:digits") -> Dataset:
    """Distinct random 2x2 images in 0..16, one per label, ids ``s0, s1, ...``."""
    n = len(labels)
    features = np.random.default_rng(seed).uniform(0, 16, size=(n, 2, 2)).astype(np.float32)
    ids = np.array([f"s{i}" for i in range(n)])
    return Dataset(features, np.array(labels, dtype=np.int64), ids, make_meta(source=source))


@pytest.fixture
def make_dataset() -> Callable[..., Dataset]:
    """``make_dataset(labels, seed=0, source=...)``: distinct 2x2 images in 0..16, classes a, b, c."""
    return _make_dataset
