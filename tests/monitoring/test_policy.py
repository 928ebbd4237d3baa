"""The drift policy, rule by rule: minimum samples, streaks, cooldown, daily cap, label minimum, dedupe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from config.plan import MonitoringSection, RetrainSection
from monitoring.drift import DriftResult, FeatureDrift
from monitoring.policy import Action, PolicyState, decide, for_champion

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
POLICY = MonitoringSection(
    window=1000,
    min_samples=100,
    drift_share=0.3,
    alert_after_windows=2,
    retrain_after_windows=3,
    retrain=RetrainSection(enabled=True, cooldown_hours=6, max_per_day=2, min_new_labels=50),
)


def result(share: float, *, size: int = 500) -> DriftResult:
    """A check on 10 features, ``share`` of them drifted."""
    drifted = round(share * 10)
    features = tuple(
        FeatureDrift(f"f{i}", 0.01 if i < drifted else 0.5, "K-S p_value", 0.05, i < drifted)
        for i in range(10)
    )
    return DriftResult(
        window_size=size,
        reference_size=500,
        min_samples=POLICY.min_samples,
        enough_data=size >= POLICY.min_samples,
        share=share if size >= POLICY.min_samples else 0.0,
        threshold_share=POLICY.drift_share,
        features=features,
    )


def streak(n: int, **changes) -> PolicyState:
    since = NOW - timedelta(minutes=15 * n) if n else None
    return PolicyState(consecutive_drifted=n, drifting_since=since, model_version="1", **changes)


@pytest.mark.parametrize(
    ("check", "state", "labels", "action", "reason_part"),
    [
        # minimum samples: a tiny window is not judged, whatever it looks like
        (
            result(0.9, size=99),
            streak(2),
            500,
            Action.NOT_ENOUGH_DATA,
            "fewer than monitoring.min_samples (100)",
        ),
        (result(0.0, size=100), streak(0), 500, Action.NONE, "under monitoring.drift_share"),
        # the drifted share: under it is no drift, at it is drift
        (result(0.2), streak(0), 500, Action.NONE, "20% of 10 features drifted"),
        (result(0.3), streak(0), 500, Action.WARN, "an alert needs monitoring.alert_after_windows (2)"),
        # consecutive windows: one is a warning, two an alert, three retraining
        (result(0.5), streak(1), 500, Action.ALERT, "retraining needs monitoring.retrain_after_windows (3)"),
        (result(0.5), streak(2), 500, Action.RETRAIN, "retraining on 500 new feedback labels"),
        (result(0.5), streak(7), 500, Action.RETRAIN, "8 drifted window(s) in a row"),
        # label minimum
        (
            result(0.5),
            streak(2),
            49,
            Action.LABEL,
            "only 49 new feedback labels (monitoring.retrain.min_new_labels 50)",
        ),
        (result(0.5), streak(2), 50, Action.RETRAIN, "retraining on 50"),
        # cooldown: the last retrain 5 h ago (cooldown 6 h) holds it back; 7 h ago doesn't
        (result(0.5), streak(2, retrains=(NOW - timedelta(hours=5),)), 500, Action.ALERT, "in cooldown"),
        (result(0.5), streak(2, retrains=(NOW - timedelta(hours=7),)), 500, Action.RETRAIN, "retraining on"),
        # daily cap: two retrains in the last 24 h (out of cooldown) hold it back; one older than 24 h not
        (
            result(0.5),
            streak(2, retrains=(NOW - timedelta(hours=20), NOW - timedelta(hours=10))),
            500,
            Action.ALERT,
            "2 retrain(s) started in the last 24 h (monitoring.retrain.max_per_day 2)",
        ),
        (
            result(0.5),
            streak(2, retrains=(NOW - timedelta(hours=30), NOW - timedelta(hours=10))),
            500,
            Action.RETRAIN,
            "retraining on",
        ),
    ],
)
def test_rules(check, state, labels, action, reason_part):
    decision = decide(check, state, POLICY, NOW, labels)

    assert decision.action is action
    assert reason_part in decision.reason


def test_retraining_disabled_stays_an_alert():
    policy = POLICY.model_copy(update={"retrain": RetrainSection(enabled=False)})

    decision = decide(result(0.5), streak(5), policy, NOW, 1000)

    assert decision.action is Action.ALERT
    assert "monitoring.retrain.enabled is false" in decision.reason


def test_no_retraining_with_max_per_day_zero():
    policy = POLICY.model_copy(update={"retrain": RetrainSection(max_per_day=0, min_new_labels=0)})

    assert decide(result(0.5), streak(5), policy, NOW, 1000).action is Action.ALERT


def test_streak_counts_and_ends():
    state = PolicyState(model_version="1")
    actions = []
    for share in (0.5, 0.5, 0.0, 0.5):
        decision = decide(result(share), state, POLICY, NOW, 0)
        actions.append(decision.action)
        state = decision.state

    assert actions == [Action.WARN, Action.ALERT, Action.NONE, Action.WARN]
    assert state.consecutive_drifted == 1


def test_not_enough_data_keeps_the_streak():
    before = streak(2)

    decision = decide(result(0.9, size=10), before, POLICY, NOW, 0)

    assert decision.state == before
    assert not decision.notify


def test_since_is_the_first_drifted_window():
    first = decide(result(0.5), PolicyState(), POLICY, NOW, 0)
    second = decide(result(0.5), first.state, POLICY, NOW + timedelta(minutes=15), 0)

    assert second.state.drifting_since == NOW
    assert "since 2026-11-23T12:00:00+00:00" in second.reason


def test_the_same_drift_is_alerted_once_and_escalations_again():
    state = PolicyState(model_version="1")
    notified = []
    for labels in (0, 0, 0, 0, 100, 100):  # warn, alert, label, label, retrain, (cooldown) alert
        decision = decide(result(0.5), state, POLICY, NOW, labels)
        notified.append((decision.action, decision.notify))
        state = decision.state

    assert notified == [
        (Action.WARN, False),
        (Action.ALERT, True),
        (Action.LABEL, True),
        (Action.LABEL, False),
        (Action.RETRAIN, True),
        (Action.ALERT, False),
    ]


def test_a_new_drift_episode_alerts_again():
    state = streak(2, alerted=Action.ALERT)
    state = decide(result(0.0), state, POLICY, NOW, 0).state
    state = decide(result(0.5), state, POLICY, NOW, 0).state

    decision = decide(result(0.5), state, POLICY, NOW, 0)

    assert (decision.action, decision.notify) == (Action.ALERT, True)


def test_retrain_is_recorded_for_cooldown():
    decision = decide(result(0.5), streak(2), POLICY, NOW, 100)

    assert decision.state.retrains == (NOW,)
    assert decide(result(0.5), decision.state, POLICY, NOW + timedelta(hours=1), 100).action is Action.ALERT


def test_a_new_champion_starts_a_new_streak_and_keeps_retrains():
    state = streak(4, retrains=(NOW,), alerted=Action.RETRAIN)

    fresh = for_champion(state, "2")

    assert (fresh.consecutive_drifted, fresh.drifting_since, fresh.alerted) == (0, None, None)
    assert fresh.retrains == (NOW,) and fresh.model_version == "2"
    assert for_champion(state, "1") is state


def test_state_round_trips_through_json():
    state = streak(3, retrains=(NOW,), alerted=Action.LABEL)

    assert PolicyState.from_dict(state.to_dict()) == state
