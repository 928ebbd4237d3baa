"""Alerts: only sending. Sinks from the plan's ``monitoring.alerts``: a JSON-lines file, the log, webhooks.

A webhook gets Slack-compatible JSON (``text`` and ``blocks``) with our structured alert under ``alert``.
It is retried with a short timeout; a sink that fails is logged and reported, never raised: an alert that
can't be delivered must not stop the monitor.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from config.plan import AlertSinkSection

log = logging.getLogger("lifecycle.monitoring.alerts")


@dataclass(frozen=True)
class Alert:
    """Everything an alert says: what drifted, how much, since when, which model, what was decided, where."""

    action: str  # the decision: warn, alert, label, retrain
    reason: str
    model_name: str
    model_version: str | None
    share: float  # share of monitoring features drifted
    drifted: dict[str, float]  # feature -> drift score
    drifting_since: str | None
    consecutive_windows: int
    window_size: int
    report: str | None  # where the report is
    labels_missing: bool = False
    labeling_queue: str | None = None
    performance: dict[str, float] | None = None
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def title(self) -> str:
        return f"[{self.action}] drift on {self.model_name} v{self.model_version or '-'}"

    def text(self) -> str:
        """A few readable lines (the console, Slack's fallback text)."""
        features = ", ".join(f"{name} ({score:.3g})" for name, score in self.drifted.items()) or "none"
        lines = [
            f"{self.title}: {self.share:.0%} of features drifted, {self.consecutive_windows} window(s) "
            f"in a row since {self.drifting_since or '-'}",
            f"drifted: {features}",
            f"decision: {self.action}: {self.reason}",
            f"report: {self.report or '-'}",
        ]
        if self.labels_missing:
            lines.append(f"labels missing: labeling queue at {self.labeling_queue or '-'}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack-compatible webhook JSON (``text``, ``blocks``) with the structured alert under ``alert``."""
    fields = [
        f"*Model*\n{alert.model_name} v{alert.model_version or '-'}",
        f"*Decision*\n{alert.action}",
        f"*Drifted share*\n{alert.share:.0%}",
        f"*Since*\n{alert.drifting_since or '-'} ({alert.consecutive_windows} windows)",
        f"*Window*\n{alert.window_size} predictions",
        f"*Report*\n{alert.report or '-'}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": alert.reason[:3000]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
    ]
    if alert.drifted:
        drifted = "\n".join(f"• {name}: {score:.3g}" for name, score in alert.drifted.items())
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Drifted features*\n{drifted}"}}
        )
    return {"text": alert.text(), "blocks": blocks, "alert": alert.to_dict()}


class Sink(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, alert: Alert) -> None: ...


@dataclass(frozen=True)
class FileSink:
    """Appends one JSON object per alert to a JSON-lines file."""

    path: Path

    @property
    def name(self) -> str:
        return f"file:{self.path}"

    def send(self, alert: Alert) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(alert.to_dict(), sort_keys=True) + "\n")


@dataclass(frozen=True)
class ConsoleSink:
    """Logs the alert's text at WARNING on the ``lifecycle`` logger."""

    name: str = "console"

    def send(self, alert: Alert) -> None:
        logging.getLogger("lifecycle").warning("%s", alert.text())


@dataclass(frozen=True)
class WebhookSink:
    """POSTs Slack-compatible JSON; retried with backoff on connection errors and 5xx/429 answers."""

    url: str
    timeout_seconds: float = 5.0
    retries: int = 3
    backoff_seconds: float = 0.5

    @property
    def name(self) -> str:
        return f"webhook:{self.url}"

    def send(self, alert: Alert) -> None:
        import httpx

        payload = slack_payload(alert)
        for attempt in range(self.retries + 1):
            try:
                response = httpx.post(self.url, json=payload, timeout=self.timeout_seconds)
                if response.status_code < 400:
                    return
                error: Exception = RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
                if response.status_code < 500 and response.status_code != 429:
                    raise error  # a client error won't change on retry
            except httpx.HTTPError as http_error:
                error = http_error
            if attempt < self.retries:
                time.sleep(self.backoff_seconds * 2**attempt)
        raise RuntimeError(f"gave up after {self.retries + 1} attempts: {error}")


@dataclass(frozen=True)
class Delivery:
    sink: str
    ok: bool
    error: str | None = None


def build_sinks(sections: list[AlertSinkSection], root: Path) -> list[Sink]:
    """The sinks the plan configures; relative file paths are taken from the project root."""
    sinks: list[Sink] = []
    for section in sections:
        if section.kind == "file":
            path = Path(section.path or "")
            sinks.append(FileSink(path if path.is_absolute() else root / path))
        elif section.kind == "console":
            sinks.append(ConsoleSink())
        else:
            sinks.append(WebhookSink(str(section.url), section.timeout_seconds, section.retries))
    return sinks


def send_alert(alert: Alert, sinks: list[Sink]) -> list[Delivery]:
    """Send an alert to every sink; a failing sink is logged and reported, never raised.

    Args:
        alert: what to say.
        sinks: where (``build_sinks``).

    Returns:
        One delivery per sink, in order.
    """
    deliveries = []
    for sink in sinks:
        try:
            sink.send(alert)
            deliveries.append(Delivery(sink.name, True))
        except Exception as error:  # any sink failure: log it and go on to the next sink
            log.error("alert not delivered to %s: %s", sink.name, error)
            deliveries.append(Delivery(sink.name, False, str(error)))
    return deliveries
