"""What one running service holds, and the path of a prediction through it.

A request reads ``predictor.current`` once and passes that model down: validation, the model call, the
answer and its record all use the same version, even if a reload swaps in another meanwhile. The path, one
named call per step: ``predictor.validate`` -> ``caller.call`` (``serving.batcher``: one model call for the
requests arriving together) -> ``Service.answer`` (``serving.answers.answer_requests``: ids, items, bodies)
-> ``recorder.record`` (``serving.recorder``: the store and the metrics) -> the body the route sends.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from config.settings import Settings
from serving.answers import answer_requests
from serving.batcher import Job, ModelCaller
from serving.inputs import InputError, check_range, decode_image, image_geometry
from serving.metrics import ServiceMetrics
from serving.predictor import Predictor, ServedModel
from serving.recorder import Recorder
from serving.store.reader import PredictionReader
from serving.store.writer import PredictionWriter

log = logging.getLogger("lifecycle.serving")


@dataclass(frozen=True, slots=True)
class Request:
    """What the answer step needs of a prediction request besides its rows."""

    endpoint: str
    started: float  # time.perf_counter() when it arrived


class NotReadyError(RuntimeError):
    """No model loaded yet (start-up, or the registry has no version under the alias)."""


@dataclass
class Service:
    settings: Settings
    predictor: Predictor
    writer: PredictionWriter
    reader: PredictionReader
    metrics: ServiceMetrics
    executor: ThreadPoolExecutor  # store reads (feedback), image decoding
    max_rows: int = 1024  # deploy.batch_max_rows
    max_wait_ms: float = 0.0  # deploy.batch_wait_ms
    reload_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="reload")
    )

    def __post_init__(self) -> None:
        self.recorder = Recorder(self.writer, self.metrics)
        self.caller = ModelCaller(self.answer, max_rows=self.max_rows, max_wait_ms=self.max_wait_ms)

    def model(self) -> ServedModel:
        """The model answering now; raises NotReadyError before one is loaded."""
        current = self.predictor.current
        if current is None:
            raise NotReadyError(self.predictor.last_error or "the model is still loading")
        return current

    async def run(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` on the service's worker threads, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def reload(self) -> bool:
        """Check the registry now (on the reload thread); True when a new version was swapped in."""
        loop = asyncio.get_running_loop()
        changed = await loop.run_in_executor(self.reload_executor, self.predictor.refresh)
        current = self.predictor.current
        if changed and current is not None:
            await loop.run_in_executor(self.reload_executor, settle_heap)
            self.metrics.set_model(current.name, current.version, current.backend)
        self.metrics.reloads.labels(
            "swapped" if changed else "failed" if self.predictor.last_error else "unchanged"
        ).inc()
        return changed

    # --- predictions ---------------------------------------------------------------------------------------

    async def predict_instances(self, instances: Any, model: ServedModel, started: float) -> bytes:
        """Validate JSON instances, predict, record; returns the response body."""
        batch = self.predictor.validate(instances, model)
        return await self.caller.call(model, batch, Request("/v1/predict", started))

    async def predict_images(self, files: list[bytes], model: ServedModel, started: float) -> bytes:
        """Decode uploaded images exactly as training did (on a worker thread), then predict."""
        batch = await self.run(self._decode_images, files, model)
        return await self.caller.call(model, batch, Request("/v1/predict/image", started))

    def answer(
        self, model: ServedModel, jobs: list[Job], batch: np.ndarray, outputs: np.ndarray
    ) -> list[bytes]:
        """The answer step of one model call (``serving.batcher``): the response bodies of its requests, and
        their record (``serving.recorder``)."""
        now = time.perf_counter()
        sizes = [len(job.batch) for job in jobs]
        seconds = [now - job.request.started for job in jobs]
        answers = answer_requests(model.name, model.version, model.meta, batch, outputs, sizes, seconds)
        self.recorder.record(answers.record, [job.request.endpoint for job in jobs], sizes, seconds)
        return answers.bodies

    def _decode_images(self, files: list[bytes], model: ServedModel) -> np.ndarray:
        size, mode = image_geometry(model.meta)
        if not files:
            raise InputError("files: expected at least one image file, got none")
        if len(files) > self.predictor.max_batch_size:
            raise InputError(
                f"files: expected at most {self.predictor.max_batch_size} images per request, "
                f"got {len(files)}"
            )
        images = []
        for index, content in enumerate(files):
            try:
                images.append(decode_image(content, size, mode).reshape(model.meta.input_shape))
            except InputError as error:
                raise InputError(f"files[{index}]: {error}", error.status) from None
        batch = np.stack(images)
        check_range(batch, model.feature_range)
        return batch

    # --- feedback ------------------------------------------------------------------------------------------

    async def feedback(self, request_id: str, label: int | float | str) -> float:
        """Check and store a true label for an answered prediction; returns the label as stored.

        Raises:
            InputError: unknown request id (404) or a label the model can't have (422).
        """
        self.recorder.record_pending()  # what this service answered is on its way to the store
        return float(await self.run(self._store_feedback, request_id, label))

    def metrics_text(self) -> bytes:
        """The Prometheus text, counting every prediction answered so far."""
        self.recorder.record_pending()
        return self.metrics.render()

    def _store_feedback(self, request_id: str, label: int | float | str) -> float:
        if self.reader.find(request_id) is None:
            self.writer.flush()  # it may have been answered a moment ago: everything answered is in the store
        if self.reader.find(request_id) is None:
            raise InputError(
                f"request_id {request_id!r}: no such prediction; expected the request_id of a prediction "
                "this service answered",
                status=404,
            )
        meta = self.predictor.current.meta if self.predictor.current else None
        value = _label_value(label, meta.classes if meta and meta.task == "classification" else None)
        self.writer.record_feedback(request_id, value)
        return value

    def close(self) -> None:
        self.reload_executor.shutdown(wait=True, cancel_futures=True)
        self.caller.close()  # uvicorn has answered every request by now: no answer is on its way
        self.recorder.record_pending()
        self.executor.shutdown(wait=True)
        self.writer.close()  # writes every queued record
        self.reader.close()


def settle_heap() -> None:
    """Collect, then put every object alive now out of the garbage collector's sight (``gc.freeze``).

    The service holds TensorFlow and the model: some 400,000 long-lived objects that every full collection
    walked, about 0.3 s on these machines, which bench/serve.py saw as 300-400 ms p99 stalls. Frozen, they
    are never scanned again. After a swap the heap is unfrozen first, so the old model's cycles are freed
    (that one collection is the only pause a swap costs).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _label_value(label: int | float | str, classes: list[str] | None) -> float:
    if classes is None:
        if isinstance(label, str) or not math.isfinite(label):
            raise InputError(f"label: expected a finite number (regression target), got {label!r}")
        return float(label)
    if isinstance(label, str):
        if label not in classes:
            raise InputError(f"label: expected a class name in {classes} or a class id, got {label!r}")
        return float(classes.index(label))
    valid = not isinstance(label, bool) and math.isfinite(label) and float(label) == int(label)
    if not valid or not 0 <= int(label) < len(classes):
        raise InputError(f"label: expected a class id 0..{len(classes) - 1} or a class name, got {label!r}")
    return float(int(label))
