"""Scheduled monitoring and retraining: Prefect deployments from the plan, served against a real server.

Schedules need a real Prefect server (an ephemeral API never runs them). ``lifecycle schedule`` uses
``LIFECYCLE_PREFECT_API_URL`` when set; otherwise it starts ``prefect server start --host 127.0.0.1`` with its
state under ``var/prefect``, serves the deployments until stopped, and shuts the server down on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from config.plan import Plan
from config.settings import Settings
from pipeline.processes import stop_process

log = logging.getLogger("lifecycle")

MONITOR_DEPLOYMENT = "monitor"
RETRAIN_DEPLOYMENT = "retrain"
SERVER_START_SECONDS = 90.0


def build_deployments(plan: Plan, plan_path: str = "plan.yaml") -> list[Any]:
    """The deployments the plan's schedules ask for (call with a Prefect API configured).

    Args:
        plan: the plan (``monitoring.schedule``).
        plan_path: the plan path the flows are run with.

    Returns:
        ``monitor`` every ``monitor_every_minutes`` and ``retrain`` on ``retrain_cron``, those set.
    """
    from pipeline.flows import monitor, retrain

    schedule = plan.monitoring.schedule
    parameters = {"plan_path": plan_path}
    deployments = []
    if schedule.monitor_every_minutes:
        deployments.append(
            monitor.to_deployment(
                MONITOR_DEPLOYMENT,
                interval=timedelta(minutes=schedule.monitor_every_minutes),
                parameters=parameters,
                description=f"Drift check every {schedule.monitor_every_minutes} min ({plan.project.name})",
                tags=[plan.project.name, "monitoring"],
            )
        )
    if schedule.retrain_cron:
        deployments.append(
            retrain.to_deployment(
                RETRAIN_DEPLOYMENT,
                cron=schedule.retrain_cron,
                parameters={**parameters, "reason": f"scheduled ({schedule.retrain_cron})"},
                description=f"Scheduled retraining ({plan.project.name})",
                tags=[plan.project.name, "retraining"],
            )
        )
    return deployments


def apply_deployments(plan: Plan, plan_path: str = "plan.yaml") -> list[Any]:
    """Register the deployments with the configured Prefect API without serving them (for workers).

    Returns:
        The deployment ids.
    """
    return [deployment.apply() for deployment in build_deployments(plan, plan_path)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def local_server(settings: Settings, *, port: int | None = None) -> Iterator[str]:
    """A ``prefect server`` on 127.0.0.1 with its state under ``var/prefect``, for the ``with`` block.

    Args:
        settings: where ``var/`` is.
        port: the port (default: a free one).

    Yields:
        The server's API URL.

    Raises:
        RuntimeError: the server did not answer its health check in time (its log tail in the message).
    """
    import httpx

    port = port or free_port()
    home = settings.resolved_prefect_home
    home.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    environment.pop("PREFECT_API_URL", None)
    log_path = home / "server.log"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("w") as output:
        server = subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log_path.read_text().splitlines()[-20:])
                raise RuntimeError(f"prefect server on port {port} did not start; {log_path}:\n{tail}")
            time.sleep(0.5)
        log.info("prefect server at %s (state in %s)", url, home)
        yield url
    finally:
        stop_process(server)


@contextlib.contextmanager
def prefect_api(settings: Settings) -> Iterator[str]:
    """The Prefect API to schedule on: ``settings.prefect_api_url``, else a local server for the block."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with contextlib.ExitStack() as stack:
        url = settings.prefect_api_url or stack.enter_context(local_server(settings))
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        os.environ["PREFECT_API_URL"] = url  # flow-run subprocesses the runner starts read it
        yield url


def serve_schedules(plan: Plan, settings: Settings, plan_path: str = "plan.yaml") -> None:
    """Serve the plan's deployments until stopped (Ctrl-C), on a real Prefect server.

    Args:
        plan: the plan (its schedules).
        settings: the project (root, var/, optional Prefect API URL).
        plan_path: the plan path the flows are run with.
    """
    from prefect import serve

    deployments_wanted = plan.monitoring.schedule
    if not (deployments_wanted.monitor_every_minutes or deployments_wanted.retrain_cron):
        raise ValueError(
            "plan.yaml: monitoring.schedule: expected monitor_every_minutes or retrain_cron, got none"
        )
    os.environ["LIFECYCLE_ROOT"] = str(Path(settings.root))  # the flow runs find the project
    with prefect_api(settings) as url:
        log.info("serving scheduled deployments on %s; Ctrl-C stops", url)
        serve(*build_deployments(plan, plan_path), print_starting_message=True)


def next_runs(plan: Plan, *, last_check: datetime | None, now: datetime) -> dict[str, str | None]:
    """When the scheduled deployments run next, from the plan (the server's own queue may differ).

    Args:
        plan: the plan (``monitoring.schedule``).
        last_check: when the monitor last ran (None: never).
        now: the current time (aware).

    Returns:
        ``{"monitor": ISO time or None, "retrain": ISO time or None}``.
    """
    import asyncio

    schedule = plan.monitoring.schedule
    monitor_next = None
    if schedule.monitor_every_minutes:
        every = timedelta(minutes=schedule.monitor_every_minutes)
        monitor_next = max(now, last_check + every) if last_check else now
    retrain_next = None
    if schedule.retrain_cron:
        from prefect.server.schemas.schedules import CronSchedule

        dates = asyncio.run(
            CronSchedule(cron=schedule.retrain_cron, timezone="UTC").get_dates(n=1, start=now)
        )
        retrain_next = dates[0] if dates else None
    return {
        "monitor": monitor_next.isoformat(timespec="seconds") if monitor_next else None,
        "retrain": retrain_next.isoformat() if retrain_next else None,
    }


def monitoring_status(plan: Plan, settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """For ``lifecycle status``: the last drift check, the last alert, and the next scheduled runs.

    Returns:
        ``{"last_check": {...} | None, "last_alert": {...} | None, "next_runs": {"monitor", "retrain"},
        "consecutive_drifted": int}``.
    """
    from monitoring.state import load_state

    now = now or datetime.now(UTC)
    state = load_state(settings.layout.monitor_state)
    checked = (state.last_check or {}).get("time")
    last = datetime.fromisoformat(checked) if checked else None
    return {
        "last_check": state.last_check,
        "last_alert": state.last_alert,
        "consecutive_drifted": state.policy.consecutive_drifted,
        "next_runs": next_runs(plan, last_check=last, now=now),
    }
