"""Model calls off the event loop, on one dedicated thread, with adaptive micro-batching.

Requests that arrive while the model thread is busy wait in a list; the thread takes all of them at once,
checks each, calls each model once for all their rows, and hands every answer back to the event loop in
one wake-up. At concurrency 1 nothing waits (no added latency); under load one thread hop and one model call
serve many requests. Measured in ``bench/serve.py``: a thread hop per request cost more than the ONNX call,
so a small ONNX job (``inline=True``) arriving while the thread is idle runs on the event loop itself.
Inline jobs are gathered and answered together, one model call per model: those started in the same
pass of the event loop (several clients' requests read at once), and those whose handlers run in the next
pass (requests the loop read meanwhile, queued behind the first). Measured at concurrency 8, gathering one
pass gave ~1.2x the requests/s of a call per request, and waiting the second pass ~1.1x more
(bench/serve.py's setup, two live services side by side: 7.8 requests a call instead of 4.0). A lone client
is not held back: after 8 gathers in a row that found one request, inline jobs run at once, with every 32nd
gathered again to notice concurrent clients returning (the requests that start while it waits join it, so
concurrent clients end the lone mode).

Each job carries the model its request started with, so a swap mid-batch answers every request on its own
model (a batch with two versions makes two calls).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.predictor import ServedModel

Finish = Callable[[ServedModel, np.ndarray, np.ndarray, list[int], list[Any]], list[Any]]
"""``finish(model, batch, outputs, sizes, contexts)``: the answers (responses, recorded) of a run of jobs that
one model call answered: ``batch`` and ``outputs`` hold their rows one job after another, ``sizes`` their
row counts and ``contexts`` what each job was submitted with. Returns one answer per job, in order. Jobs
submitted with the same (equal) finish are answered by one call of it: the per-request work that can be
shared (request ids, argmax, the store entry, the metrics) is done once for all of them."""


@dataclass(slots=True)
class Job:
    """One request: ``prepare`` turns its input into a checked batch (raising InputError when it can't);
    ``finish`` turns the outputs into the response (and records it), see ``Finish``."""

    model: ServedModel
    prepare: Callable[[], np.ndarray]
    finish: Finish
    future: asyncio.Future[Any]
    context: Any = None


_ALONE_AFTER = 8  # gathers in a row that found one request: stop gathering (one client, nothing to share)
_PROBE_EVERY = 32  # ...but gather every 32nd request, to notice concurrent clients coming back


class ModelCaller:
    """A dedicated model thread fed with jobs from the event loop.

    Args:
        max_rows: most instances per model call (requests beyond it wait for the next call).
        max_wait_ms: how long the thread waits for more requests before a call (0: take what is there).
    """

    def __init__(self, *, max_rows: int = 1024, max_wait_ms: float = 0.0):
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._lock = threading.Lock()
        self._pending: list[Job] = []
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the service's event loop, the one it runs on
        self._gathered: list[Any] | None = None  # inline jobs waiting to be answered together
        self._alone = 0
        self._seen = 0
        self.gathers = 0  # groups of inline jobs answered together
        self.calls = 0  # model calls made, for metrics and tests
        self.jobs = 0

    async def submit(
        self,
        model: ServedModel,
        prepare: Callable[[], np.ndarray],
        finish: Finish,
        context: Any = None,
        *,
        inline: bool = False,
    ) -> Any:
        """Run ``prepare`` and the model on the model thread, then ``finish``; returns this job's answer.

        Args:
            finish: see ``Finish``; ``context`` is this job's entry in its ``contexts``.
            inline: the caller vouches the whole job takes microseconds (ONNX Runtime, a few rows): when the
                model thread is idle, run it on the event loop instead of paying two thread hops (gathered
                with the other inline jobs of this loop pass and the next, see the module docstring).
        """
        loop = self._loop
        if loop is None:  # get_running_loop() costs a getpid() syscall a call on Python 3.11: once is enough
            loop = self._loop = asyncio.get_running_loop()
        if inline and not self._running and not self.max_wait:
            batch = prepare()
            self._seen += 1
            gathered = self._gathered
            if gathered is None and self._alone >= _ALONE_AFTER and self._seen % _PROBE_EVERY:
                outputs = model.outputs(batch)  # nobody to gather with lately: answer now
                self.calls += 1
                self.jobs += 1
                return finish(model, batch, outputs, [len(batch)], [context])[0]
            if gathered is None:
                gathered = self._gathered = []
                # Answered two passes on, not one: the handlers of the requests read by this pass's poll are
                # queued behind the first call_soon and join the gather before the second one answers.
                loop.call_soon(loop.call_soon, self._answer_gathered)
            job = Job(model, prepare, finish, loop.create_future(), context)
            gathered.append((job, batch))
            return await job.future
        job = Job(model, prepare, finish, loop.create_future(), context)
        with self._lock:
            self._pending.append(job)
            start = not self._running
            self._running = True
        if start:
            loop.run_in_executor(self._executor, self._drain, loop)
        return await job.future

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _answer_gathered(self) -> None:
        """Answer the gathered inline jobs, one model call per model (and per ``max_rows``), as the model
        thread answers what waited for it."""
        gathered, self._gathered = self._gathered or [], None
        self.jobs += len(gathered)
        self.gathers += 1
        self._alone = self._alone + 1 if len(gathered) == 1 else 0
        _resolve(self._call_by_model(gathered))

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            if self.max_wait:
                time.sleep(self.max_wait)
            with self._lock:
                taken, self._pending = self._pending, []
                if not taken:
                    self._running = False
                    return
            results = self._run(taken)
            loop.call_soon_threadsafe(_resolve, results)

    def _run(self, jobs: list[Job]) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        prepared: list[tuple[Job, np.ndarray]] = []
        for job in jobs:
            try:
                prepared.append((job, job.prepare()))
            except Exception as error:  # noqa: BLE001 - handed to the request that sent it
                results.append((job.future, None, error))
        results += self._call_by_model(prepared)
        self.jobs += len(jobs)
        return results

    def _call_by_model(
        self, prepared: list[tuple[Job, np.ndarray]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """Call each model once for its jobs' rows, in chunks of at most ``max_rows`` (at least one job)."""
        by_model: dict[int, list[tuple[Job, np.ndarray]]] = {}
        for item in prepared:
            by_model.setdefault(id(item[0].model), []).append(item)
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for group in by_model.values():
            start = 0
            while start < len(group):
                end, rows = start, 0
                while end < len(group) and (end == start or rows + len(group[end][1]) <= self.max_rows):
                    rows += len(group[end][1])
                    end += 1
                results += self._call(group[start:end])
                start = end
        return results

    def _call(
        self, chunk: list[tuple[Job, np.ndarray]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        model = chunk[0][0].model
        try:
            batch = chunk[0][1] if len(chunk) == 1 else np.concatenate([rows for _, rows in chunk])
            outputs = model.outputs(batch)
            self.calls += 1
        except Exception as error:  # noqa: BLE001
            return [(job.future, None, error) for job, _ in chunk]
        answered: list[tuple[Job, np.ndarray, np.ndarray]] = []
        offset = 0
        for job, rows in chunk:
            part = outputs[offset : offset + len(rows)]
            offset += len(rows)
            if not job.future.done():  # the client went away: nothing was answered, so nothing is recorded
                answered.append((job, rows, part))
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for _, run in itertools.groupby(answered, key=lambda item: item[0].finish):
            members = list(run)
            if len(members) == len(chunk):  # the common case: every job of the call, one finish
                results += _finish(model, members, batch, outputs)
            else:
                rows = np.concatenate([rows for _, rows, _ in members])
                results += _finish(model, members, rows, np.concatenate([part for *_, part in members]))
        return results


def _finish(
    model: ServedModel,
    members: list[tuple[Job, np.ndarray, np.ndarray]],
    batch: np.ndarray,
    outputs: np.ndarray,
) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
    """One call of the members' shared finish; if it fails, each member alone (one request's bad answer must
    not fail the others)."""
    finish = members[0][0].finish
    try:
        answers = finish(
            model,
            batch,
            outputs,
            [len(rows) for _, rows, _ in members],
            [job.context for job, _, _ in members],
        )
        return [(job.future, answer, None) for (job, _, _), answer in zip(members, answers, strict=True)]
    except Exception as error:  # noqa: BLE001 - handed to the request(s) it belongs to
        if len(members) == 1:
            return [(members[0][0].future, None, error)]
    return [result for member in members for result in _finish(model, [member], member[1], member[2])]


def _resolve(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.done():  # the client went away and the request was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
