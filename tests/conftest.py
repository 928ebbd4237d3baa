"""Shared test set-up: quiet, offline tools, and TensorFlow imported once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.plan import parse_plan
from config.settings import Settings
from data.dataset import Dataset, DatasetMeta
from tests.support import SERVING_PLAN, band_images, tiny_meta

# Before any tool is imported: no telemetry, no network, quiet TensorFlow, Keras on TensorFlow.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    """Each test leaves os.environ as it found it: the edges a test runs in-process (a stage's ``main``, a CLI
    command) export the libraries' environment (``Settings.apply_environment``), as they do in production."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Real Prefect for a test module: a temporary server and database (Prefect's test harness), its home in
    tmp, quiet logs."""
    home = tmp_path_factory.mktemp("prefect-home")
    saved = dict(os.environ)
    os.environ.update(PREFECT_HOME=str(home), PREFECT_LOGGING_LEVEL="WARNING", DO_NOT_TRACK="1")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def serving_meta() -> DatasetMeta:
    return tiny_meta()


def write_serving_plan(root: Path, **deploy: Any) -> Path:
    """The serving test plan as ``root/plan.yaml`` (deploy fields overridden)."""
    plan = {**SERVING_PLAN, "deploy": {**SERVING_PLAN["deploy"], **deploy}}
    path = root / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


@dataclass(frozen=True)
class RegistryEnv:
    root: Path
    settings: Settings
    client: Any  # an MlflowClient on the registry
    environment: dict[str, str]  # LIFECYCLE_* for a server subprocess
    name: str
    versions: list[str]
    test: Dataset


@pytest.fixture(scope="session")
def registry_env(tmp_path_factory: pytest.TempPathFactory, serving_meta: DatasetMeta) -> RegistryEnv:
    """A real MLflow registry (sqlite under tmp) with two trained versions of ``tiny-served``; champion v1."""
    from models.build import build_model
    from models.client import artifact_location, tracking_client
    from models.registry import move_alias
    from models.tracking import log_training_run
    from models.train import train_model

    root = tmp_path_factory.mktemp("registry-root")
    plan_path = write_serving_plan(root, max_batch_size=64)
    plan = parse_plan(yaml.safe_load(plan_path.read_text()), plan_path)
    settings = Settings(root=root, var_dir=root / "var")
    client = tracking_client(settings)
    train, val = band_images(150, 1, serving_meta), band_images(45, 2, serving_meta)
    versions = []
    for seed in (7, 8):
        train_plan = plan.train.model_copy(update={"seed": seed})
        result = train_model(
            lambda tp=train_plan: build_model(plan.model, serving_meta, tp),
            train,
            val,
            train_plan,
            plan.resources,
        )
        trained = log_training_run(
            client,
            plan,
            result,
            serving_meta,
            plan_path=plan_path,
            root=root,
            input_example=train.features[:3],
            artifact_location=artifact_location(settings),
        )
        versions.append(trained.version)
    move_alias(
        client, plan.deploy.model_name, "champion", versions[0], action="promote", reason="first champion"
    )
    environment = {
        "LIFECYCLE_ROOT": str(root),
        "LIFECYCLE_VAR_DIR": str(root / "var"),
        "LIFECYCLE_TRACKING_URI": settings.resolved_tracking_uri,
        "LIFECYCLE_PLAN_PATH": str(plan_path),
    }
    return RegistryEnv(
        root,
        settings,
        client,
        environment,
        plan.deploy.model_name,
        versions,
        band_images(40, 3, serving_meta),
    )
