"""Where a served prediction came from: prediction -> model version -> MLflow run -> data -> code -> plan."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from models.names import DATA_MD5_TAG, SHA256_TAG
from serving.store.reader import PredictionReader


class LineageError(LookupError):
    """A link of the chain is missing; the message names it."""


@dataclass(frozen=True)
class Lineage:
    request_id: str
    created_at: str
    predicted: Any
    confidence: float
    label: float | None
    model_name: str
    model_version: str
    model_sha256: str
    run_id: str
    experiment: str
    run_name: str
    run_metrics: dict[str, float]
    data_md5: dict[str, str]
    git_commit: str
    git_dirty: str
    plan_hash: str

    def links(self) -> list[tuple[str, str]]:
        """The chain as (link, value) lines, in order."""
        data = ", ".join(f"{path}={md5}" for path, md5 in sorted(self.data_md5.items())) or "(none recorded)"
        label = "none yet" if self.label is None else f"{self.label:g}"
        return [
            ("prediction", f"{self.request_id} at {self.created_at}: {self.predicted} "
                           f"(confidence {self.confidence:.3f}, feedback label {label})"),
            ("model version", f"{self.model_name} v{self.model_version} (sha256 {self.model_sha256[:16]})"),
            ("MLflow run", f"{self.run_id} ({self.run_name} in experiment {self.experiment})"),
            ("data version", f"DVC hashes {data}"),
            ("git commit", f"{self.git_commit}{' (dirty)' if self.git_dirty == 'true' else ''}"),
            ("plan hash", self.plan_hash),
        ]  # fmt: skip


def trace_prediction(client: Any, request_id: str, store: PredictionReader) -> Lineage:
    """Follow one prediction back through the registry and the run that trained its model.

    Args:
        client: the project's ``MlflowClient``.
        request_id: the prediction's ``request_id`` (from the response).
        store: the prediction store it was logged to.

    Returns:
        The chain.

    Raises:
        LineageError: no such prediction, or its model version / run is gone from the registry.
    """
    from mlflow.exceptions import MlflowException

    found = store.find(request_id)
    if found is None:
        raise LineageError(f"request_id {request_id!r}: no such prediction in {store.url}")
    name, version = found["model_name"], found["model_version"]
    try:
        model_version = client.get_model_version(name, version)
        run_id = model_version.run_id or model_version.tags.get("run_id", "")
        run = client.get_run(run_id)
        experiment = client.get_experiment(run.info.experiment_id).name
    except MlflowException as error:
        raise LineageError(f"{name} v{version} or its run is not in the registry: {error.message}") from None
    tags = {**run.data.tags, **model_version.tags}
    try:
        data_md5 = json.loads(tags.get(DATA_MD5_TAG, "{}"))
    except json.JSONDecodeError:
        data_md5 = {"(unparsed)": tags.get(DATA_MD5_TAG, "")}
    predicted = found["predicted_class"] if found["predicted_class"] is not None else found["predicted_value"]
    return Lineage(
        request_id=request_id,
        created_at=found["created_at"].isoformat(timespec="seconds"),
        predicted=predicted,
        confidence=float(found["confidence"]),
        label=found["label"],
        model_name=name,
        model_version=str(version),
        model_sha256=tags.get(SHA256_TAG, "unknown"),
        run_id=run_id,
        experiment=experiment,
        run_name=run.info.run_name or "",
        run_metrics=dict(run.data.metrics),
        data_md5=data_md5,
        git_commit=tags.get("git_commit", "unknown"),
        git_dirty=tags.get("git_dirty", "unknown"),
        plan_hash=tags.get("plan_hash", "unknown"),
    )
