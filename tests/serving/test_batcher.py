"""The model thread's micro-batching: shared calls under load, each request on its own model, errors apart."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from data.dataset import DatasetMeta
from serving.batcher import ModelCaller
from serving.inputs import InputError
from serving.predictor import ServedModel

META = DatasetMeta("sklearn:digits", "image", "classification", ["0", "1"], [2])


def each(answer):
    """A finish answering its one job with ``answer(rows, outputs)`` (a new one per request: never shared)."""
    return lambda served, batch, outputs, sizes, contexts: [answer(batch, outputs)]


def ask_inline(caller: ModelCaller, served: ServedModel, value: float):
    """An inline request of one row of ``value``, answered with the model's outputs as a list."""
    batch = np.full((1, 2), value, dtype="float32")
    return caller.submit(served, lambda: batch, each(lambda b, out: out.tolist()), inline=True)


def model(version: str, calls: list, gate: threading.Event | None = None) -> ServedModel:
    def call(batch: np.ndarray) -> np.ndarray:
        if gate is not None:
            gate.wait(5)  # hold the model thread so requests pile up behind it
        calls.append((version, len(batch)))
        return batch * (1 if version == "1" else 10)

    return ServedModel("m", version, "run", None, "sha", META, {}, np.zeros((1, 2)), "test", call)


def test_waiting_requests_share_one_call_and_keep_their_model():
    calls: list = []
    gate = threading.Event()
    first, second = model("1", calls, gate), model("2", calls)

    async def scenario():
        caller = ModelCaller(max_rows=1024)

        def ask(served, value, rows=1):
            batch = np.full((rows, 2), value, dtype="float32")
            return caller.submit(served, lambda: batch, each(lambda b, out: (served.version, out.tolist())))

        blocker = asyncio.ensure_future(ask(first, 0))
        await asyncio.sleep(0.05)  # the model thread is now busy with the first request
        waiting = [asyncio.ensure_future(ask(first if i % 2 else second, i, rows=2)) for i in range(1, 7)]
        bad = asyncio.ensure_future(
            caller.submit(first, lambda: (_ for _ in ()).throw(InputError("nope")), each(lambda b, o: None))
        )
        await asyncio.sleep(0.05)
        gate.set()
        answers = await asyncio.gather(blocker, *waiting)
        try:
            await bad
            raise AssertionError("expected InputError")
        except InputError as error:
            assert str(error) == "nope"
        caller.close()
        return answers, caller

    answers, caller = asyncio.run(scenario())
    assert answers[0] == ("1", [[0.0, 0.0]])
    for i, (version, rows) in enumerate(answers[1:], start=1):
        scale = 1 if i % 2 else 10
        assert version == ("1" if i % 2 else "2")  # answered by the model the request started with
        assert rows == [[i * scale] * 2] * 2
    # the first call alone, then one call per model for the six that waited: 3 calls for 7 requests
    assert sorted(calls) == [("1", 1), ("1", 6), ("2", 6)]
    assert caller.calls == 3 and caller.jobs == 8


def test_max_rows_splits_a_pile_into_several_calls():
    calls: list = []
    gate = threading.Event()
    served = model("1", calls, gate)

    async def scenario():
        caller = ModelCaller(max_rows=4)
        rows = np.ones((3, 2), dtype="float32")
        first = asyncio.ensure_future(caller.submit(served, lambda: rows[:1], each(lambda b, o: len(o))))
        await asyncio.sleep(0.05)
        rest = [
            asyncio.ensure_future(caller.submit(served, lambda: rows, each(lambda b, o: len(o))))
            for _ in range(3)
        ]
        await asyncio.sleep(0.05)
        gate.set()
        result = await asyncio.gather(first, *rest)
        caller.close()
        return result

    assert asyncio.run(scenario()) == [1, 3, 3, 3]
    assert calls == [("1", 1), ("1", 3), ("1", 3), ("1", 3)]  # 3 + 3 > 4: no two share a call


