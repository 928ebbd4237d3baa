"""What a stage produced: its outs from dvc.yaml, as files with sizes and sample counts."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml


@dataclass(frozen=True)
class OutputFile:
    """One produced file: its path relative to the project root, its size, and what it holds."""

    path: str
    size_bytes: int
    detail: str = ""


def stage_spec(dvc_file: Path, stage: str) -> dict[str, Any]:
    """A stage's entry in dvc.yaml (``cmd``, ``deps``, ``params``, ``outs``, ...); {} when one is missing."""
    if not dvc_file.is_file():
        return {}
    return (yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {}).get(stage) or {}


def stage_outs(dvc_file: Path, stage: str) -> list[str]:
    """The paths a stage declares in dvc.yaml (``outs``, ``metrics`` and ``plots``), in declared order.

    Args:
        dvc_file: the project's dvc.yaml.
        stage: the stage's name.

    Returns:
        Paths relative to the project root; empty when dvc.yaml or the stage is missing.
    """
    spec = stage_spec(dvc_file, stage)
    paths = []
    for key in ("outs", "metrics", "plots"):
        for entry in spec.get(key) or []:
            # An entry is a path, or a one-key mapping {path: {cache: false, ...}}.
            paths.extend([entry] if isinstance(entry, str) else list(entry))
    return paths


def describe_outputs(root: Path, paths: list[str]) -> list[OutputFile]:
    """Every file under ``paths`` (files or folders), with its size and, for datasets, the sample count."""
    files: list[Path] = []
    for name in paths:
        path = root / name
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            files.append(path)
    return [OutputFile(str(file.relative_to(root)), file.stat().st_size, _detail(file)) for file in files]


def _detail(path: Path) -> str:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                if "labels" in arrays.files:
                    return f"{len(arrays['labels'])} samples"
        elif path.suffix == ".csv":
            with path.open() as lines:
                return f"{max(sum(1 for _ in lines) - 1, 0)} rows"
        elif path.suffix == ".json" and path.stat().st_size < 1_000_000:
            content = json.loads(path.read_text())
            if isinstance(content, list):
                return f"{len(content)} items"
    except (OSError, ValueError, zipfile.BadZipFile):
        return "unreadable"
    return ""


def human_size(size_bytes: int) -> str:
    """``1.2 MB``-style size."""
    size = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
