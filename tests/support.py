"""What many tests share: small plans, a temp git + DVC copy of the project, DVC run as the stages run it.

Imported as ``tests.support`` (pytest puts the repository root first on ``sys.path``: pyproject's
``pythonpath``). Fixtures stay in the conftest files; these are plain functions and constants.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
# What a stage subprocess imports: a project copy carries them, so it runs the code under test.
PACKAGES = ("config", "pipeline", "data", "models", "serving", "monitoring")
RUNTIME = ("raw", "labeled", "prepared", "feedback", "__pycache__", "var", "*.pyc")
TINY_CLASSES = ["0", "1", "2"]
TINY_LAYERS = [
    {"type": "Input", "shape": [8, 8]},
    {"type": "Flatten"},
    {"type": "Dense", "units": 16, "activation": "relu"},
    {"type": "Dense", "units": 3, "activation": "softmax"},
]


def _merged(base: dict[str, Any], sections: dict[str, Any]) -> dict[str, Any]:
    plan = copy.deepcopy(base)
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(plan.get(name), dict):
            plan[name] = {**plan[name], **value}
        else:
            plan[name] = value
    return plan


def tiny_plan(project: str, model_name: str, **sections: Any) -> dict[str, Any]:
    """A plan dict for a quick real training: 3 digit classes, standard scaling, a 16-unit MLP, on CPU.

    Args:
        project: ``project.name`` (the MLflow experiment).
        model_name: ``deploy.model_name``.
        sections: top-level sections to change; a mapping is merged into the section (one level deep).
    """
    base = {
        "project": {"name": project, "goal": "tests"},
        "data": {"source": "sklearn:digits", "classes": TINY_CLASSES, "scaling": "standard"},
        "model": {"layers": TINY_LAYERS},
        "train": {
            "epochs": 3,
            "batch_size": 16,
            "seed": 7,
            "optimizer": {"name": "adam", "learning_rate": 0.01},
        },
        "resources": {"accelerator": "cpu", "time_budget_minutes": 5},
        "deploy": {"model_name": model_name},
    }
    return _merged(base, sections)


# The serving tests' plan: what `registry_env` trains and registers twice, and the route tests serve.
SERVING_PLAN = tiny_plan(
    "serving-tests",
    "tiny-served",
    train={"epochs": 2, "optimizer": {"name": "adam", "learning_rate": 0.02}},
    deploy={"max_batch_size": 8},
)


def schema_plan(project: str, model_name: str, **sections: Any) -> dict[str, Any]:
    """A minimal valid plan dict (10 digits, Flatten + softmax), for tests of code that reads a plan."""
    base = {
        "project": {"name": project, "goal": "tests"},
        "data": {"source": "sklearn:digits"},
        "model": {"layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10, "activation": "softmax"}]},
        "deploy": {"model_name": model_name},
    }
    return _merged(base, sections)


def project_plan(change: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """The repository's own plan.yaml as a dict, changed in place by ``change(raw)`` when given."""
    raw: dict[str, Any] = yaml.safe_load((ROOT / "plan.yaml").read_text())
    if change is not None:
        change(raw)
    return raw


def write_plan(directory: Path, raw: dict[str, Any]) -> Path:
    """``raw`` as ``directory/plan.yaml``."""
    path = directory / "plan.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def init_git_dvc(root: Path, *, project_remote: bool = True) -> Path:
    """``git init`` and ``dvc init`` in ``root`` (analytics off); with ``project_remote``, the project's
    ``.dvc/config`` (its default remote is ``var/dvc-remote``)."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    if project_remote:
        shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")
    else:
        with (root / ".dvc" / "config").open("a") as config:
            config.write("[core]\n    analytics = false\n")
    return root


def copy_project(directory: Path, raw_plan: dict[str, Any], *, packages: tuple[str, ...] = PACKAGES) -> Path:
    """A git + DVC project in ``directory`` (created): the repository's code packages and dvc.yaml, the
    project's ``.dvc/config``, and ``raw_plan`` as plan.yaml. Stages run there import the copied code."""
    directory.mkdir(parents=True)
    for package in packages:
        shutil.copytree(ROOT / package, directory / package, ignore=shutil.ignore_patterns(*RUNTIME))
    shutil.copy(ROOT / "dvc.yaml", directory / "dvc.yaml")
    write_plan(directory, raw_plan)
    return init_git_dvc(directory)


def dvc(
    project: Path, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``dvc <args>`` in ``project`` with this interpreter first on PATH (as the stages run); raises with the
    output when it fails and ``check``."""
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("LIFECYCLE_ROOT", None)
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"dvc {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def tiny_meta(classes: list[str] | None = None) -> Any:
    """The DatasetMeta of ``band_images``: 8x8 grey images in 0..16, standard scaling fitted on them."""
    from data.dataset import DatasetMeta

    return DatasetMeta(
        source="sklearn:digits",
        kind="image",
        task="classification",
        classes=classes or TINY_CLASSES,
        input_shape=[8, 8],
        scaling={"method": "standard", "mean": [6.0] * 64, "std": [5.0] * 64},
    )


def band_images(n: int, seed: int, meta: Any) -> Any:
    """``n`` 8x8 images in source units 0..16 that a tiny MLP learns in a few epochs: class k is bright in
    rows 2k..2k+2, plus noise. A ``Dataset`` with ids ``s<seed>-<i>``."""
    import numpy as np

    from data.dataset import Dataset

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(meta.classes), size=n)
    features = rng.uniform(0, 4, size=(n, 8, 8)).astype("float32")
    for row, label in enumerate(labels):
        features[row, label * 2 : label * 2 + 3, :] += 10.0
    ids = np.array([f"s{seed}-{i}" for i in range(n)])
    return Dataset(features=features, labels=labels.astype("int64"), sample_ids=ids, meta=meta)
