"""The closed loop on a temp git + DVC copy of the project: lifecycle -> champion -> `lifecycle serve`
(uvicorn) -> traffic over HTTP with feedback -> monitor flow -> alert -> retrain flow (feedback exported and
versioned by DVC, the lifecycle again, the gate) -> the running service answers with the champion the gate
left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import copy_project, project_plan

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def make_project(directory: Path) -> Path:
    def change(raw: dict[str, Any]) -> None:
        raw["data"].update(max_samples=600, min_samples_per_class=10, reference_size=150)
        raw["train"].update(epochs=15)
        raw["resources"] = {"accelerator": "cpu", "time_budget_minutes": 5}
        raw["success"]["min"] = {"accuracy": 0.6}
        raw["success"]["max"] = {"latency_p99_ms_batch1": 1000}
        raw["monitoring"] = {
            "window": 200, "min_samples": 100, "drift_share": 0.3, "alert_after_windows": 1,
            "retrain_after_windows": 2, "alerts": [{"kind": "file", "path": "var/alerts.jsonl"}],
            "retrain": {"enabled": True, "cooldown_hours": 6, "max_per_day": 2, "min_new_labels": 50},
        }  # fmt: skip

    return copy_project(directory, project_plan(change))


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """A project the lifecycle has run on (champion v1), under a real Prefect test server."""
    home = tmp_path_factory.mktemp("prefect-home")
    project = make_project(tmp_path_factory.mktemp("loop") / "project")
    saved = dict(os.environ)
    os.environ.update(PREFECT_HOME=str(home), PREFECT_LOGGING_LEVEL="WARNING", LIFECYCLE_ROOT=str(project))
    from prefect.testing.utilities import prefect_test_harness

    from config.settings import Settings
    from pipeline.flows import lifecycle

    Settings().apply_environment()
    with prefect_test_harness(server_startup_timeout=120):
        first = lifecycle("plan.yaml")
        yield project, first
    os.environ.clear()
    os.environ.update(saved)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def service(loop: tuple[Path, Any]) -> Iterator[Any]:
    import httpx

    project, _ = loop
    port = free_port()
    environment = {**os.environ, "LIFECYCLE_ROOT": str(project), "LIFECYCLE_POLL_SECONDS": "1"}
    log = (project / "serve.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "lifecycle"), "serve", "--port", str(port)],
        cwd=project, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, (project / "serve.log").read_text()[-3000:]
        try:
            if client.get("/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, (project / "serve.log").read_text()[-3000:]
        time.sleep(0.5)
    yield client
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    client.close()


def predict(client: Any, images: np.ndarray) -> tuple[str, list[str]]:
    ids, version = [], ""
    for start in range(0, len(images), 50):
        response = client.post("/v1/predict", json={"instances": images[start : start + 50].tolist()})
        assert response.status_code == 200, response.text
        body = response.json()
        version = body["model_version"]
        ids += [prediction["request_id"] for prediction in body["predictions"]]
    return version, ids


def test_drift_alerts_retrains_through_the_gate_and_the_service_follows(loop, service):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from sklearn.datasets import load_digits

    from pipeline.flows import monitor

    project, first = loop
    assert first.gate.passed, first.gate
    champion = first.gate.version
    digits = load_digits()
    order = np.random.default_rng(5).permutation(len(digits.target))
    images, labels = digits.images[order].astype("float32"), digits.target[order]

    version, _ = predict(service, images[:200])
    assert version == champion
    calm = monitor("plan.yaml").check
    assert calm.decision.action == "none", calm.decision

    rng = np.random.default_rng(1)
    shifted = np.clip(images[200:400] * 1.3 + 3 + rng.normal(0, 2, (200, 8, 8)), 0, 16).astype("float32")
    _, ids = predict(service, shifted)
    for request_id, label in zip(ids[:120], labels[200:320], strict=True):
        assert (
            service.post("/v1/feedback", json={"request_id": request_id, "label": int(label)}).status_code
            == 200
        )
    time.sleep(1)  # the store's writer drains its queue

    alerted = monitor("plan.yaml").check
    assert alerted.decision.action == "alert", alerted.decision
    alerts = [json.loads(line) for line in (project / "var/alerts.jsonl").read_text().splitlines()]
    assert alerts[-1]["model_version"] == champion and "intensity_mean" in alerts[-1]["drifted"]

    retrained = monitor("plan.yaml")
    assert retrained.check.decision.action == "retrain", retrained.check.decision
    result = retrained.retrain
    assert result is not None and result.feedback == project / "data/feedback/samples.npz"
    with np.load(project / "data/feedback/samples.npz") as exported:
        assert len(exported["labels"]) == 120 and exported["sample_ids"][0].startswith("feedback-")
    assert (project / "data/feedback.dvc").is_file()  # the feedback is a DVC-versioned data version
    gate = result.lifecycle.gate
    assert gate is not None and gate.passed and result.promoted
    with get_client(sync_client=True) as client:  # the retrain flow run is recorded in Prefect, as a subflow
        retrain_flow = client.read_flow_by_name("retrain")
        only_retrain = FlowFilter(id=FlowFilterId(any_=[retrain_flow.id]))
        runs = client.read_flow_runs(flow_filter=only_retrain, limit=20, sort=FlowRunSort.START_TIME_DESC)
    assert [run.state.type.value for run in runs] == ["COMPLETED"] and runs[0].parent_task_run_id is not None

    new_champion = gate.champion
    # collect re-ran on the new data/feedback: the retrain trained on it, and the gate promoted a new version.
    with np.load(project / "data/raw/samples.npz") as raw:
        assert sum(str(i).startswith("feedback-") for i in raw["sample_ids"]) == 120
    assert gate.version == new_champion != champion
    deadline = time.monotonic() + 30
    while (version := predict(service, images[:1])[0]) != new_champion and time.monotonic() < deadline:
        time.sleep(1)
    assert version == new_champion
