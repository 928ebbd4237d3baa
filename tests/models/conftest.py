"""Shared fixtures for tests/models (the training and the registry engineers both use them).

- ``tiny_meta`` / ``tiny_splits``: a small 8x8 three-class image dataset (train/val/test ``Dataset``s, raw
  units 0..16, standard scaling in the meta) that a tiny MLP learns in a couple of epochs.
- ``tiny_plan``: a valid ``Plan`` for that data (3 epochs, small MLP), written to ``tiny_plan_path``.
- ``mlflow_env``: a fresh MLflow sqlite store + artifact folder in tmp_path, set through
  ``Settings.apply_environment`` exactly like the stage does; yields the Settings.
- ``trained_version``: a real run logged and registered with ``models.tracking.log_training_run`` against
  ``mlflow_env`` (function scope; it trains for 2 epochs on the tiny data, a few seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from data.dataset import Dataset, DatasetMeta
from pipeline.plan import Plan, parse_plan
from pipeline.settings import Settings

TINY_CLASSES = ["0", "1", "2"]

TINY_PLAN = {
    "project": {"name": "tiny-project", "goal": "tests"},
    "data": {"source": "sklearn:digits", "classes": TINY_CLASSES, "scaling": "standard"},
    "model": {
        "layers": [
            {"type": "Input", "shape": [8, 8]},
            {"type": "Flatten"},
            {"type": "Dense", "units": 16, "activation": "relu"},
            {"type": "Dense", "units": 3, "activation": "softmax"},
        ]
    },
    "train": {
        "epochs": 3,
        "batch_size": 16,
        "seed": 7,
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "early_stopping": {"enabled": True, "patience": 5},
        "reduce_lr": {"enabled": True, "patience": 2},
    },
    "resources": {"accelerator": "cpu", "time_budget_minutes": 5},
    "deploy": {"model_name": "tiny-model"},
}


def make_tiny_dataset(n: int, seed: int, meta: DatasetMeta) -> Dataset:
    """``n`` 8x8 images in source units 0..16: class k is bright in band k of the rows, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(meta.classes), size=n)
    features = rng.uniform(0, 4, size=(n, 8, 8)).astype("float32")
    for row, label in enumerate(labels):
        features[row, label * 2 : label * 2 + 3, :] += 10.0
    ids = np.array([f"s{seed}-{i}" for i in range(n)])
    return Dataset(features=features, labels=labels.astype("int64"), sample_ids=ids, meta=meta)


@pytest.fixture
def tiny_meta() -> DatasetMeta:
    return DatasetMeta(
        source="sklearn:digits",
        kind="image",
        task="classification",
        classes=TINY_CLASSES,
        input_shape=[8, 8],
        scaling={"method": "standard", "mean": [6.0] * 64, "std": [5.0] * 64},
    )


@pytest.fixture
def tiny_splits(tiny_meta: DatasetMeta) -> dict[str, Dataset]:
    return {
        "train": make_tiny_dataset(200, 1, tiny_meta),
        "val": make_tiny_dataset(60, 2, tiny_meta),
        "test": make_tiny_dataset(60, 3, tiny_meta),
    }


@pytest.fixture
def tiny_plan() -> Plan:
    return parse_plan(TINY_PLAN, "tiny-plan.yaml")


@pytest.fixture
def tiny_plan_path(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(TINY_PLAN, sort_keys=False))
    return path


@pytest.fixture
def mlflow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A private MLflow store (sqlite + artifact folder) under tmp_path, selected via the environment."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(root=tmp_path, var_dir=tmp_path / "var")
    settings.apply_environment()
    # apply_environment writes os.environ directly; let monkeypatch restore it after the test.
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_HOME"):
        monkeypatch.setenv(name, __import__("os").environ[name])
    yield settings
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def trained_version(mlflow_env: Settings, tiny_plan: Plan, tiny_plan_path: Path, tiny_splits, tmp_path: Path):
    """(TrainedVersion, TrainResult) of a real 3-epoch run logged and registered in ``mlflow_env``."""
    from models.build import build_model
    from models.tracking import log_training_run
    from models.train import train_model

    meta = tiny_splits["train"].meta
    result = train_model(
        lambda: build_model(tiny_plan.model, meta, tiny_plan.train),
        tiny_splits["train"],
        tiny_splits["val"],
        tiny_plan.train,
        tiny_plan.resources,
    )
    version = log_training_run(
        tiny_plan,
        result,
        meta,
        plan_path=tiny_plan_path,
        root=tmp_path,
        input_example=tiny_splits["train"].features[:3],
        artifact_location=mlflow_env.resolved_artifacts_dir.as_uri(),
        model_dst=tmp_path / "artifacts" / "model.keras",
    )
    return version, result
