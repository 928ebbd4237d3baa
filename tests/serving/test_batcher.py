"""Micro-batching: requests that arrive together share one model call and one answer step; each request is
answered on its own model; a failing answer costs only its request; a lone client is not held back."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from data.dataset import DatasetMeta
from serving.batcher import ModelCaller
from serving.predictor import ServedModel
from serving.tuning import PROBE_EVERY

META = DatasetMeta("sklearn:digits", "image", "classification", ["0", "1"], [2])


def rows_back(answering, jobs, batch, outputs):
    """An answer step answering each job with (model version, its output rows as a list)."""
    answers, offset = [], 0
    for job in jobs:
        answers.append((answering.version, outputs[offset : offset + len(job.batch)].tolist()))
        offset += len(job.batch)
    return answers


def model(
    version: str, calls: list, gate: threading.Event | None = None, backend: str = "test"
) -> ServedModel:
    def call(batch: np.ndarray) -> np.ndarray:
        if gate is not None:
            gate.wait(5)  # hold the model thread so requests pile up behind it
        calls.append((version, len(batch)))
        return batch * (1 if version == "1" else 10)

    return ServedModel("m", version, "run", None, "sha", META, {}, np.zeros((1, 2)), backend, call)


def rows(value: float, count: int = 1) -> np.ndarray:
    return np.full((count, 2), value, dtype="float32")


def test_waiting_requests_share_one_call_and_keep_their_model():
    calls: list = []
    gate = threading.Event()
    first, second = model("1", calls, gate), model("2", calls)

    async def scenario():
        caller = ModelCaller(rows_back, max_rows=1024)
        blocker = asyncio.ensure_future(caller.call(first, rows(0), None))
        await asyncio.sleep(0.05)  # the model thread is now busy with the first request
        waiting = [
            asyncio.ensure_future(caller.call(first if i % 2 else second, rows(i, 2), None))
            for i in range(1, 7)
        ]
        await asyncio.sleep(0.05)
        gate.set()
        answers = await asyncio.gather(blocker, *waiting)
        caller.close()
        return answers, caller

    answers, caller = asyncio.run(scenario())
    assert answers[0] == ("1", [[0.0, 0.0]])
    for i, (version, answered) in enumerate(answers[1:], start=1):
        scale = 1 if i % 2 else 10
        assert version == ("1" if i % 2 else "2")  # answered by the model the request started with
        assert answered == [[i * scale] * 2] * 2
    # the first call alone, then one call per model for the six that waited: 3 calls for 7 requests
    assert sorted(calls) == [("1", 1), ("1", 6), ("2", 6)]
    assert caller.calls == 3 and caller.jobs == 7


def test_max_rows_splits_a_pile_into_several_calls():
    calls: list = []
    gate = threading.Event()
    served = model("1", calls, gate)

    async def scenario():
        caller = ModelCaller(rows_back, max_rows=4)
        first = asyncio.ensure_future(caller.call(served, rows(1), None))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(caller.call(served, rows(1, 3), None)) for _ in range(3)]
        await asyncio.sleep(0.05)
        gate.set()
        result = await asyncio.gather(first, *rest)
        caller.close()
        return [len(answered) for _, answered in result]

    assert asyncio.run(scenario()) == [1, 3, 3, 3]
    assert calls == [("1", 1), ("1", 3), ("1", 3), ("1", 3)]  # 3 + 3 > 4: no two share a call


def test_small_onnx_requests_of_one_loop_pass_share_a_call_and_a_lone_client_is_answered_alone():
    calls: list = []
    first, second = model("1", calls, backend="onnx"), model("2", calls, backend="onnx")

    async def scenario():
        caller = ModelCaller(rows_back)
        # Five requests started in the same loop pass (as under load): one call per model, each its own rows.
        together = await asyncio.gather(
            *(caller.call(first if i < 3 else second, rows(i), None) for i in range(5))
        )
        shared = list(calls)
        calls.clear()
        alone = [await caller.call(first, rows(i), None) for i in range(30)]  # one client
        passes = 0

        async def count_passes():
            nonlocal passes
            while True:
                await asyncio.sleep(0)
                passes += 1

        counter = asyncio.ensure_future(count_passes())
        await asyncio.sleep(0)
        before = passes
        alone += [await caller.call(first, rows(i), None) for i in range(30, 40)]
        waited = passes - before  # a lone client, answered at once: no loop pass waited for others
        counter.cancel()
        caller.close()
        return together, shared, alone, caller, waited

    together, shared, alone, caller, waited = asyncio.run(scenario())
    assert [answered for _, answered in together] == [
        [[0.0, 0.0]],
        [[1.0, 1.0]],
        [[2.0, 2.0]],
        [[30.0, 30.0]],
        [[40.0, 40.0]],
    ]
    assert sorted(shared) == [("1", 3), ("2", 2)]  # two calls for five requests
    assert [answered for _, answered in alone] == [[[float(i), float(i)]] for i in range(40)]
    assert calls == [("1", 1)] * 40 and caller.jobs == 45
    assert waited == 0


def test_concurrent_clients_after_a_lone_one_share_calls_again():
    calls: list = []
    served = model("1", calls, backend="onnx")
    bursts_needed = PROBE_EVERY // 5 + 5  # past the next probe, then five bursts to look at

    async def scenario():
        caller = ModelCaller(rows_back)
        for i in range(40):  # one client: answered alone
            await caller.call(served, rows(i), None)
        calls.clear()
        bursts = [
            await asyncio.gather(*(caller.call(served, rows(i), None) for i in range(5)))
            for _ in range(bursts_needed)
        ]
        caller.close()
        return bursts

    bursts = asyncio.run(scenario())
    assert all(
        [answered for _, answered in burst] == [[[float(i), float(i)]] for i in range(5)] for burst in bursts
    )
    # A probe gathers; the requests that start while it waits join it: concurrent clients, so the lone
    # answering ends and every later burst of five shares one call.
    assert calls[-5:] == [("1", 5)] * 5


def test_small_request_whose_handler_runs_a_pass_later_joins_the_gather():
    calls: list = []
    served = model("1", calls, backend="onnx")

    async def scenario():
        caller = ModelCaller(rows_back)

        async def a_pass_later(value):  # as a request read while the first one's handler ran
            await asyncio.sleep(0)
            return await caller.call(served, rows(value), None)

        answers = await asyncio.gather(caller.call(served, rows(1), None), a_pass_later(2))
        caller.close()
        return answers

    assert [answered for _, answered in asyncio.run(scenario())] == [[[1.0, 1.0]], [[2.0, 2.0]]]
    assert calls == [("1", 2)]  # one call for both


def test_small_requests_gathered_in_one_pass_keep_to_max_rows():
    calls: list = []
    served = model("1", calls, backend="onnx")

    async def scenario():
        caller = ModelCaller(rows_back, max_rows=4)
        answers = await asyncio.gather(*(caller.call(served, rows(1, 3), None) for _ in range(3)))
        caller.close()
        return [len(answered) for _, answered in answers]

    assert asyncio.run(scenario()) == [3, 3, 3]
    assert calls == [("1", 3), ("1", 3), ("1", 3)]  # 3 + 3 > 4: gathered, yet no two share a call


def test_one_answer_step_per_call_and_a_failing_answer_costs_only_its_request():
    calls: list = []
    served = model("1", calls, backend="onnx")
    steps: list = []

    def answer(answering, jobs, batch, outputs):
        steps.append((answering.version, batch.shape[0], outputs.shape[0], [job.request for job in jobs]))
        if any(job.request == "bad" for job in jobs):
            raise ValueError("a bad request")
        return [f"{job.request}:{len(job.batch)}" for job in jobs]

    async def scenario():
        caller = ModelCaller(answer)
        good = await asyncio.gather(
            caller.call(served, rows(1), "a"),
            caller.call(served, rows(1, 2), "b"),
            caller.call(served, rows(1), "c"),
        )
        mixed = await asyncio.gather(
            caller.call(served, rows(1), "d"),
            caller.call(served, rows(1), "bad"),
            caller.call(served, rows(1), "e"),
            return_exceptions=True,
        )
        caller.close()
        return good, mixed

    good, mixed = asyncio.run(scenario())
    assert good == ["a:1", "b:2", "c:1"]
    assert mixed[0] == "d:1" and isinstance(mixed[1], ValueError) and mixed[2] == "e:1"
    assert calls == [("1", 4), ("1", 3)]  # one model call per gather
    assert steps == [
        ("1", 4, 4, ["a", "b", "c"]),  # one answer step for the three, rows one after another
        ("1", 3, 3, ["d", "bad", "e"]),  # it failed: each alone, so only "bad" fails
        ("1", 1, 1, ["d"]),
        ("1", 1, 1, ["bad"]),
        ("1", 1, 1, ["e"]),
    ]


def test_a_failing_model_call_fails_the_requests_of_that_call():
    served = model("1", [], backend="onnx")
    broken = ServedModel(
        "m", "2", "run", None, "sha", META, {}, np.zeros((1, 2)), "onnx", lambda batch: 1 / 0
    )

    async def scenario():
        caller = ModelCaller(rows_back)
        answers = await asyncio.gather(
            caller.call(served, rows(1), None), caller.call(broken, rows(1), None), return_exceptions=True
        )
        caller.close()
        return answers

    good, bad = asyncio.run(scenario())
    assert good == ("1", [[1.0, 1.0]]) and isinstance(bad, ZeroDivisionError)
