"""Shared fixtures for the serving tests.

- ``serving_meta``: an 8x8 three-class image dataset meta (source units 0..16, standard scaling).
- ``local_models``: two real Keras models built from a tiny plan, saved as native .keras files and wrapped as
  ``ResolvedModel`` records (sha256 of the file, meta, input example): the registry's output without the
  registry, for the route tests.
- ``LocalSource``: a model source over those records whose current version a test sets, like an alias.
- ``make_client``: a started app (TestClient, lifespan run) on a private store under tmp_path.
- ``registry_env``: a real MLflow store (sqlite, tmp) with two versions trained and registered by
  ``models.tracking.log_training_run``, champion -> v1 (session scope: trained once).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from data.dataset import Dataset, DatasetMeta
from pipeline.plan import Plan, parse_plan
from pipeline.settings import Settings

CLASSES = ["0", "1", "2"]
PLAN = {
    "project": {"name": "serving-tests", "goal": "tests"},
    "data": {"source": "sklearn:digits", "classes": CLASSES, "scaling": "standard"},
    "model": {
        "layers": [
            {"type": "Input", "shape": [8, 8]},
            {"type": "Flatten"},
            {"type": "Dense", "units": 16, "activation": "relu"},
            {"type": "Dense", "units": 3, "activation": "softmax"},
        ]
    },
    "train": {"epochs": 2, "batch_size": 16, "seed": 7, "optimizer": {"name": "adam", "learning_rate": 0.02}},
    "resources": {"accelerator": "cpu", "time_budget_minutes": 5},
    "deploy": {"model_name": "tiny-served", "max_batch_size": 8},
}


def serving_dataset(n: int, seed: int, meta: DatasetMeta) -> Dataset:
    """``n`` 8x8 images in 0..16: class k is bright in rows 2k..2k+2, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(meta.classes), size=n)
    features = rng.uniform(0, 4, size=(n, 8, 8)).astype("float32")
    for row, label in enumerate(labels):
        features[row, label * 2 : label * 2 + 3, :] += 10.0
    ids = np.array([f"s{seed}-{i}" for i in range(n)])
    return Dataset(features=features, labels=labels.astype("int64"), sample_ids=ids, meta=meta)


@pytest.fixture(scope="session")
def serving_meta() -> DatasetMeta:
    return DatasetMeta(
        source="sklearn:digits",
        kind="image",
        task="classification",
        classes=CLASSES,
        input_shape=[8, 8],
        scaling={"method": "standard", "mean": [6.0] * 64, "std": [5.0] * 64},
    )


@pytest.fixture(scope="session")
def serving_plan() -> Plan:
    return parse_plan(PLAN, "serving-plan.yaml")


def save_resolved(model: Any, meta: DatasetMeta, folder: Path, version: str, example: np.ndarray) -> Any:
    """Save ``model`` as ``folder/v<version>/model.keras`` and describe it like the registry does."""
    from models.registry import ResolvedModel, file_sha256

    path = folder / f"v{version}" / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return ResolvedModel(
        name="tiny-served",
        version=version,
        run_id=f"run-{version}",
        alias="champion",
        model_path=path,
        sha256=file_sha256(path),
        meta=meta,
        input_example=example,
        metrics={"accuracy": 0.9},
    )


@pytest.fixture(scope="session")
def local_models(tmp_path_factory: pytest.TempPathFactory, serving_meta: DatasetMeta, serving_plan: Plan):
    """{"1": ResolvedModel, "2": ResolvedModel}: two differently seeded real models as .keras files."""
    import keras

    from models.build import build_model

    folder = tmp_path_factory.mktemp("local-models")
    example = serving_dataset(3, 0, serving_meta).features
    resolved = {}
    for version in ("1", "2"):
        keras.utils.set_random_seed(int(version))
        model = build_model(serving_plan.model, serving_meta, serving_plan.train)
        resolved[version] = save_resolved(model, serving_meta, folder, version, example)
    return resolved


_SERVED: dict[tuple[str, str, str], Any] = {}


