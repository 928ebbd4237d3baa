"""The MLflow client every tracking and registry call goes through: built once from Settings, passed down.

Nothing in the project reads ``MLFLOW_TRACKING_URI`` or uses MLflow's process-wide "current" store: a
function that talks to MLflow takes a ``client`` argument, and the edges (CLI, stage shells, flows, the
service) build it here from ``Settings``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient


def tracking_client(settings: Settings) -> MlflowClient:
    """An ``MlflowClient`` on the project's tracking and registry stores (``LIFECYCLE_TRACKING_URI``, ...)."""
    from mlflow import MlflowClient

    settings.var_dir.mkdir(parents=True, exist_ok=True)  # the embedded SQLite store lives there
    return MlflowClient(
        tracking_uri=settings.resolved_tracking_uri, registry_uri=settings.resolved_registry_uri
    )


def artifact_location(settings: Settings) -> str | None:
    """Where an experiment this project creates keeps its artifacts.

    Against an MLflow server (an ``http(s)`` tracking URI) none is given: the server's
    ``--artifacts-destination`` decides, so every machine that reaches the server reaches the artifacts.
    Against a local store, the artifacts folder (``LIFECYCLE_ARTIFACTS_DIR``, default ``var/mlartifacts``).
    """
    if settings.resolved_tracking_uri.startswith(("http://", "https://")):
        return None
    return settings.resolved_artifacts_dir.as_uri()
