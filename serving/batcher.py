"""Micro-batching: requests that arrive together share one model call, and one answer step.

``ModelCaller.call(model, batch, request)`` returns the answer to one request. The requests one model call
answered are handed together to the service's answer step (the ``answer`` the caller was built with):
request ids, the per-instance items, the store entry and the metrics are done once for all of them. Where
the call runs:

- **On the event loop**, for a small batch on ONNX Runtime: its call takes microseconds and releases the GIL,
  cheaper than two thread hops. The requests whose handlers reach the caller while one such call waits to be
  made (in this pass of the event loop, and the next: ``GATHER_PASSES``) are answered by that one call; the
  handlers of requests the loop read in its last poll are queued behind the first pass. A lone client is not
  held back: after ``ALONE_AFTER`` gathers in a row that found one request, small requests are answered at
  once, except every ``PROBE_EVERY``-th, which gathers again (the requests that start while it waits join
  it, so concurrent clients end the lone answering). The figures behind these are in ``serving.tuning``.
- **On the model thread**, for everything else (the Keras fallback, large batches): requests that arrive while
  the thread is busy wait in a list, and its next call answers all of them. Their answer step runs back on
  the event loop.

Each request names the model it started with, so a swap mid-batch answers every request on its own model (a
batch with two versions makes two calls). Calls are at most ``max_rows`` rows.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.loop import after_passes
from serving.predictor import ServedModel
from serving.tuning import ALONE_AFTER, GATHER_PASSES, INLINE_MAX_INSTANCES, PROBE_EVERY


@dataclass(slots=True)
class Job:
    """One request: its rows, the model it started with, what the answer step needs of it, its answer."""

    model: ServedModel
    batch: np.ndarray
    request: Any
    future: asyncio.Future[Any]


Answer = Callable[[ServedModel, list[Job], np.ndarray, np.ndarray], list[Any]]
"""``answer(model, jobs, batch, outputs)``: the answers of ``jobs``, whose rows one model call answered
(``batch`` and ``outputs`` hold them one job after another), in order."""
_Called = tuple[list[Job], np.ndarray | None, np.ndarray | None, BaseException | None]


class ModelCaller:
    """Calls models for the service's requests, several at once when they arrive together.

    Args:
        answer: the service's answer step, called on the event loop once per model call.
        max_rows: most instances per model call (requests beyond it go to the next call).
        max_wait_ms: how long the model thread waits for more requests before a call (0: take what is there).
    """

    def __init__(self, answer: Answer, *, max_rows: int = 1024, max_wait_ms: float = 0.0):
        self.answer = answer
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._lock = threading.Lock()
        self._waiting: list[Job] = []  # for the model thread
        self._thread_busy = False
        self._gathered: list[Job] | None = None  # on the event loop, for the next gathered call
        self._lone_gathers = 0  # gathers in a row that found one request
        self._inline = 0  # small requests seen, for the probes
        self.calls = 0  # model calls made, for metrics
        self.jobs = 0  # requests those calls answered

    async def call(self, model: ServedModel, batch: np.ndarray, request: Any) -> Any:
        """The answer to one request: ``batch`` (its validated rows) through ``model`` and the answer step."""
        loop = asyncio.get_running_loop()
        job = Job(model, batch, request, loop.create_future())
        if model.backend == "onnx" and len(batch) <= INLINE_MAX_INSTANCES and not self.max_wait:
            self._inline += 1
            alone = self._lone_gathers >= ALONE_AFTER and self._inline % PROBE_EVERY
            if self._gathered is None and alone:  # nobody to share a call with lately: answer now
                self.jobs += 1
                self._answer_all([self._call([job])])
            else:
                self._gather(job, loop)
        else:
            self._wait_for_the_thread(job, loop)
        return await job.future

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _gather(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        if self._gathered is None:
            self._gathered = []
            after_passes(loop, GATHER_PASSES, self._call_gathered)
        self._gathered.append(job)

    def _call_gathered(self) -> None:
        jobs, self._gathered = self._gathered or [], None
        self._lone_gathers = self._lone_gathers + 1 if len(jobs) == 1 else 0
        self._answer_all(self._call_by_model(jobs))

    def _wait_for_the_thread(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._waiting.append(job)
            start = not self._thread_busy
            self._thread_busy = True
        if start:
            loop.run_in_executor(self._executor, self._drain, loop)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """The model thread: call the models for what waits, until nothing does; answered on the loop."""
        while True:
            if self.max_wait:
                time.sleep(self.max_wait)
            with self._lock:
                jobs, self._waiting = self._waiting, []
                if not jobs:
                    self._thread_busy = False
                    return
            loop.call_soon_threadsafe(self._answer_all, self._call_by_model(jobs))

    def _call_by_model(self, jobs: list[Job]) -> list[_Called]:
        """Call each model once for its jobs' rows, in chunks of at most ``max_rows`` (at least one job)."""
        by_model: dict[int, list[Job]] = {}
        for job in jobs:
            by_model.setdefault(id(job.model), []).append(job)
        called: list[_Called] = []
        for group in by_model.values():
            start = 0
            while start < len(group):
                end, rows = start, 0
                while end < len(group) and (end == start or rows + len(group[end].batch) <= self.max_rows):
                    rows += len(group[end].batch)
                    end += 1
                called.append(self._call(group[start:end]))
                start = end
        self.jobs += len(jobs)
        return called

    def _call(self, chunk: list[Job]) -> _Called:
        try:
            batch = chunk[0].batch if len(chunk) == 1 else np.concatenate([job.batch for job in chunk])
            outputs = chunk[0].model.outputs(batch)
        except Exception as error:  # noqa: BLE001 - handed to the requests of this call
            return chunk, None, None, error
        self.calls += 1
        return chunk, batch, outputs, None

    def _answer_all(self, called: list[_Called]) -> None:
        """On the event loop: the answer step of each model call, and every request's future resolved."""
        for jobs, batch, outputs, error in called:
            if error is not None or batch is None or outputs is None:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error or RuntimeError("the model call returned nothing"))
                continue
            live = [not job.future.done() for job in jobs]  # a client that went away is not answered
            if not all(live):
                keep = np.repeat(live, [len(job.batch) for job in jobs])
                jobs, batch, outputs = (
                    [job for job, alive in zip(jobs, live, strict=True) if alive],
                    batch[keep],
                    outputs[keep],
                )
            for job, answer in self._answers(jobs, batch, outputs):
                if isinstance(answer, BaseException):
                    job.future.set_exception(answer)
                else:
                    job.future.set_result(answer)

    def _answers(self, jobs: list[Job], batch: np.ndarray, outputs: np.ndarray) -> list[tuple[Job, Any]]:
        """``answer`` for the jobs together; if it fails, for each job alone (one bad answer must not fail
        the others)."""
        if not jobs:
            return []
        try:
            return list(zip(jobs, self.answer(jobs[0].model, jobs, batch, outputs), strict=True))
        except Exception as error:  # noqa: BLE001 - handed to the request(s) it belongs to
            if len(jobs) == 1:
                return [(jobs[0], error)]
        alone = []
        offset = 0
        for job in jobs:
            rows = slice(offset, offset + len(job.batch))
            alone += self._answers([job], batch[rows], outputs[rows])
            offset += len(job.batch)
        return alone
