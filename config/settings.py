"""Environment and secrets: one Settings object, read at the edge, that fails fast.

Every value can be set by an environment variable prefixed ``LIFECYCLE_`` (``LIFECYCLE_TRACKING_URI``,
``LIFECYCLE_STORE_URL``, ...). Defaults keep all runtime state under ``var/`` of the project root (see
``config.layout``). Settings are read once where a process starts (the CLI, a DVC stage, a service worker, a
flow run) and passed down; the rooms below take what they need as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.layout import PLAN_FILE, ProjectLayout

_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "apikey", "api-key", "xxx"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIFECYCLE_", frozen=True, extra="ignore")

    # The project root: plan, dvc.yaml and var/ are found from here.
    root: Path = Field(default_factory=Path.cwd)
    plan_path: Path = PLAN_FILE
    var_dir: Path = Path("var")

    tracking_uri: str | None = None  # default sqlite:///<var>/mlflow.db
    registry_uri: str | None = None  # default: the tracking URI
    artifacts_dir: Path | None = None  # default <var>/mlartifacts
    prefect_home: Path | None = None  # default <var>/prefect
    # Prefect API; None runs flows in ephemeral mode (no server). Schedules need a server.
    prefect_api_url: str | None = None

    # Prediction store, any SQLAlchemy URL; default SQLite (WAL) under var/.
    store_url: str | None = None
    # Serving.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    workers: int = Field(default=1, gt=0)
    model_uri: str | None = None  # overrides models:/<name>@<alias>
    poll_seconds: float = Field(default=30.0, gt=0)
    api_key: SecretStr | None = None
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    store_queue_size: int = Field(default=10_000, gt=0)
    # Who writes the service's predictions: a child process (off this process's GIL) or a thread.
    store_writer: Literal["process", "thread"] = "process"
    ui_port: int = Field(default=5000, gt=0, lt=65536)

    @field_validator("api_key")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret = value.get_secret_value()
            if secret.lower() in _PLACEHOLDER_SECRETS or len(secret) < 12:
                raise ValueError("LIFECYCLE_API_KEY must be a real secret of at least 12 characters")
        return value

    @model_validator(mode="after")
    def _absolute_paths(self) -> Settings:
        root = self.root.resolve()
        object.__setattr__(self, "root", root)
        for name in ("plan_path", "var_dir", "artifacts_dir", "prefect_home"):
            value = getattr(self, name)
            if value is not None and not value.is_absolute():
                object.__setattr__(self, name, root / value)
        return self

    @property
    def layout(self) -> ProjectLayout:
        """Every path of the project, from ``root`` and ``var_dir``."""
        return ProjectLayout(self.root, self.var_dir)

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.layout.mlflow_db}"

    @property
    def resolved_registry_uri(self) -> str:
        return self.registry_uri or self.resolved_tracking_uri

    @property
    def resolved_artifacts_dir(self) -> Path:
        return self.artifacts_dir or self.layout.mlflow_artifacts

    @property
    def resolved_prefect_home(self) -> Path:
        return self.prefect_home or self.layout.prefect_home

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.layout.predictions_db}"

    def library_environment(self) -> dict[str, str]:
        """What the libraries this process imports read from the environment: no telemetry (there is no
        network), quiet logs, Keras on TensorFlow, Prefect's home and API. Values the environment already has
        win, except Prefect's home and API, which follow these settings."""
        defaults = {
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "MLFLOW_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            # Prefect's 20 s default for starting the ephemeral server is too short on a busy 2-core machine.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_BACKEND": "tensorflow",
        }
        chosen = {name: os.environ.get(name, value) for name, value in defaults.items()}
        chosen["PREFECT_HOME"] = str(self.resolved_prefect_home)
        if self.prefect_api_url:
            chosen["PREFECT_API_URL"] = self.prefect_api_url
        return chosen

    def apply_environment(self) -> None:
        """Export ``library_environment()`` and create ``var/``: once per process, where it starts (the CLI,
        a stage's ``main``, a service worker, a flow run), before Prefect, MLflow or TensorFlow is imported.
        The MLflow store is not in it: it is passed down as a client (``models.client``)."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        os.environ.update(self.library_environment())
