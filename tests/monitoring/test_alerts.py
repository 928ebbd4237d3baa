"""Alert sinks: the JSON-lines file, the log, a real local webhook receiver, and a webhook that is down."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from config.plan import AlertSinkSection
from monitoring.alerts import (
    Alert,
    ConsoleSink,
    FileSink,
    WebhookSink,
    build_sinks,
    send_alert,
    slack_payload,
)

ALERT = Alert(
    action="alert",
    reason="60% of 10 features drifted (intensity_mean, intensity_std); 2 drifted window(s) in a row",
    model_name="digits-classifier",
    model_version="3",
    share=0.6,
    drifted={"intensity_mean": 1e-12, "intensity_std": 3e-5},
    drifting_since="2026-11-23T12:00:00+00:00",
    consecutive_windows=2,
    window_size=1000,
    report="var/reports/20261123T121500Z",
)


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread that records the JSON bodies it is sent."""

    def __init__(self, status: int = 200, fail_first: int = 0):
        self.bodies: list[dict] = []
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                receiver.calls += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                failing = receiver.calls <= fail_first
                if not failing:
                    receiver.bodies.append(body)
                self.send_response(503 if failing else status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def refused_url() -> str:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_file_sink_appends_one_json_line_per_alert(tmp_path):
    sink = FileSink(tmp_path / "var" / "alerts.jsonl")

    send_alert(ALERT, [sink])
    send_alert(ALERT, [sink])

    lines = (tmp_path / "var" / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 2
    written = json.loads(lines[0])
    assert written["action"] == "alert" and written["model_version"] == "3"
    assert written["drifted"] == {"intensity_mean": 1e-12, "intensity_std": 3e-5}
    assert written["drifting_since"] == "2026-11-23T12:00:00+00:00"
    assert written["report"] == "var/reports/20261123T121500Z"


def test_console_sink_logs_the_text(caplog):
    with caplog.at_level(logging.WARNING, logger="lifecycle"):
        send_alert(ALERT, [ConsoleSink()])

    assert "[alert] drift on digits-classifier v3: 60% of features drifted" in caplog.text
    assert "intensity_mean (1e-12)" in caplog.text


def test_webhook_receives_slack_compatible_json():
    with Receiver() as receiver:
        deliveries = send_alert(ALERT, [WebhookSink(receiver.url, timeout_seconds=2, retries=0)])

    assert deliveries[0].ok
    [body] = receiver.bodies
    assert body["text"].startswith("[alert] drift on digits-classifier v3")
    assert body["blocks"][0]["type"] == "header"
    assert body["alert"]["share"] == 0.6 and body["alert"]["window_size"] == 1000


def test_webhook_retries_a_server_error():
    with Receiver(fail_first=2) as receiver:
        deliveries = send_alert(ALERT, [WebhookSink(receiver.url, retries=3, backoff_seconds=0.01)])

    assert deliveries[0].ok and receiver.calls == 3 and len(receiver.bodies) == 1


def test_a_refused_webhook_is_reported_and_the_other_sinks_still_get_the_alert(tmp_path, caplog):
    url = refused_url()
    sinks = [
        WebhookSink(url, timeout_seconds=1, retries=2, backoff_seconds=0.01),
        FileSink(tmp_path / "a.jsonl"),
    ]

    with caplog.at_level(logging.ERROR, logger="lifecycle.monitoring.alerts"):
        deliveries = send_alert(ALERT, sinks)

    assert [d.ok for d in deliveries] == [False, True]
    assert "gave up after 3 attempts" in deliveries[0].error
    assert f"alert not delivered to webhook:{url}" in caplog.text
    assert (tmp_path / "a.jsonl").read_text().count("\n") == 1


def test_a_client_error_is_not_retried():
    with Receiver(status=404) as receiver:
        deliveries = send_alert(ALERT, [WebhookSink(receiver.url, retries=3, backoff_seconds=0.01)])

    assert not deliveries[0].ok and receiver.calls == 1 and "HTTP 404" in deliveries[0].error


def test_sinks_from_the_plan(tmp_path):
    sections = [
        AlertSinkSection(kind="file", path="var/alerts.jsonl"),
        AlertSinkSection(kind="console"),
        AlertSinkSection(kind="webhook", url="http://127.0.0.1:9/x", timeout_seconds=2, retries=1),
    ]

    sinks = build_sinks(sections, tmp_path)

    assert sinks[0] == FileSink(tmp_path / "var" / "alerts.jsonl")
    assert isinstance(sinks[1], ConsoleSink)
    assert (sinks[2].url, sinks[2].timeout_seconds, sinks[2].retries) == ("http://127.0.0.1:9/x", 2, 1)


def test_labels_missing_is_said():
    alert = Alert(**{**ALERT.to_dict(), "action": "label", "labels_missing": True, "labeling_queue": "var/q"})

    assert "labels missing: labeling queue at var/q" in alert.text()
    assert slack_payload(alert)["alert"]["labels_missing"] is True


@pytest.mark.parametrize("retries", [0, 1])
def test_webhook_gives_up_after_retries(retries):
    with pytest.raises(RuntimeError, match=f"gave up after {retries + 1} attempts"):
        WebhookSink(refused_url(), timeout_seconds=1, retries=retries, backoff_seconds=0.01).send(ALERT)
