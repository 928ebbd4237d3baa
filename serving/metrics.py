"""Prometheus metrics of the service, in a registry of its own (one per app, so tests don't collide).

With several uvicorn workers each process counts its own; scrape each replica (the usual setup behind a
load balancer) rather than the shared port.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    """Requests, latency, batch sizes, errors, reloads and the served model version."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lifecycle_requests", "Requests answered, by endpoint and status.", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "lifecycle_request_latency_seconds", "Time from parsed request to response, by endpoint.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "lifecycle_batch_size", "Instances per prediction request.", buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "lifecycle_errors", "Rejected or failed requests, by endpoint and kind.", ["endpoint", "kind"],
            registry=self.registry,
        )  # fmt: skip
        self.predictions = Counter(
            "lifecycle_predictions", "Instances predicted, by model version.", ["version"],
            registry=self.registry,
        )  # fmt: skip
        self.model_version = Gauge(
            "lifecycle_model_version", "The registry version being served (0: none yet).",
            registry=self.registry,
        )  # fmt: skip
        self.model_info = Gauge(
            "lifecycle_model_info", "1 for the served model.", ["name", "version", "backend"],
            registry=self.registry,
        )  # fmt: skip
        self.reloads = Counter(
            "lifecycle_model_reloads", "Registry checks by outcome: swapped, unchanged, failed.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.store_pending = Gauge(
            "lifecycle_store_pending", "Prediction records queued, not yet written.", registry=self.registry
        )
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._predicted: dict[str, Any] = {}

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a lookup per call: keep the children
            children = self._children[key] = (
                self.requests.labels(endpoint, str(status)),
                self.latency.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_prediction(self, endpoint: str, size: int, seconds: float) -> None:
        """One answered prediction request: its batch size, a 200 and its latency."""
        self.batch_size.observe(size)
        self.observe_request(endpoint, 200, seconds)

    def count_predictions(self, version: str, count: int) -> None:
        child = self._predicted.get(version)
        if child is None:
            child = self._predicted[version] = self.predictions.labels(version)
        child.inc(count)

    def observe_error(self, endpoint: str, status: int, kind: str) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.errors.labels(endpoint, kind).inc()

    def set_model(self, name: str, version: str, backend: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, backend).set(1)
        self.model_version.set(float(version) if version.isdigit() else 0)

    def track_store(self, pending: Callable[[], int]) -> None:
        self.store_pending.set_function(pending)

    def render(self) -> bytes:
        return generate_latest(self.registry)