def test_inline_requests_of_one_loop_pass_share_a_call_and_a_lone_client_is_not_held():
    calls: list = []
    first, second = model("1", calls), model("2", calls)

    async def scenario():
        caller = ModelCaller()

        def ask(served, value):
            return ask_inline(caller, served, value)

        # Five requests started in the same loop pass (as under load): one call per model, each its own rows.
        together = await asyncio.gather(*(ask(first if i < 3 else second, i) for i in range(5)))
        shared = list(calls)
        calls.clear()
        alone = [await ask(first, i) for i in range(40)]  # one client: after 8 lone gathers, answered at once
        caller.close()
        return together, shared, alone, caller

    together, shared, alone, caller = asyncio.run(scenario())
    assert together == [[[0.0, 0.0]], [[1.0, 1.0]], [[2.0, 2.0]], [[30.0, 30.0]], [[40.0, 40.0]]]
    assert sorted(shared) == [("1", 3), ("2", 2)]  # two calls for five requests
    assert alone == [[[float(i), float(i)]] for i in range(40)]
    assert calls == [("1", 1)] * 40 and caller.jobs == 45
    assert caller.gathers == 1 + 8 + 1  # the shared pass, 8 lone gathers, then one probe (the 32nd request)


def test_concurrent_clients_after_a_lone_one_share_calls_again():
    calls: list = []
    served = model("1", calls)

    async def scenario():
        caller = ModelCaller()

        def ask(value):
            return ask_inline(caller, served, value)

        for i in range(40):  # one client: lone mode, answered at once
            await ask(i)
        calls.clear()
        bursts = [await asyncio.gather(*(ask(i) for i in range(5))) for _ in range(10)]  # five clients
        caller.close()
        return bursts

    bursts = asyncio.run(scenario())
    assert all(burst == [[[float(i), float(i)]] for i in range(5)] for burst in bursts)
    # The 64th request gathers (a probe); the 65th starts while it waits and joins it: two clients, so the
    # lone mode ends and every later burst shares one call.
    assert calls[:23] == [("1", 1)] * 23 and calls[23] == ("1", 2)
    assert calls[24:] == [("1", 5)] * 5


def test_inline_request_whose_handler_runs_a_pass_later_joins_the_gather():
    calls: list = []
    served = model("1", calls)

    async def scenario():
        caller = ModelCaller()

        def ask(value):
            return ask_inline(caller, served, value)

        async def a_pass_later(value):  # as a request read while the first one's handler ran
            await asyncio.sleep(0)
            return await ask(value)

        answers = await asyncio.gather(ask(1), a_pass_later(2))
        caller.close()
        return answers

    assert asyncio.run(scenario()) == [[[1.0, 1.0]], [[2.0, 2.0]]]
    assert calls == [("1", 2)]  # one call for both


def test_inline_requests_gathered_in_one_pass_keep_to_max_rows():
    calls: list = []
    served = model("1", calls)

    async def scenario():
        caller = ModelCaller(max_rows=4)
        batch = np.ones((3, 2), dtype="float32")
        answers = await asyncio.gather(
            *(caller.submit(served, lambda: batch, each(lambda b, o: len(o)), inline=True) for _ in range(3))
        )
        caller.close()
        return answers

    assert asyncio.run(scenario()) == [3, 3, 3]
    assert calls == [("1", 3), ("1", 3), ("1", 3)]  # 3 + 3 > 4: gathered, yet no two share a call


def test_requests_with_the_same_finish_are_answered_by_one_call_of_it_and_a_failing_one_alone():
    calls: list = []
    served = model("1", calls)
    finishes: list = []

    def finish(answering, batch, outputs, sizes, contexts):
        finishes.append((answering.version, batch.shape[0], outputs.shape[0], sizes, contexts))
        if "bad" in contexts:
            raise ValueError("a bad request")
        return [f"{context}:{size}" for context, size in zip(contexts, sizes, strict=True)]

    async def scenario():
        caller = ModelCaller()

        def ask(context, rows):
            batch = np.ones((rows, 2), dtype="float32")
            return caller.submit(served, lambda: batch, finish, context, inline=True)

        good = await asyncio.gather(ask("a", 1), ask("b", 2), ask("c", 1))
        mixed = await asyncio.gather(ask("d", 1), ask("bad", 1), ask("e", 1), return_exceptions=True)
        caller.close()
        return good, mixed

    good, mixed = asyncio.run(scenario())
    assert good == ["a:1", "b:2", "c:1"]
    assert mixed[0] == "d:1" and isinstance(mixed[1], ValueError) and mixed[2] == "e:1"
    assert calls == [("1", 4), ("1", 3)]  # one model call per gather
    assert finishes == [
        ("1", 4, 4, [1, 2, 1], ["a", "b", "c"]),  # one finish for the three, rows one after another
        ("1", 3, 3, [1, 1, 1], ["d", "bad", "e"]),  # it failed: each alone, so only "bad" fails
        ("1", 1, 1, [1], ["d"]),
        ("1", 1, 1, [1], ["bad"]),
        ("1", 1, 1, [1], ["e"]),
    ]
