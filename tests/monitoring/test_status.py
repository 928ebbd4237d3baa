"""`lifecycle status`'s monitoring part: last check, last alert, next scheduled runs from the plan."""

from __future__ import annotations

from datetime import UTC, datetime

from config.plan import parse_plan
from config.settings import Settings
from monitoring.policy import PolicyState
from monitoring.state import MonitorState, save_state
from pipeline.schedules import monitoring_status, next_runs
from tests.support import schema_plan

PLAN = schema_plan(
    "status-project",
    "status-model",
    monitoring={"schedule": {"monitor_every_minutes": 15, "retrain_cron": "0 3 * * 1"}},
)
NOW = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)  # a Monday


def test_next_runs_follow_the_plan():
    plan = parse_plan(PLAN)

    assert next_runs(plan, last_check=None, now=NOW) == {
        "monitor": "2026-11-23T13:00:00+00:00",
        "retrain": "2026-11-30T03:00:00+00:00",
    }
    assert next_runs(plan, last_check=datetime(2026, 11, 23, 12, 50, tzinfo=UTC), now=NOW)["monitor"] == (
        "2026-11-23T13:05:00+00:00"
    )
    unscheduled = parse_plan({**PLAN, "monitoring": {"schedule": {"monitor_every_minutes": None}}})
    assert next_runs(unscheduled, last_check=None, now=NOW) == {"monitor": None, "retrain": None}


def test_status_reads_the_state_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_ROOT", str(tmp_path))
    settings = Settings()
    check = {
        "time": "2026-11-23T12:55:00+00:00",
        "share": 0.6,
        "drifted": True,
        "decision": {"action": "alert"},
    }
    alert = {"action": "alert", "model_version": "3", "share": 0.6}
    save_state(
        settings.layout.monitor_state,
        MonitorState(policy=PolicyState(consecutive_drifted=2), last_check=check, last_alert=alert),
    )

    status = monitoring_status(parse_plan(PLAN), settings, now=NOW)

    assert status["last_check"] == check and status["last_alert"] == alert
    assert status["consecutive_drifted"] == 2
    assert status["next_runs"]["monitor"] == "2026-11-23T13:10:00+00:00"


def test_status_without_any_check(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_ROOT", str(tmp_path))

    status = monitoring_status(parse_plan(PLAN), Settings(), now=NOW)

    assert status["last_check"] is None and status["last_alert"] is None
