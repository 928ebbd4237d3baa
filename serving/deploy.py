"""The lifecycle's deploy phase: serve the champion in-process and have it answer one held-out sample.

The flow calls ``check_deployment`` after promotion: the same ``create_app`` as ``lifecycle serve`` (registry
resolve, hash check, safe load, warm-up, prediction store), driven through FastAPI's TestClient, so a model
that can't be served fails the run here instead of in production.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

from config.plan import Plan
from config.settings import Settings


class DeployCheckError(RuntimeError):
    """The served champion could not answer the sample request; the message says what it answered."""


@dataclass(frozen=True)
class DeployCheck:
    """What the served champion answered to one held-out sample."""

    model_version: str
    backend: str  # "onnx" or "keras"
    request_id: str
    sample_id: str
    predicted: int | float  # class id, or the value for regression
    label: str | None  # the predicted class's name (None for regression)
    true_label: int | float
    seconds_to_ready: float
    latency_ms: float


def check_deployment(settings: Settings, plan: Plan, *, split: str = "test") -> DeployCheck:
    """Start the service on the champion, send one sample of the prepared ``split``, return what came back.

    Args:
        settings: the project's settings (registry, store, API key).
        plan: the plan (``deploy`` section: model name, alias, limits).
        split: the prepared split the sample is taken from.

    Returns:
        The version and backend that answered, the answer and the sample's true label, and the timings.

    Raises:
        DeployCheckError: the service did not become ready or did not answer 200.
    """
    with warnings.catch_warnings():  # starlette deprecates its httpx-based client; it still works as pinned
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from data.dataset import Dataset
    from serving.app import create_app

    dataset = Dataset.load(settings.layout.prepared_dir, split)
    instance, sample_id = dataset.features[0], str(dataset.sample_ids[0])
    headers = {}
    if settings.api_key is not None:
        headers["X-API-Key"] = settings.api_key.get_secret_value()
    started = time.perf_counter()
    with TestClient(create_app(settings, plan=plan), client=("127.0.0.1", 50000)) as client:
        ready = client.get("/ready")
        seconds_to_ready = time.perf_counter() - started
        if ready.status_code != 200:
            raise DeployCheckError(f"the service did not become ready: {ready.json()}")
        sent = time.perf_counter()
        response = client.post("/v1/predict", json={"instances": [instance.tolist()]}, headers=headers)
        latency_ms = (time.perf_counter() - sent) * 1000
        if response.status_code != 200:
            raise DeployCheckError(
                f"the service answered {response.status_code} to test sample {sample_id!r}: {response.text}"
            )
        backend = client.get("/v1/model").json()["backend"]
    body = response.json()
    answer = body["predictions"][0]
    regression = dataset.meta.task == "regression"
    true_label = float(dataset.labels[0]) if regression else int(dataset.labels[0])
    return DeployCheck(
        model_version=body["model_version"],
        backend=backend,
        request_id=body["request_id"],
        sample_id=sample_id,
        predicted=answer["value"] if regression else answer["class_id"],
        label=None if regression else answer["label"],
        true_label=true_label,
        seconds_to_ready=round(seconds_to_ready, 2),
        latency_ms=round(latency_ms, 2),
    )
