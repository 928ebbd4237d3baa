"""The last step of a request: its predictions to the store (through the writer) and to the metrics.

The answers of one pass of the event loop are recorded together, at the start of the next pass: one store
entry and one metrics update for all of them (a lone client's answer is recorded after its response went
out). Side by side
(``serving.tuning`` has the figures) that was worth 1.16x the requests/s at concurrency 8 and 1.23x at 32,
over a record per request before its response.

Nothing that follows a response can miss its prediction: a request the loop reads after a response was sent
is handled in a later pass than the one that records it (asyncio runs callbacks in the order they were
scheduled), so by the time ``/v1/feedback`` looks a prediction up, it is in the writer's queue. ``close()``
records what is still pending. When the writer's queue is full (the store is falling behind), recording
waits for room, and the service with it: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging

from serving.metrics import ServiceMetrics
from serving.store.records import AnsweredRequest, encode_requests
from serving.store.writer import PredictionWriter

log = logging.getLogger("lifecycle.serving")


class Recorder:
    """Records answered predictions: ``record`` on the event loop, written one loop pass later."""

    def __init__(self, writer: PredictionWriter, metrics: ServiceMetrics):
        self.writer = writer
        self.metrics = metrics
        self._records: list[AnsweredRequest] = []
        self._requests: list[tuple[str, str, int, float]] = []  # endpoint, version, instances, seconds

    def record(
        self, record: AnsweredRequest, endpoints: list[str], sizes: list[int], seconds: list[float]
    ) -> None:
        """Record the requests ``record`` holds (their endpoints, instance counts and times, in order) with
        the others of this loop pass."""
        if not self._records:
            asyncio.get_running_loop().call_soon(self.record_pending)
        self._records.append(record)
        version = record.model_version
        self._requests += [
            (endpoint, version, size, spent)
            for endpoint, size, spent in zip(endpoints, sizes, seconds, strict=True)
        ]

    def record_pending(self) -> None:
        """Store everything recorded since the last call as one entry, and count it in one metrics update per
        endpoint and version."""
        records, self._records = self._records, []
        requests, self._requests = self._requests, []
        if not records:
            return
        try:
            self.writer.put(encode_requests(records))  # blocks while the queue is full: the service slows
        except Exception:  # noqa: BLE001 - a record the store refuses must not stop the service
            log.exception("%d predictions could not be recorded", sum(len(r.request_ids) for r in records))
        groups: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        for endpoint, version, size, spent in requests:
            sizes, seconds = groups.setdefault((endpoint, version), ([], []))
            sizes.append(size)
            seconds.append(spent)
        for (endpoint, version), (sizes, seconds) in groups.items():
            self.metrics.observe_predictions(endpoint, version, sizes, seconds)
