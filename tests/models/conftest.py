"""Shared fixtures for tests/models (the training and the registry engineers both use them).

- ``tiny_meta`` / ``tiny_splits``: a small 8x8 three-class image dataset (train/val/test ``Dataset``s, raw
  units 0..16, standard scaling in the meta) that a tiny MLP learns in a couple of epochs.
- ``tiny_plan``: a valid ``Plan`` for that data (3 epochs, small MLP), written to ``tiny_plan_path``.
- ``mlflow_env``: the Settings of a fresh MLflow sqlite store + artifact folder in tmp_path; ``client``: an
  ``MlflowClient`` on it, built as the stages build theirs.
- ``trained_version``: a real run logged and registered with ``models.tracking.log_training_run`` against
  ``mlflow_env`` (function scope; it trains for 2 epochs on the tiny data, a few seconds).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from config.plan import Plan, parse_plan
from config.settings import Settings
from data.dataset import Dataset, DatasetMeta
from tests.support import band_images
from tests.support import tiny_meta as support_meta
from tests.support import tiny_plan as tiny_plan_dict

TINY_PLAN = tiny_plan_dict(
    "tiny-project",
    "tiny-model",
    train={"early_stopping": {"enabled": True, "patience": 5}, "reduce_lr": {"enabled": True, "patience": 2}},
)


@pytest.fixture
def tiny_meta() -> DatasetMeta:
    return support_meta()


@pytest.fixture
def tiny_splits(tiny_meta: DatasetMeta) -> dict[str, Dataset]:
    return {
        "train": band_images(200, 1, tiny_meta),
        "val": band_images(60, 2, tiny_meta),
        "test": band_images(60, 3, tiny_meta),
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
def mlflow_env(tmp_path: Path) -> Settings:
    """Settings of a private MLflow store (sqlite + artifact folder) under tmp_path; ``client`` is on it."""
    return Settings(root=tmp_path, var_dir=tmp_path / "var")


@pytest.fixture
def client(mlflow_env: Settings):
    """An ``MlflowClient`` on ``mlflow_env``'s store, as the stages build it."""
    from models.client import tracking_client

    return tracking_client(mlflow_env)


@pytest.fixture
def trained_version(
    client, mlflow_env: Settings, tiny_plan: Plan, tiny_plan_path: Path, tiny_splits, tmp_path: Path
):
    """(TrainedVersion, TrainResult) of a real 3-epoch run logged and registered in ``mlflow_env``."""
    from models.build import build_model
    from models.client import artifact_location
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
        client,
        tiny_plan,
        result,
        meta,
        plan_path=tiny_plan_path,
        root=tmp_path,
        input_example=tiny_splits["train"].features[:3],
        artifact_location=artifact_location(mlflow_env),
        model_dst=tmp_path / "artifacts" / "model.keras",
    )
    return version, result
