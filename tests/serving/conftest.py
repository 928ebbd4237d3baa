"""Shared fixtures for the serving tests.

- ``serving_meta`` and ``registry_env`` (a real registry with two trained versions) are in tests/conftest.py:
  the integration tests use them too.
- ``local_models``: two real Keras models built from a tiny plan, saved as native .keras files and wrapped as
  ``ResolvedModel`` records (sha256 of the file, meta, input example): the registry's output without the
  registry, for the route tests.
- ``LocalSource``: a model source over those records whose current version a test sets, like an alias.
- ``make_client``: a started app (TestClient, lifespan run) on a private store under tmp_path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from config.plan import Plan, parse_plan
from config.settings import Settings
from data.dataset import DatasetMeta
from tests.support import SERVING_PLAN, band_images


@pytest.fixture(scope="session")
def serving_plan() -> Plan:
    return parse_plan(SERVING_PLAN, "serving-plan.yaml")


def save_resolved(model: Any, meta: DatasetMeta, folder: Path, version: str, example: np.ndarray) -> Any:
    """Save ``model`` as ``folder/v<version>/model.keras`` and describe it like the registry does."""
    from models.lineage import file_sha256
    from models.registry import ResolvedModel

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
    example = band_images(3, 0, serving_meta).features
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


@pytest.fixture
def make_source(local_models) -> Callable[..., LocalSource]:
    """``make_source(version="1", models=None)`` -> a LocalSource (test modules can't import conftest)."""

    def make(version: str | None = "1", models: dict[str, Any] | None = None) -> LocalSource:
        return LocalSource(models or local_models, version=version)

    return make
