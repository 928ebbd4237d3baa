"""Settings: defaults keep state under var/, LIFECYCLE_* overrides, secrets fail fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LIFECYCLE_"):
            monkeypatch.delenv(name)


def test_defaults_keep_state_under_var_of_the_root(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path)

    var = tmp_path.resolve() / "var"
    assert settings.var_dir == var
    assert settings.plan_path == tmp_path.resolve() / "plan.yaml"
    assert settings.resolved_tracking_uri == f"sqlite:///{var / 'mlflow.db'}"
    assert settings.resolved_registry_uri == settings.resolved_tracking_uri
    assert settings.resolved_artifacts_dir == var / "mlartifacts"
    assert settings.resolved_prefect_home == var / "prefect"
    assert settings.resolved_store_url == f"sqlite:///{var / 'predictions.db'}"
    assert settings.prefect_api_url is None
    assert settings.api_key is None


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_ROOT", str(tmp_path))
    monkeypatch.setenv("LIFECYCLE_VAR_DIR", "state")
    monkeypatch.setenv("LIFECYCLE_TRACKING_URI", "postgresql://mlflow@db/mlflow")
    monkeypatch.setenv("LIFECYCLE_PORT", "9001")
    monkeypatch.setenv("LIFECYCLE_API_KEY", "a-real-secret-of-some-length")

    settings = Settings()

    assert settings.root == tmp_path.resolve()
    assert settings.var_dir == tmp_path.resolve() / "state"
    assert settings.resolved_prefect_home == tmp_path.resolve() / "state" / "prefect"
    assert settings.resolved_tracking_uri == "postgresql://mlflow@db/mlflow"
    assert settings.resolved_registry_uri == "postgresql://mlflow@db/mlflow"
    assert settings.port == 9001
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "a-real-secret-of-some-length"
    assert "a-real-secret" not in repr(settings)


@pytest.mark.parametrize("secret", ["changeme", "password", "short"])
def test_placeholder_api_key_is_refused(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("LIFECYCLE_API_KEY", secret)

    with pytest.raises(ValidationError, match="LIFECYCLE_API_KEY must be a real secret of at least 12"):
        Settings()


def test_out_of_range_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_PORT", "70000")

    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_store_writer_is_a_process_by_default_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().store_writer == "process"
    monkeypatch.setenv("LIFECYCLE_STORE_WRITER", "thread")
    assert Settings().store_writer == "thread"
    monkeypatch.setenv("LIFECYCLE_STORE_WRITER", "fork")

    with pytest.raises(ValidationError, match="store_writer"):
        Settings()


def test_apply_environment_points_libraries_at_var_but_not_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith(("MLFLOW_", "PREFECT_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # a value the user set wins
    settings = Settings(root=tmp_path)

    settings.apply_environment()

    assert (tmp_path / "var").is_dir()
    assert os.environ["PREFECT_HOME"] == str(tmp_path.resolve() / "var" / "prefect")
    assert os.environ["DO_NOT_TRACK"] == "1" and os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert "PREFECT_API_URL" not in os.environ
    # The MLflow store is passed down as a client (models.client), never through the environment.
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ


def test_the_layout_follows_root_and_var(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path, var_dir=tmp_path / "state")
    layout = settings.layout

    assert layout.prepared_dir == tmp_path.resolve() / "data/prepared"
    assert layout.train_record == tmp_path.resolve() / "artifacts/train.json"
    assert layout.mlflow_db == tmp_path.resolve() / "state/mlflow.db"
    assert settings.resolved_tracking_uri == f"sqlite:///{layout.mlflow_db}"
    assert layout.relative(layout.test_predictions) == "reports/predictions_test.npz"
    assert layout.relative(Path("/elsewhere/file")) == "/elsewhere/file"
