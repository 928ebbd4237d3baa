"""The drift policy: given one check and what happened before, what to do. Pure; every decision has a reason.

Rules, from the plan's ``monitoring`` section, in order:

1. A window under ``min_samples`` is ``not_enough_data``: not judged, the streak is left as it was.
2. A window whose drifted-feature share is under ``drift_share`` is ``none``: the drift episode ends.
3. A drifted window extends the streak. Fewer than ``alert_after_windows`` in a row is a ``warn``; from
   there it is an ``alert``; from ``retrain_after_windows`` on, retraining is due, unless ``retrain.enabled``
   is off, the last retrain is within ``retrain.cooldown_hours``, or ``retrain.max_per_day`` retrains already
   started in the last 24 h (all stay ``alert``, saying why). With fewer than ``retrain.min_new_labels`` new
   feedback labels the action is ``label`` (export a labeling queue); otherwise ``retrain``.

Alerts are not repeated for the same drift episode: ``notify`` is true when the action is more severe than
anything already sent for this episode, and for every ``retrain``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from config.plan import MonitoringSection
from monitoring.drift import DriftResult

DAY = timedelta(hours=24)


class Action(StrEnum):
    NONE = "none"
    NOT_ENOUGH_DATA = "not_enough_data"
    WARN = "warn"
    ALERT = "alert"
    LABEL = "label"
    RETRAIN = "retrain"


SEVERITY = {
    Action.NONE: 0,
    Action.NOT_ENOUGH_DATA: 0,
    Action.WARN: 1,
    Action.ALERT: 2,
    Action.LABEL: 3,
    Action.RETRAIN: 4,
}


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between windows."""

    consecutive_drifted: int = 0
    drifting_since: datetime | None = None
    retrains: tuple[datetime, ...] = ()  # when retraining was started, recent ones
    alerted: Action | None = None  # the most severe action already sent for the current episode
    model_version: str | None = None  # the champion the streak was counted on

    def to_dict(self) -> dict[str, Any]:
        content = asdict(self)
        content["drifting_since"] = self.drifting_since.isoformat() if self.drifting_since else None
        content["retrains"] = [moment.isoformat() for moment in self.retrains]
        content["alerted"] = str(self.alerted) if self.alerted else None
        return content

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> PolicyState:
        since = content.get("drifting_since")
        alerted = content.get("alerted")
        return cls(
            consecutive_drifted=int(content.get("consecutive_drifted", 0)),
            drifting_since=datetime.fromisoformat(since) if since else None,
            retrains=tuple(datetime.fromisoformat(moment) for moment in content.get("retrains", [])),
            alerted=Action(alerted) if alerted else None,
            model_version=content.get("model_version"),
        )


@dataclass(frozen=True)
class Decision:
    """What to do about one window, why, whether to send an alert, and the state after it."""

    action: Action
    reason: str
    notify: bool
    state: PolicyState

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "reason": self.reason,
            "notify": self.notify,
            "consecutive_drifted": self.state.consecutive_drifted,
            "drifting_since": self.state.drifting_since.isoformat() if self.state.drifting_since else None,
        }


def for_champion(state: PolicyState, version: str | None) -> PolicyState:
    """The state to judge a window of ``version`` with: a new champion (new reference) starts a new streak.

    Args:
        state: the stored state.
        version: the champion version the window is compared against.

    Returns:
        ``state`` unchanged for the same champion; otherwise the streak and alert memory reset, retrains kept.
    """
    if state.model_version == version:
        return state
    return replace(state, consecutive_drifted=0, drifting_since=None, alerted=None, model_version=version)


def decide(
    result: DriftResult, state: PolicyState, policy: MonitoringSection, now: datetime, new_labels: int
) -> Decision:
    """Apply the plan's drift policy to one check.

    Args:
        result: the drift check of this window.
        state: the state after the previous window (``for_champion`` applied).
        policy: the plan's monitoring section.
        now: the time of this check (aware).
        new_labels: feedback labels not yet used for training.

    Returns:
        The action, its reason, whether to alert, and the new state.
    """
    if not result.enough_data:
        reason = (
            f"{result.window_size} samples in the window, fewer than monitoring.min_samples "
            f"({policy.min_samples}): not judged"
        )
        return Decision(Action.NOT_ENOUGH_DATA, reason, False, state)
    share = f"{result.share:.0%} of {len(result.features)} features drifted"
    if not result.drifted:
        ended = replace(state, consecutive_drifted=0, drifting_since=None, alerted=None)
        return Decision(
            Action.NONE, f"{share}, under monitoring.drift_share ({policy.drift_share:.0%})", False, ended
        )
    streak = state.consecutive_drifted + 1
    since = state.drifting_since or now
    names = ", ".join(feature.name for feature in result.drifted_features)
    what = (
        f"{share} ({names}), at least monitoring.drift_share ({policy.drift_share:.0%}); "
        f"{streak} drifted window(s) in a row since {since.isoformat(timespec='seconds')}"
    )
    retrains = tuple(moment for moment in state.retrains if now - moment < max(DAY, _cooldown(policy)))
    action, why = _action(streak, retrains, policy, now, new_labels)
    if action is Action.RETRAIN:
        retrains = (*retrains, now)
    notify = action is Action.RETRAIN or (
        SEVERITY[action] >= SEVERITY[Action.ALERT]
        and (state.alerted is None or SEVERITY[action] > SEVERITY[state.alerted])
    )
    alerted = action if notify else state.alerted
    new_state = replace(
        state, consecutive_drifted=streak, drifting_since=since, retrains=retrains, alerted=alerted
    )
    return Decision(action, f"{what}; {why}", notify, new_state)


def _cooldown(policy: MonitoringSection) -> timedelta:
    return timedelta(hours=policy.retrain.cooldown_hours)


def _action(
    streak: int, retrains: tuple[datetime, ...], policy: MonitoringSection, now: datetime, new_labels: int
) -> tuple[Action, str]:
    retrain = policy.retrain
    if streak < policy.alert_after_windows:
        return (
            Action.WARN,
            f"a warning: an alert needs monitoring.alert_after_windows ({policy.alert_after_windows})",
        )
    if streak < policy.retrain_after_windows:
        return Action.ALERT, (
            f"an alert: retraining needs monitoring.retrain_after_windows ({policy.retrain_after_windows})"
        )
    if not retrain.enabled:
        return Action.ALERT, "an alert: retraining is due but monitoring.retrain.enabled is false"
    if retrains and now - max(retrains) < _cooldown(policy):
        until = (max(retrains) + _cooldown(policy)).isoformat(timespec="seconds")
        return Action.ALERT, (
            f"an alert: retraining is due but in cooldown (monitoring.retrain.cooldown_hours "
            f"{retrain.cooldown_hours:g}) until {until}"
        )
    today = sum(1 for moment in retrains if now - moment < DAY)
    if today >= retrain.max_per_day:
        return Action.ALERT, (
            f"an alert: retraining is due but {today} retrain(s) started in the last 24 h "
            f"(monitoring.retrain.max_per_day {retrain.max_per_day})"
        )
    if new_labels < retrain.min_new_labels:
        return Action.LABEL, (
            f"retraining is due but only {new_labels} new feedback labels "
            f"(monitoring.retrain.min_new_labels {retrain.min_new_labels}): labeling queue exported"
        )
    return Action.RETRAIN, f"retraining on {new_labels} new feedback labels"