def cached_loader(backend: str, work_dir: Path) -> Callable[[Any], Any]:
    """``load_served_model`` memoised per (file, backend) for the session: route tests share loaded models
    (they are immutable), so each version is loaded and exported once."""
    from serving.predictor import load_served_model

    def load(resolved: Any) -> Any:
        key = (str(resolved.model_path), resolved.sha256, backend)
        if key not in _SERVED:
            _SERVED[key] = load_served_model(
                resolved, backend=backend, work_dir=work_dir / f"{resolved.version}-{backend}"
            )
        return _SERVED[key]

    return load


@dataclass
class LocalSource:
    """Versions from a dict; ``version`` plays the alias (a test moves it)."""

    models: dict[str, Any]
    version: str | None = "1"
    fetched: int = 0

    def current_version(self) -> str | None:
        return self.version

    def fetch(self, version: str) -> Any:
        self.fetched += 1
        return self.models[version]


@pytest.fixture
def make_client(tmp_path: Path, serving_plan: Plan, local_models) -> Iterator[Callable[..., Any]]:
    """``make_client(source=None, backend="auto", **settings)`` -> a started TestClient (closed after)."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.predictor import Predictor

    clients = []

    def make(source: LocalSource | None = None, backend: str = "auto", plan: Plan | None = None, **fields):
        source = source or LocalSource(local_models)
        plan = plan or serving_plan
        settings = Settings(root=tmp_path, var_dir=tmp_path / "var", **fields)

        def factory(settings: Settings, plan: Plan) -> Predictor:
            loader = cached_loader(backend, tmp_path)
            return Predictor(source, loader, max_batch_size=plan.deploy.max_batch_size)

        client = TestClient(
            create_app(settings, plan=plan, predictor_factory=factory), client=("127.0.0.1", 5)
        )
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def write_plan(root: Path, **deploy: Any) -> Path:
    """The serving test plan as ``root/plan.yaml`` (deploy fields overridden)."""
    plan = {**PLAN, "deploy": {**PLAN["deploy"], **deploy}}
    path = root / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


@dataclass(frozen=True)
class RegistryEnv:
    root: Path
    settings: Settings
    environment: dict[str, str]  # LIFECYCLE_* for a server subprocess
    name: str
    versions: list[str]
    test: Dataset


@pytest.fixture(scope="session")
def registry_env(
    tmp_path_factory: pytest.TempPathFactory, serving_meta: DatasetMeta
) -> Iterator[RegistryEnv]:
    """A real MLflow registry (sqlite under tmp) with two trained versions of ``tiny-served``; champion v1."""
    from models.build import build_model
    from models.tracking import log_training_run
    from models.train import train_model

    root = tmp_path_factory.mktemp("registry-root")
    plan_path = write_plan(root, max_batch_size=64)
    plan = parse_plan(yaml.safe_load(plan_path.read_text()), plan_path)
    saved = {
        name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_HOME")
    }
    settings = Settings(root=root, var_dir=root / "var")
    settings.apply_environment()
    train, val = serving_dataset(150, 1, serving_meta), serving_dataset(45, 2, serving_meta)
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
            plan,
            result,
            serving_meta,
            plan_path=plan_path,
            root=root,
            input_example=train.features[:3],
            artifact_location=settings.resolved_artifacts_dir.as_uri(),
        )
        versions.append(trained.version)
    from models.registry import move_alias

    move_alias(plan.deploy.model_name, "champion", versions[0], action="promote", reason="first champion")
    environment = {
        "LIFECYCLE_ROOT": str(root),
        "LIFECYCLE_VAR_DIR": str(root / "var"),
        "LIFECYCLE_TRACKING_URI": settings.resolved_tracking_uri,
        "LIFECYCLE_PLAN_PATH": str(plan_path),
    }
    yield RegistryEnv(
        root, settings, environment, plan.deploy.model_name, versions, serving_dataset(40, 3, serving_meta)
    )
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def make_source(local_models) -> Callable[..., LocalSource]:
    """``make_source(version="1", models=None)`` -> a LocalSource (test modules can't import conftest)."""

    def make(version: str | None = "1", models: dict[str, Any] | None = None) -> LocalSource:
        return LocalSource(models or local_models, version=version)

    return make
