"""Schedules: the plan's deployments on a real local Prefect server, read back through the Prefect client."""

from __future__ import annotations

from datetime import timedelta

import pytest

from config.plan import parse_plan
from config.settings import Settings
from tests.support import schema_plan

PLAN = schema_plan(
    "sched-project",
    "sched-model",
    monitoring={"schedule": {"monitor_every_minutes": 7, "retrain_cron": "30 2 * * 1"}},
)


@pytest.mark.integration
def test_deployments_exist_with_the_plans_schedules(tmp_path, monkeypatch):
    from prefect import get_client

    from pipeline.schedules import apply_deployments, prefect_api

    monkeypatch.setenv("LIFECYCLE_ROOT", str(tmp_path))
    monkeypatch.delenv("LIFECYCLE_PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    settings = Settings()
    plan = parse_plan(PLAN)

    with prefect_api(settings) as url:
        assert url.startswith("http://127.0.0.1:")
        ids = apply_deployments(plan, "plan.yaml")
        with get_client(sync_client=True) as client:
            monitor = client.read_deployment_by_name("monitor/monitor")
            retrain = client.read_deployment_by_name("retrain/retrain")

    assert len(ids) == 2
    assert [s.schedule.interval for s in monitor.schedules] == [timedelta(minutes=7)]
    assert [s.schedule.cron for s in retrain.schedules] == ["30 2 * * 1"]
    assert all(s.active for s in monitor.schedules + retrain.schedules)
    assert monitor.parameters == {"plan_path": "plan.yaml"}
    assert retrain.parameters["reason"] == "scheduled (30 2 * * 1)"
    assert (tmp_path / "var" / "prefect" / "server.log").is_file()  # the server's state lived under var/


def test_no_schedule_is_refused(tmp_path, monkeypatch):
    from pipeline.schedules import serve_schedules

    monkeypatch.setenv("LIFECYCLE_ROOT", str(tmp_path))
    plan = parse_plan({**PLAN, "monitoring": {"schedule": {"monitor_every_minutes": None}}})

    with pytest.raises(ValueError, match="expected monitor_every_minutes or retrain_cron"):
        serve_schedules(plan, Settings())
