"""Everything MLflow for a training run: params, per-epoch metrics, artifacts, the model, lineage, a version.

Every call goes through the client passed in (``models.client``); nothing here reads settings or the
environment. ``log_training_run`` is the one entry point the train stage calls.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from config.plan import Plan
from data.dataset import DatasetMeta

from .lineage import file_sha256, lineage_tags
from .names import DATA_MD5_TAG, KERAS_FILE_IN_MODEL, MODEL_ARTIFACT, SHA256_TAG
from .run_artifacts import write_run_artifacts

if TYPE_CHECKING:  # keras (and TensorFlow) load only when a run is logged: `lifecycle ui` stays fast
    import keras
    from mlflow import MlflowClient

    from .train import TrainResult

_PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call
_METRICS_PER_BATCH = 1000
_PARAM_VALUE_LIMIT = 6000  # MLflow's longest param value


@dataclass(frozen=True)
class TrainedVersion:
    """A logged run and the registered model version it produced."""

    run_id: str
    model_name: str
    version: str
    model_uri: str  # models:/<name>/<version>
    sha256: str  # of the native .keras file stored in the registry
    model_path: Path | None = None  # local copy of that file, when asked for


def log_training_run(
    client: MlflowClient,
    plan: Plan,
    result: TrainResult,
    meta: DatasetMeta,
    *,
    plan_path: Path | None,
    root: Path,
    input_example: np.ndarray,
    artifact_location: str | None = None,
    model_dst: Path | None = None,
) -> TrainedVersion:
    """Log a finished training run to MLflow and register its model as a new version.

    Args:
        client: the project's MLflow client (``models.client.tracking_client``).
        plan: the plan the model was trained from.
        result: what ``train_model`` returned (the model and its history).
        meta: the prepared dataset's meta, logged as ``dataset_meta.json``.
        plan_path: the plan file, logged as an artifact; None logs the validated plan as ``plan.yaml``.
        root: the project root: git and ``dvc.lock`` are read from here.
        input_example: a few raw input rows, stored with the model (and used for its signature).
        artifact_location: artifact root URI for a new experiment (``models.client.artifact_location``);
            ignored when the experiment exists.
        model_dst: where to copy the registered ``.keras`` file (byte-identical, same sha256).

    Returns:
        The run id, the version of ``plan.deploy.model_name`` and the model file's sha256.
    """
    import keras
    from mlflow.entities import LoggedModelOutput, Metric, Param, RunStatus
    from mlflow.models import infer_signature

    experiment_id = ensure_experiment(client, plan.project.name, artifact_location)
    lineage = lineage_tags(plan, root, result.accelerator)
    tags = {**lineage, "stopped_by": result.stopped_by, "model_name": plan.deploy.model_name}
    run = client.create_run(experiment_id, run_name=f"train-{plan.deploy.model_name}", tags=tags)
    run_id = run.info.run_id
    try:
        flat = flatten_params(plan.model_dump(mode="json"))
        params = [Param(key, value[:_PARAM_VALUE_LIMIT]) for key, value in flat.items()]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start : start + _PARAMS_PER_BATCH])
        now_ms = int(time.time() * 1000)
        metrics = epoch_metrics(result.history, timestamp_ms=now_ms)
        metrics += [Metric(key, value, now_ms, 0) for key, value in final_metrics(result).items()]
        for start in range(0, len(metrics), _METRICS_PER_BATCH):  # one call unless > 1000 numbers
            client.log_batch(run_id, metrics=metrics[start : start + _METRICS_PER_BATCH])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_run_artifacts(folder, plan, plan_path, result, meta)
            client.log_artifacts(run_id, str(folder))
        example = np.asarray(input_example, dtype="float32")
        signature = infer_signature(example, keras.ops.convert_to_numpy(result.model(example)))
        logged = client.create_logged_model(experiment_id, name=MODEL_ARTIFACT, source_run_id=run_id)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / MODEL_ARTIFACT
            save_keras_model(result.model, folder, signature, example, run_id=run_id, logged=logged)
            sha256 = file_sha256(folder / KERAS_FILE_IN_MODEL)
            client.log_model_artifacts(logged.model_id, str(folder))
            if model_dst is not None:
                model_dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / KERAS_FILE_IN_MODEL, model_dst)
        client.finalize_logged_model(logged.model_id, "READY")
        client.log_outputs(run_id, models=[LoggedModelOutput(logged.model_id, step=0)])  # the run's model
        client.set_tag(run_id, SHA256_TAG, sha256)
        version_tags = {
            SHA256_TAG: sha256,
            "run_id": run_id,
            "plan_hash": lineage["plan_hash"],
            "git_commit": lineage["git_commit"],
            "git_dirty": lineage["git_dirty"],
            DATA_MD5_TAG: lineage[DATA_MD5_TAG],
            "accelerator": result.accelerator,
        }
        version = register_version(client, plan.deploy.model_name, logged, run_id=run_id, tags=version_tags)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return TrainedVersion(
        run_id=run_id,
        model_name=plan.deploy.model_name,
        version=version,
        model_uri=f"models:/{plan.deploy.model_name}/{version}",
        sha256=sha256,
        model_path=model_dst,
    )


def save_keras_model(
    model: keras.Model, folder: Path, signature: Any, example: np.ndarray, *, run_id: str, logged: Any
) -> None:
    """Save ``model`` as an MLflow keras-flavor model folder (``MLmodel``, ``data/model.keras``, signature,
    input example, pinned requirements) for ``logged`` (a ``LoggedModel``): the folder
    ``mlflow.keras.log_model`` would upload."""
    import mlflow.keras
    from mlflow.models import Model

    # mlflow 3.17.2's save_model writes the input example before it creates the folder
    # (mlflow/mlflow#16183, open): creating it first is the whole fix.
    folder.mkdir(parents=True)
    mlflow.keras.save_model(
        model,
        str(folder),
        mlflow_model=Model(
            artifact_path=logged.artifact_location,
            run_id=run_id,
            model_uuid=logged.model_id,
            model_id=logged.model_id,
        ),
        signature=signature,
        input_example=example,
        save_exported_model=False,  # the native .keras file
        pip_requirements=_pip_requirements(),  # skips MLflow's slow requirement inference
    )


def register_version(
    client: MlflowClient, name: str, logged: Any, *, run_id: str, tags: dict[str, str]
) -> str:
    """Register ``logged`` (a ``LoggedModel``) as a new version of ``name`` (created if missing); its number.

    The source is the logged model's storage location, not ``models:/<model_id>``: MLflow's SQL registry
    resolves that URI with the process-wide tracking URI, not this client's (mlflow 3.17.2,
    ``SqlAlchemyStore.create_model_version``)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version = client.create_model_version(
        name, source=logged.artifact_location, run_id=run_id, tags=tags, model_id=logged.model_id
    )
    return str(version.version)


