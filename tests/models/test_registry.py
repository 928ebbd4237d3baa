"""The registry on a real MLflow sqlite store: resolve (hash-verified), aliases, the promotion ledger."""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from models import registry
from models.registry import (
    ModelIntegrityError,
    ModelNotFoundError,
    alias_version,
    resolve_model,
)


def test_constants_match_tracking():
    from models import tracking

    assert registry.KERAS_FILE_IN_MODEL == tracking.KERAS_FILE_IN_MODEL
    assert registry.DATASET_META_ARTIFACT == tracking.DATASET_META_ARTIFACT


def test_resolve_round_trip(trained_version, tiny_splits, tmp_path: Path):
    version, result = trained_version
    client = mlflow.MlflowClient()
    assert alias_version(version.model_name, "champion", client=client) is None
    client.set_registered_model_alias(version.model_name, "champion", version.version)
    assert alias_version(version.model_name, "champion", client=client) == version.version

    resolved = resolve_model(version.model_name, "champion", client=client, dst=tmp_path / "dl")

    assert resolved.version == version.version
    assert resolved.run_id == version.run_id
    assert resolved.alias == "champion"
    assert resolved.sha256 == version.sha256 == registry.file_sha256(resolved.model_path)
    assert resolved.meta == tiny_splits["train"].meta
    np.testing.assert_allclose(resolved.input_example, tiny_splits["train"].features[:3], rtol=1e-6)
    assert resolved.metrics and all(isinstance(v, float) for v in resolved.metrics.values())
    loaded = keras.saving.load_model(resolved.model_path)
    x = tiny_splits["test"].features[:5]
    np.testing.assert_allclose(loaded(x, training=False), result.model(x, training=False), atol=1e-6)


def test_resolve_by_version_without_alias(trained_version, tmp_path: Path):
    version, _ = trained_version
    resolved = resolve_model(version.model_name, version=version.version, dst=tmp_path / "dl")
    assert resolved.alias is None
    assert resolved.version == version.version


def test_resolve_missing_alias_and_version(trained_version):
    version, _ = trained_version
    with pytest.raises(ModelNotFoundError, match="alias 'champion'"):
        resolve_model(version.model_name, "champion")
    with pytest.raises(ModelNotFoundError, match="v99"):
        resolve_model(version.model_name, version="99")
    assert alias_version("no-such-model") is None


def test_tampered_artifact_raises_integrity_error(trained_version, tmp_path: Path):
    version, _ = trained_version
    client = mlflow.MlflowClient()
    source = client.get_model_version_download_uri(version.model_name, version.version)
    stored = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path / "peek")))
    # The store is a local folder: find the registered file in place and change one byte.
    store_file = Path(source.removeprefix("file://")) / registry.KERAS_FILE_IN_MODEL
    assert store_file.is_file(), stored
    data = bytearray(store_file.read_bytes())
    data[-1] ^= 0xFF
    store_file.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        resolve_model(version.model_name, version=version.version, dst=tmp_path / "dl")
