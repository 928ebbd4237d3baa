"""The service as users run it: ``lifecycle serve`` (uvicorn) on a real MLflow registry, over loopback.

Hot swap under load (promote, reload, roll back: zero non-2xx, every response from the version it names),
and a SIGTERM in the middle of load (every answered prediction is in the store, no more, no fewer).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration
STARTUP_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, env, tmp: Path):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store_url = f"sqlite:///{tmp / 'predictions.db'}"
        environment = {
            **os.environ,
            **env.environment,
            "LIFECYCLE_STORE_URL": self.store_url,
            "LIFECYCLE_POLL_SECONDS": "3600",  # the test moves the alias and forces the check
        }
        self.log_path = tmp / "server.log"
        self.log = self.log_path.open("w")
        lifecycle = Path(sys.executable).parent / "lifecycle"
        self.process = subprocess.Popen(
            [str(lifecycle), "serve", "--port", str(self.port), "--log-level", "info"],
            cwd=env.root,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.answered: list[str] = []  # request ids of every 2xx prediction this server sent
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (tmp / "server.log").read_text()[-3000:]
            try:
                if self.http.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"not ready in {STARTUP_SECONDS} s: {(tmp / 'server.log').read_text()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.http.close()
        self.log.close()
        return code


class Load:
    """``threads`` clients each sending one request after another until stopped; keeps every answer."""

    def __init__(self, server: LiveServer, instance: list, threads: int = 4):
        self.server, self.url, self.body = server, server.url, {"instances": [instance]}
        self.answers: list[tuple[int, str | None, dict | None]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/v1/predict", json=self.body)
                except httpx.TransportError as error:  # the server went away (SIGTERM): nothing answered
                    with self._lock:
                        self.failures.append(type(error).__name__)
                    if self._stop.wait(0.05):
                        return
                    continue
                body = response.json() if response.status_code == 200 else None
                with self._lock:
                    self.answers.append((response.status_code, response.headers.get("X-Model-Version"), body))
                    if body is not None:
                        self.server.answered.append(body["request_id"])

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait_for(self, more: int, timeout: float = 60) -> None:
        target = self.count() + more
        deadline = time.monotonic() + timeout
        while self.count() < target:
            assert time.monotonic() < deadline, f"load stalled at {self.count()} answers"
            time.sleep(0.02)


def expected_probabilities(env, instance: list) -> dict[str, np.ndarray]:
    """What each registered version answers for ``instance``, computed offline from the registry's files."""
    import keras

    from models.registry import resolve_model

    answers = {}
    for version in env.versions:
        resolved = resolve_model(env.client, env.name, version=version)
        model = keras.saving.load_model(resolved.model_path, safe_mode=True, compile=False)
        answers[version] = keras.ops.convert_to_numpy(model(np.asarray([instance], dtype="float32")))[0]
    return answers


@pytest.fixture(scope="module")
def live(registry_env, tmp_path_factory):
    server = LiveServer(registry_env, tmp_path_factory.mktemp("live"))
    yield server
    server.stop()


def test_hot_swap_and_rollback_under_load(live, registry_env):
    from models.registry import promote, rollback

    client = registry_env.client
    first, second = registry_env.versions
    instance = np.full((8, 8), 7.0).tolist()  # between the classes: the two versions answer differently
    expected = expected_probabilities(registry_env, instance)
    assert np.abs(expected[first] - expected[second]).max() > 1e-3  # so answers tell the versions apart
    with Load(live, instance) as load:
        load.wait_for(50)
        promote(client, registry_env.name, second, None, reason="hot swap test", force=True)
        reloaded = live.http.post("/v1/admin/reload").json()
        assert reloaded["changed"] is True and reloaded["model_version"] == second, reloaded
        load.wait_for(50)
        rollback(client, registry_env.name, reason="hot swap test: roll back")
        assert live.http.post("/v1/admin/reload").json()["model_version"] == first
        load.wait_for(50)
    statuses = [status for status, _, _ in load.answers]
    assert statuses and set(statuses) == {200}, f"non-2xx answers: {sorted(set(statuses))}"
    assert not load.failures
    versions = [header for _, header, _ in load.answers]
    assert {first, second} <= set(versions)
    for _, header, body in load.answers:
        assert body["model_version"] == header
        # the version named is the version that answered: its probabilities are that model's
        np.testing.assert_allclose(body["predictions"][0]["probabilities"], expected[header], atol=1e-5)
    # in order: v1 answers, then v2, then v1 again (the swap is one switch, not a flicker)
    changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert changes[0] == first and second in changes and changes[-1] == first
    assert len(changes) <= 3 + 2 * 3  # four threads may interleave around each swap, no more


def test_sigterm_mid_load_loses_no_answered_prediction(live, registry_env):
    from serving.store.reader import PredictionReader

    with Load(live, registry_env.test.features[1].tolist(), threads=6) as load:
        load.wait_for(100)
        live.process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: exit by SIGTERM is expected
        assert live.process.wait(timeout=60) in (0, -signal.SIGTERM)
    log = live.log_path.read_text()
    assert "Application shutdown complete." in log and "Finished server process" in log
    answered = [answer for answer in load.answers if answer[0] == 200]
    assert len(answered) == len(load.answers)  # the ones not answered failed to connect, none got an error
    with PredictionReader(live.store_url) as store:
        stored = list(store.window(1_000_000)["request_id"])
        assert store.count() == len(live.answered)  # every 2xx answer of this server, from both tests
        assert sorted(stored) == sorted(live.answered)