def ui_server_command(
    tracking_uri: str, registry_uri: str, artifacts_uri: str, *, host: str = "127.0.0.1", port: int = 5000
) -> list[str]:
    """The ``mlflow server`` command line for the UI over this project's store.

    Args:
        tracking_uri: backend store (the same URI training logs to).
        registry_uri: model registry store.
        artifacts_uri: artifact root for experiments the UI creates, and where it serves artifacts from.
        host: interface to bind; 127.0.0.1 keeps it local.
        port: port to listen on.

    Returns:
        argv for ``subprocess``; runs this interpreter's MLflow.
    """
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", tracking_uri,
        "--registry-store-uri", registry_uri,
        "--default-artifact-root", artifacts_uri,
        "--artifacts-destination", artifacts_uri,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) when missing.

    Args:
        client: the project's MLflow client.
        name: the experiment name (the plan's project name).
        artifact_location: artifact root URI for a new experiment; None lets the store (or server) decide.

    Returns:
        The experiment id.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_location))


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested plan values as flat dot keys: ``{"train.optimizer.name": "adam", "model.layers.0.type": ...}``.

    Args:
        tree: a nested mapping (lists are indexed, None values dropped).
        prefix: key prefix, for recursion.

    Returns:
        Flat string params.
    """
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
            for index, item in enumerate(value):
                flat.update(flatten_params(item, f"{name}.{index}."))
        elif value is not None:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def epoch_metrics(history: Mapping[str, list[float]], timestamp_ms: int) -> list[Any]:
    """One MLflow Metric per (name, epoch); steps are epoch numbers from 1."""
    from mlflow.entities import Metric

    return [
        Metric(key=name, value=float(value), timestamp=timestamp_ms, step=epoch)
        for name, values in history.items()
        for epoch, value in enumerate(values, start=1)
    ]


def final_metrics(result: TrainResult) -> dict[str, float]:
    """The run's summary numbers: the best model's train/val metrics, epochs, time and throughput."""
    summary = dict(result.final_metrics)
    summary.update(
        epochs_run=float(result.epochs_run),
        train_seconds=result.seconds,
        samples_per_second=result.samples_per_second,
    )
    if result.best_epoch is not None:
        summary["best_epoch"] = float(result.best_epoch)
    return summary


def _pip_requirements() -> list[str]:
    names: Iterable[str] = ("tensorflow-cpu", "tensorflow", "keras", "mlflow", "numpy")
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins
