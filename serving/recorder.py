"""The last step of a request: its predictions to the store (through the writer) and to the metrics.

The answers of one pass of the event loop are recorded together, two passes later (``RECORD_PASSES``): after
the answered requests' handlers resumed and sent their responses, so recording never delays a response. One
store entry and one metrics update serve all of them. Side by side that was worth 1.16x the requests/s at
concurrency 8 and 1.23x at 32, over a record per request before its response (``serving.tuning``).

What is recorded but not yet written is the recorder's to hand on: the service's own lookups of what it
answered (``Service.feedback``, the ``/metrics`` text) call ``record_pending()`` first, and so does
``close()``. Readers in other processes see a prediction once it is written, a few milliseconds after its
response. When the writer's queue is full (the store is falling behind), recording waits for room, and the
service with it: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging

from serving.loop import after_passes
from serving.metrics import ServiceMetrics
from serving.store.records import AnsweredRequest, encode_requests
from serving.store.writer import PredictionWriter
from serving.tuning import RECORD_PASSES

log = logging.getLogger("lifecycle.serving")


class Recorder:
    """Records answered predictions: ``record`` on the event loop, handed to the writer two passes later."""

    def __init__(self, writer: PredictionWriter, metrics: ServiceMetrics):
        self.writer = writer
        self.metrics = metrics
        self._records: list[AnsweredRequest] = []
        self._counts: dict[
            tuple[str, str], tuple[list[int], list[float]]
        ] = {}  # (endpoint, version): sizes, s

    def record(
        self, record: AnsweredRequest, endpoints: list[str], sizes: list[int], seconds: list[float]
    ) -> None:
        """Record the requests ``record`` holds (their endpoints, instance counts and times, in order) with
        the others of this loop pass."""
        if not self._records:
            after_passes(asyncio.get_running_loop(), RECORD_PASSES, self.record_pending)
        self._records.append(record)
        for endpoint, size, spent in zip(endpoints, sizes, seconds, strict=True):
            counted_sizes, counted_seconds = self._counts.setdefault(
                (endpoint, record.model_version), ([], [])
            )
            counted_sizes.append(size)
            counted_seconds.append(spent)

    def record_pending(self) -> None:
        """Store everything recorded since the last call as one entry, and count it in one metrics update per
        endpoint and version."""
        records, self._records = self._records, []
        counts, self._counts = self._counts, {}
        if not records:
            return
        try:
            self.writer.put(encode_requests(records))  # blocks while the queue is full: the service slows
        except Exception:  # noqa: BLE001 - a record the store refuses must not stop the service
            log.exception("%d predictions could not be recorded", sum(len(r.request_ids) for r in records))
        for (endpoint, version), (sizes, seconds) in counts.items():
            self.metrics.observe_predictions(endpoint, version, sizes, seconds)
