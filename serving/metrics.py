"""Prometheus metrics of the service, in a registry of its own (one per app, so tests don't collide).

With several uvicorn workers each process counts its own; scrape each replica (the usual setup behind a
load balancer) rather than the shared port.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _RequestCounts:
    """The per-request metrics as plain counters under one lock, rendered by ``collect`` (a Prometheus custom
    collector). prometheus_client's own Counter and Histogram cost ~10 us a prediction between them (label
    lookups, per-value locks, a Python loop over the buckets); this is one lock and a bisect.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.predictions: dict[str, int] = {}
        self.latency: dict[str, list[float]] = {}  # endpoint -> per-bucket counts (+Inf last), then the sum
        self.batch: list[float] = [0] * (len(_BATCH_BUCKETS) + 2)
        self.caller: Any = None  # the service's ModelCaller: its calls and the requests they answered
        self.writer: Any = None  # the service's PredictionWriter: rows written and given up on

    def request(self, endpoint: str, status: str, seconds: float) -> None:
        with self._lock:
            self._answered(endpoint, status, seconds)

    def predictions_answered(
        self, endpoint: str, version: str, sizes: list[int], seconds: list[float]
    ) -> None:
        """Answered prediction requests: each a 200, its latency, its batch size, its instances."""
        with self._lock:
            for size, spent in zip(sizes, seconds, strict=True):
                self._answered(endpoint, "200", spent)
                self.batch[bisect.bisect_left(_BATCH_BUCKETS, size)] += 1
            total = sum(sizes)
            self.batch[-1] += total
            self.predictions[version] = self.predictions.get(version, 0) + total

    def _answered(self, endpoint: str, status: str, seconds: float) -> None:
        """Count one request and its latency; the caller holds the lock."""
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        counts = self.latency.get(endpoint)
        if counts is None:
            counts = self.latency[endpoint] = [0] * (len(_LATENCY_BUCKETS) + 2)
        counts[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def error(self, endpoint: str, status: str, kind: str) -> None:
        with self._lock:
            key = (endpoint, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            self.errors[(endpoint, kind)] = self.errors.get((endpoint, kind), 0) + 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            requests, errors, predictions = dict(self.requests), dict(self.errors), dict(self.predictions)
            latency = {endpoint: list(counts) for endpoint, counts in self.latency.items()}
            batch = list(self.batch)
        family = CounterMetricFamily(
            "lifecycle_requests", "Requests answered, by endpoint and status.", labels=["endpoint", "status"]
        )
        for (endpoint, status), value in sorted(requests.items()):
            family.add_metric([endpoint, status], value)
        yield family
        family = CounterMetricFamily(
            "lifecycle_errors",
            "Rejected or failed requests, by endpoint and kind.",
            labels=["endpoint", "kind"],
        )
        for (endpoint, kind), value in sorted(errors.items()):
            family.add_metric([endpoint, kind], value)
        yield family
        family = CounterMetricFamily(
            "lifecycle_predictions", "Instances predicted, by model version.", labels=["version"]
        )
        for version, value in sorted(predictions.items()):
            family.add_metric([version], value)
        yield family
        histogram = HistogramMetricFamily(
            "lifecycle_request_latency_seconds",
            "Time from parsed request to its answer, by endpoint.",
            labels=["endpoint"],
        )
        for endpoint, counts in sorted(latency.items()):
            histogram.add_metric([endpoint], _cumulative(_LATENCY_BUCKETS, counts), counts[-1])
        yield histogram
        histogram = HistogramMetricFamily("lifecycle_batch_size", "Instances per prediction request.")
        histogram.add_metric([], _cumulative(_BATCH_BUCKETS, batch), batch[-1])
        yield histogram
        if self.writer is not None:  # rows the store wrote, and those it gave up on (each logged)
            yield CounterMetricFamily(
                "lifecycle_store_rows_written", "Prediction and feedback rows written to the store.",
                value=self.writer.written,
            )  # fmt: skip
            yield CounterMetricFamily(
                "lifecycle_store_rows_failed", "Rows the store refused or could not read (see the log).",
                value=self.writer.failed,
            )  # fmt: skip
        if self.caller is not None:  # requests answered / model calls = how much micro-batching shares
            yield CounterMetricFamily(
                "lifecycle_model_calls", "Calls of the model (one may answer several requests).",
                value=self.caller.calls,
            )  # fmt: skip
            yield CounterMetricFamily(
                "lifecycle_model_call_requests", "Prediction requests answered by those calls.",
                value=self.caller.jobs,
            )  # fmt: skip


def _cumulative(bounds: tuple[float, ...], counts: list[float]) -> list[tuple[str, float]]:
    """Prometheus buckets (cumulative, ending at +Inf) from per-bucket counts."""
    buckets, total = [], 0.0
    for bound, count in zip((*bounds, math.inf), counts[:-1], strict=True):
        total += count
        buckets.append((floatToGoString(bound), total))
    return buckets


class ServiceMetrics:
    """Requests, latency, batch sizes, errors, reloads and the served model version."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counts = _RequestCounts()
        self.registry.register(self.counts)
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

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.counts.request(endpoint, str(status), seconds)

    def observe_predictions(
        self, endpoint: str, version: str, sizes: list[int], seconds: list[float]
    ) -> None:
        """Prediction requests recorded together (one event-loop pass): each one's batch size and latency."""
        self.counts.predictions_answered(endpoint, version, sizes, seconds)

    def observe_error(self, endpoint: str, status: int, kind: str) -> None:
        self.counts.error(endpoint, str(status), kind)

    def set_model(self, name: str, version: str, backend: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, backend).set(1)
        self.model_version.set(float(version) if version.isdigit() else 0)

    def track_caller(self, caller: Any) -> None:
        """Export ``caller.calls`` and ``caller.jobs`` (a ``serving.batcher.ModelCaller``)."""
        self.counts.caller = caller

    def track_store(self, writer: Any) -> None:
        """Export the store's queue, the rows it wrote and those it gave up on (a ``PredictionWriter``)."""
        self.store_pending.set_function(lambda: writer.pending)
        self.counts.writer = writer

    def render(self) -> bytes:
        return generate_latest(self.registry)
