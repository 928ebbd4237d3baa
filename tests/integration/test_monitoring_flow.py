"""The monitor flow end to end under real Prefect: a registered champion (real MLflow), its reference, a real
prediction store, real Evidently; alerts to a JSON-lines file, a local webhook receiver and a webhook that
refuses connections. In-distribution traffic: no alert. Brighter/noisier digits: an alert, once; with too
few feedback labels to retrain: a labeling queue and an alert saying labels are missing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from data.dataset import Dataset, DatasetMeta
from models.client import tracking_client

pytestmark = pytest.mark.integration

META = DatasetMeta(
    source="sklearn:digits", kind="image", task="classification", classes=[str(i) for i in range(10)],
    input_shape=[8, 8],
)  # fmt: skip


class Receiver:
    """A webhook receiver on 127.0.0.1 (http.server in a thread) that keeps the JSON bodies it gets."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def refused_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/down"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(images))
    return images[order].reshape(-1, 8, 8).astype("float32"), labels[order].astype("int64")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver, prefect: None):
    """A project root: plan, reference sample, a champion v1 in a private MLflow store."""
    import keras

    from config.plan import parse_plan
    from config.settings import Settings
    from models.client import artifact_location
    from models.registry import promote
    from models.tracking import log_training_run
    from models.train import TrainResult

    root = tmp_path_factory.mktemp("monitored")
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "plan.yaml").read_text())
    raw["project"]["name"] = "monitor-test"
    raw["deploy"]["model_name"] = "monitor-model"
    raw["monitoring"] = {
        "window": 300, "min_samples": 100, "drift_share": 0.3, "alert_after_windows": 1,
        "retrain_after_windows": 2, "embedding_components": 3,
        "alerts": [
            {"kind": "file", "path": "var/alerts.jsonl"},
            {"kind": "webhook", "url": receiver.url, "timeout_seconds": 2, "retries": 0},
            {"kind": "webhook", "url": refused_url(), "timeout_seconds": 1, "retries": 1},
        ],
        "retrain": {"enabled": True, "cooldown_hours": 6, "max_per_day": 2, "min_new_labels": 500},
    }  # fmt: skip
    (root / "plan.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    images, labels = digits()
    saved = {name: os.environ.get(name) for name in ("LIFECYCLE_ROOT",)}
    os.environ["LIFECYCLE_ROOT"] = str(root)
    settings = Settings()
    Dataset(images[:500], labels[:500], np.array([f"d{i}" for i in range(500)]), META).save(
        settings.layout.prepared_dir, "reference"
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Rescaling(1 / 16),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images[:1200], labels[:1200], epochs=4, batch_size=64, verbose=0)
    plan = parse_plan(raw)
    client = tracking_client(settings)
    trained = log_training_run(
        client, plan, TrainResult(model, {}, 4, "epochs", 0.0, "cpu"), META, plan_path=root / "plan.yaml",
        root=root, input_example=images[:2], artifact_location=artifact_location(settings),
    )  # fmt: skip
    promote(client, "monitor-model", trained.version, None, reason="test champion", force=True)
    yield settings, model, images, labels
    for name, value in saved.items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def send_traffic(settings, model, images: np.ndarray, labels: np.ndarray | None, tag: str) -> None:
    """What the service does per prediction: record it in the store (and later, feedback labels)."""
    from serving.store.records import PredictionRecord
    from serving.store.writer import PredictionWriter

    probabilities = np.asarray(model(images, training=False))
    writer = PredictionWriter(settings.resolved_store_url)
    writer.record_predictions(
        [
            PredictionRecord(
                f"{tag}-{i}", "1", x, int(p.argmax()), float(p.max()), model_name="monitor-model"
            )
            for i, (x, p) in enumerate(zip(images, probabilities, strict=True))
        ]
    )
    if labels is not None:
        for i, label in enumerate(labels):
            writer.record_feedback(f"{tag}-{i}", int(label))
    writer.close()


def alert_lines(settings) -> list[dict]:
    path = settings.var_dir / "alerts.jsonl"  # the plan's file sink
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_monitor_flow_alerts_once_on_drift_and_asks_for_labels(project, receiver):
    from pipeline.flows import monitor

    settings, model, images, labels = project

    send_traffic(settings, model, images[1200:1500], None, "calm")
    calm = monitor("plan.yaml").to_dict()

    assert calm["decision"]["action"] == "none", calm["decision"]
    assert calm["model_version"] == "1" and calm["drift"]["window_size"] == 300
    assert calm["alerts"] == [] and alert_lines(settings) == [] and receiver.bodies == []

    rng = np.random.default_rng(1)
    shifted = np.clip(images[1497:] * 1.3 + 3 + rng.normal(0, 2, (300, 8, 8)), 0, 16).astype("float32")
    send_traffic(settings, model, shifted, labels[1497:1597], "shift")  # feedback for the first 100
    first = monitor("plan.yaml").to_dict()

    assert first["decision"]["action"] == "alert", first["decision"]
    assert first["drift"]["drifted"] and first["drift"]["labeled"] == 100
    assert [a["ok"] for a in first["alerts"]] == [
        True,
        True,
        False,
    ]  # the refused webhook: reported, not raised
    [written] = alert_lines(settings)
    assert written["model_version"] == "1" and written["action"] == "alert"
    assert "intensity_mean" in written["drifted"] and written["share"] >= 0.3
    assert written["report"] == first["report"] and Path(first["report"], "drift.html").is_file()
    assert written["performance"]["accuracy"] < 1
    [posted] = receiver.bodies
    assert posted["alert"] == written and posted["text"].startswith("[alert] drift on monitor-model v1")

    second = monitor(
        "plan.yaml"
    ).to_dict()  # still drifting: retraining due, but 100 labels < min_new_labels 500

    assert second["decision"]["action"] == "label"
    assert "only 100 new feedback labels" in second["decision"]["reason"]
    queue = Path(second["labeling_queue"])
    rows = (queue / "queue.csv").read_text().splitlines()
    assert rows[0].startswith("sample_id,") and len(rows) == 1 + 200  # the 200 unlabeled rows of the window
    assert all(row.startswith("shift-") for row in rows[1:])
    assert len(json.loads((queue / "labelstudio_tasks.json").read_text())) == 200
    assert alert_lines(settings)[-1]["labels_missing"] is True
    assert alert_lines(settings)[-1]["labeling_queue"] == str(queue)

    third = monitor("plan.yaml").to_dict()  # the same drift and the same decision: not alerted again

    assert third["decision"]["action"] == "label" and third["alerts"] == []
    assert len(alert_lines(settings)) == 2 and len(receiver.bodies) == 2
    state = json.loads(settings.layout.monitor_state.read_text())
    assert state["policy"]["consecutive_drifted"] == 3 and state["last_alert"]["action"] == "label"
    client = tracking_client(settings)
    runs = client.search_runs([client.get_experiment_by_name("monitoring").experiment_id])
    assert len(runs) == 4 and {run.data.tags["decision"] for run in runs} == {"none", "alert", "label"}


def test_monitor_command_prints_the_check_as_json(project):
    from typer.testing import CliRunner

    from pipeline.cli import app

    settings, *_ = project

    result = CliRunner().invoke(app, ["monitor", "--json", "--plan", str(settings.root / "plan.yaml")])

    assert result.exit_code == 0, result.output
    checked = json.loads(result.stdout[result.stdout.index("{") :])
    assert checked["model_version"] == "1" and checked["decision"]["action"] in {
        "label",
        "none",
        "alert",
        "not_enough_data",
    }
    assert Path(checked["report"], "summary.json").is_file()

    status = CliRunner().invoke(app, ["status", "--json", "--plan", str(settings.root / "plan.yaml")])
    assert status.exit_code == 0, status.output
    monitoring = json.loads(status.stdout[status.stdout.index("{") :])["monitoring"]
    assert monitoring["last_check"]["report"] == checked["report"]
    assert monitoring["next_runs"]["monitor"] is not None


def test_monitor_command_without_a_champion_exits_2(tmp_path, monkeypatch, prefect):
    from typer.testing import CliRunner

    from pipeline.cli import app

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "plan.yaml").read_text())
    raw["deploy"]["model_name"] = "nobody-registered-this"
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("LIFECYCLE_ROOT", str(tmp_path))

    result = CliRunner().invoke(app, ["monitor", "--plan", str(tmp_path / "plan.yaml")])

    assert result.exit_code == 2, result.output
    assert "monitor:" in result.output and "nobody-registered-this" in result.output
