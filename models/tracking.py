"""Everything MLflow for a training run: params, per-epoch metrics, artifacts, the model, lineage, a version.

The tracking and registry URIs come from the environment (``Settings.apply_environment``); nothing here
reads settings or sets URIs. ``log_training_run`` is the one entry point the stage calls.
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

from data.dataset import DatasetMeta
from pipeline.plan import Plan

from .lineage import file_sha256, lineage_tags
from .run_artifacts import DATASET_META_ARTIFACT, write_run_artifacts

__all__ = ["DATASET_META_ARTIFACT", "TrainedVersion", "log_training_run", "ui_server_command"]

if TYPE_CHECKING:  # keras (and TensorFlow) load only when a run is logged: `lifecycle ui` stays fast
    from .train import TrainResult

MODEL_ARTIFACT = "model"  # mlflow.keras.log_model(name=...)
KERAS_FILE_IN_MODEL = "data/model.keras"  # where the keras flavor puts the native file
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
        plan: the plan the model was trained from.
        result: what ``train_model`` returned (the model and its history).
        meta: the prepared dataset's meta, logged as ``dataset_meta.json``.
        plan_path: the plan file, logged as an artifact; None logs the validated plan as ``plan.yaml``.
        root: the project root: git and ``dvc.lock`` are read from here.
        input_example: a few raw input rows, stored with the model (and used for its signature).
        artifact_location: artifact root URI for a new experiment (e.g. ``Settings.resolved_artifacts_dir``
            as a ``file://`` URI); ignored when the experiment exists.
        model_dst: where to copy the registered ``.keras`` file (byte-identical, same sha256).

    Returns:
        The run id, the version of ``plan.deploy.model_name`` and the model file's sha256.
    """
    import keras
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.models import infer_signature

    client = mlflow.MlflowClient()
    experiment_id = ensure_experiment(plan.project.name, artifact_location)
    lineage = lineage_tags(plan, root, result.accelerator)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{plan.deploy.model_name}") as run:
        run_id = run.info.run_id
        flat = flatten_params(plan.model_dump(mode="json"))
        params = [Param(key, value[:_PARAM_VALUE_LIMIT]) for key, value in flat.items()]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start : start + _PARAMS_PER_BATCH])
        metrics = epoch_metrics(result.history, timestamp_ms=int(time.time() * 1000))
        metrics += [
            Metric(key, value, int(time.time() * 1000), 0) for key, value in final_metrics(result).items()
        ]
        for start in range(0, len(metrics), _METRICS_PER_BATCH):  # one call unless > 1000 numbers
            client.log_batch(run_id, metrics=metrics[start : start + _METRICS_PER_BATCH])
        mlflow.set_tags({**lineage, "stopped_by": result.stopped_by, "model_name": plan.deploy.model_name})
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_run_artifacts(folder, plan, plan_path, result, meta)
            mlflow.log_artifacts(str(folder))
        example = np.asarray(input_example, dtype="float32")
        signature = infer_signature(example, keras.ops.convert_to_numpy(result.model(example)))
        # = mlflow.keras.log_model(...), via a flavor whose save_model works with an input example.
        info = mlflow.models.Model.log(
            artifact_path=None,
            name=MODEL_ARTIFACT,
            flavor=_KerasFlavor,
            model=result.model,
            signature=signature,
            input_example=example,
            save_exported_model=False,  # the native .keras file
            pip_requirements=_pip_requirements(),  # skips MLflow's slow requirement inference
        )
        with tempfile.TemporaryDirectory() as tmp:
            stored = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{_model_root(info)}/{KERAS_FILE_IN_MODEL}",
                    dst_path=tmp,
                )
            )
            sha256 = file_sha256(stored)
            if model_dst is not None:
                model_dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(stored, model_dst)
        mlflow.set_tag("model_sha256", sha256)
        version_tags = {
            "model_sha256": sha256,
            "run_id": run_id,
            "plan_hash": lineage["plan_hash"],
            "git_commit": lineage["git_commit"],
            "git_dirty": lineage["git_dirty"],
            "data_md5": lineage["data_md5"],
            "accelerator": result.accelerator,
        }
        registered = mlflow.register_model(info.model_uri, plan.deploy.model_name, tags=version_tags)
    return TrainedVersion(
        run_id=run_id,
        model_name=plan.deploy.model_name,
        version=str(registered.version),
        model_uri=f"models:/{plan.deploy.model_name}/{registered.version}",
        sha256=sha256,
        model_path=model_dst,
    )


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


def ensure_experiment(name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) when missing.

    Args:
        name: the experiment name (the plan's project name).
        artifact_location: artifact root URI for a new experiment; None for MLflow's default.

    Returns:
        The experiment id.
    """
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_location)


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


class _KerasFlavor:
    """``mlflow.keras`` with one fix: mlflow 3.17.2's ``mlflow.keras.save_model`` writes the input example
    before it creates the model folder, so ``mlflow.keras.log_model(..., input_example=...)`` fails with
    FileNotFoundError (mlflow/mlflow#16183, open). Creating the folder first is the whole fix; the saved
    model (MLmodel with the keras flavor, data/model.keras, signature, example) is what log_model makes."""

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path: str, **kwargs: Any) -> None:
        import mlflow.keras

        Path(path).mkdir(parents=True, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)


def _model_root(info: Any) -> str:
    """The artifact URI of a logged model's files (MLflow 3 keeps them outside the run's artifacts)."""
    import mlflow

    return mlflow.MlflowClient().get_logged_model(info.model_id).artifact_location


def _pip_requirements() -> list[str]:
    names: Iterable[str] = ("tensorflow-cpu", "tensorflow", "keras", "mlflow", "numpy")
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins
