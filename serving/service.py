"""What one running service holds, and the work of a request done off the event loop.

A request reads ``predictor.current`` once and passes that model down: validation, the model call, the
response and the stored records all use the same version, even if a reload swaps in another meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from pipeline.settings import Settings
from serving.batcher import ModelCaller
from serving.inputs import InputError, check_range, decode_image, image_geometry
from serving.metrics import ServiceMetrics
from serving.predictor import Predictor, ServedModel, format_outputs
from serving.store import AnsweredRequest, PredictionStore

log = logging.getLogger("lifecycle.serving")

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
INLINE_MAX_INSTANCES = 16  # requests this small, on ONNX, skip the model thread (see predict_instances)


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


def new_request_ids(count: int) -> list[str]:
    """``count`` request ids of 32 hex digits: the time in ms (12), then 80 random bits (20), like a UUIDv7
    without the dashes.

    Time-ordered ids land at the end of the store's request_id index instead of at random places in it: with
    random ids (uuid4) every insert into a large store read index pages from disk, which cost the writer
    ~40 us a prediction at 80 MB of predictions (bench/serve.py). Unique as long as two requests in the same
    millisecond don't draw the same 80 random bits. The bits come from ``os.urandom``, drawn 4 KiB at a time
    (one getrandom syscall per 409 ids, not one per request).
    """
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    bits = _random_bits.draw(count)
    return [stamp + bits[at : at + 20] for at in range(0, 20 * count, 20)]


class _RandomHex:
    """80 random bits per id as 20 hex digits, sliced from a pool of ``os.urandom`` kept as hex text (a slice
    of text is all a draw costs), refilled when spent."""

    def __init__(self) -> None:
        self._pool = ""
        self._at = 0
        self._lock = threading.Lock()  # ids are drawn on the event loop and on the model thread

    def draw(self, count: int = 1) -> str:
        """20 hex digits per id, ``count`` ids' worth."""
        size = 20 * count
        with self._lock:
            at = self._at
            if at + size > len(self._pool):
                self._pool, at = os.urandom(max(4096, size)).hex(), 0
            self._at = at + size
            return self._pool[at : at + size]


_random_bits = _RandomHex()
if hasattr(os, "register_at_fork"):  # a forked child must not draw the parent's remaining bits
    os.register_at_fork(after_in_child=lambda: setattr(_random_bits, "_pool", ""))


class NotReadyError(RuntimeError):
    """No model loaded yet (start-up, or the registry has no version under the alias)."""


@dataclass
class Service:
    settings: Settings
    predictor: Predictor
    store: PredictionStore
    metrics: ServiceMetrics
    executor: ThreadPoolExecutor  # store reads (feedback)
    caller: ModelCaller = field(default_factory=ModelCaller)
    reload_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="reload")
    )

    def __post_init__(self) -> None:
        # One finish per endpoint, made once: requests submitted with the same one are answered together.
        self._finish_instances = functools.partial(self._answer, "/v1/predict")
        self._finish_images = functools.partial(self._answer, "/v1/predict/image")
        self._loop: asyncio.AbstractEventLoop | None = None  # the event loop, and the thread it runs on
        self._loop_thread = -1
        self._unrecorded: list[tuple[Any, ...]] = []  # answered on the loop, to record once sent (settle)

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

    # --- predictions: checked, called and answered on the model thread ---------------------------------

    async def predict_instances(self, instances: Any, model: ServedModel, started: float) -> bytes:
        """Validate JSON instances, predict, record; returns the response body.

        A few instances for an ONNX model run inline on the event loop (validation, a ~10 us call that
        releases the GIL, the answer): cheaper than the thread hops, unless the store's queue is filling up
        (then ``record_request`` may block, which must not happen on the loop).
        """
        if self._loop is None:
            self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        inline = (
            model.backend == "onnx"
            and isinstance(instances, list)
            and len(instances) <= INLINE_MAX_INSTANCES
            and self.store.pending < self.settings.store_queue_size // 2
        )
        return await self.caller.submit(
            model,
            lambda: self.predictor.validate(instances, model),
            self._finish_instances,
            started,
            inline=inline,
        )

    async def predict_images(self, files: list[bytes], model: ServedModel, started: float) -> bytes:
        """Decode uploaded images exactly as training did, then predict like ``predict_instances``."""
        return await self.caller.submit(
            model, lambda: self._decode_images(files, model), self._finish_images, started
        )

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

    def _answer(
        self,
        endpoint: str,
        model: ServedModel,
        batch: np.ndarray,
        outputs: np.ndarray,
        sizes: list[int],
        starts: list[float],
    ) -> list[bytes]:
        """The response bodies of the requests one model call answered (see
        ``serving.batcher.Finish``); their predictions go to the store as one entry, and to the metrics in
        one update."""
        request_ids = new_request_ids(len(sizes))
        if len(batch) == len(sizes):  # one instance per request, the common case
            ids = request_ids
        else:
            ids = []
            for request_id, size in zip(request_ids, sizes, strict=True):
                ids += [request_id] if size == 1 else [f"{request_id}-{i}" for i in range(size)]
        items, predicted, confidence = format_outputs(outputs, model.meta, ids)
        now = time.perf_counter()
        seconds = [now - started for started in starts]
        name, version = model.name, model.version
        answers: list[bytes] = []
        latency_ms: list[float] = []
        offset = 0
        for request_id, size, spent in zip(request_ids, sizes, seconds, strict=True):
            body = {
                "model_name": name,
                "model_version": version,
                "request_id": request_id,
                "predictions": items[offset : offset + size],
            }
            answers.append(orjson.dumps(body, option=_JSON_OPTIONS))
            latency_ms += [spent * 1000] * size
            offset += size
        answered = AnsweredRequest(ids, name, version, batch, predicted, confidence, latency_ms, time.time())
        record = (answered, endpoint, version, sizes, seconds)
        if threading.get_ident() != self._loop_thread:  # the model thread: record now, off the loop anyway
            self._record(record)
        else:  # the event loop: record once these responses are out (see settle)
            if not self._unrecorded:
                loop = self._loop
                assert loop is not None
                loop.call_soon(loop.call_soon, self.settle)  # behind the wake-ups of the answered requests
            self._unrecorded.append(record)
        return answers

    def settle(self) -> None:
        """Record (store and metrics) the predictions answered on the event loop, whose recording waited for
        their responses to be sent; on the event loop.

        Answers made on the loop are recorded two loop passes later, after the answered requests have
        resumed and written their responses: at concurrency 1 the recording then overlaps the client's turn
        instead of delaying the response (bench/serve.py). Whatever reads what was recorded (``feedback``,
        ``/metrics``, ``close``) settles first, so a prediction is never missing for a request that follows
        its response.
        """
        unrecorded, self._unrecorded = self._unrecorded, []
        for record in unrecorded:
            try:
                self._record(record)
            except Exception:  # noqa: BLE001 - one bad record must not cost the others
                log.exception("a prediction could not be recorded")

    def _record(self, record: tuple[Any, ...]) -> None:
        answered, endpoint, version, sizes, seconds = record
        self.store.record_request(answered)  # blocks while the store's queue is full: slows, never drops
        self.metrics.observe_predictions(endpoint, version, sizes, seconds)

    def feedback(self, request_id: str, label: int | float | str) -> float:
        """Check and store a true label for an answered prediction; returns the label as stored.

        Raises:
            InputError: unknown request id (404) or a label the model can't have (422).
        """
        self.store.flush()  # the prediction may still be queued
        found = self.store.find(request_id)
        if found is None:
            raise InputError(
                f"request_id {request_id!r}: no such prediction; expected the request_id of a prediction "
                "this service answered",
                status=404,
            )
        meta = self.predictor.current.meta if self.predictor.current else None
        value = _label_value(label, meta.classes if meta and meta.task == "classification" else None)
        self.store.record_feedback(request_id, value)
        return value

    def close(self) -> None:
        self.settle()
        self.reload_executor.shutdown(wait=True, cancel_futures=True)
        self.caller.close()
        self.executor.shutdown(wait=True)
        self.store.close()  # drains every queued record


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
