"""The plan's policy sections: what success means, how a model is deployed, how it is monitored."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from config.sections import HIGHER_IS_BETTER, LOWER_IS_BETTER, Fraction, PositiveFloat, PositiveInt, Section


class ChampionSection(Section):
    # The candidate may not be clearly worse than the champion on this metric by more than `margin`:
    # a paired bootstrap confidence interval of (candidate - champion) on the same test rows fails the
    # check only when its upper bound is < -margin (models/gate.py documents the rule exactly).
    metric: Literal[HIGHER_IS_BETTER] = "accuracy"  # type: ignore[valid-type]
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.01
    bootstrap_samples: PositiveInt = 1000
    confidence: Fraction = 0.95


class SuccessSection(Section):
    min: dict[str, float] = {"accuracy": 0.9}
    max: dict[str, PositiveFloat] = {}
    champion: ChampionSection = ChampionSection()

    @field_validator("min")
    @classmethod
    def _known_min(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if name not in HIGHER_IS_BETTER:
                raise ValueError(f"{name}: expected one of {', '.join(HIGHER_IS_BETTER)}")
            if name != "r2" and not 0 < threshold <= 1:
                raise ValueError(f"{name}: must be in (0, 1], got {threshold:g}")
        return value

    @field_validator("max")
    @classmethod
    def _known_max(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            if name not in LOWER_IS_BETTER:
                raise ValueError(f"{name}: expected one of {', '.join(LOWER_IS_BETTER)}")
        return value


class DeploySection(Section):
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    alias: str = "champion"
    challenger_alias: str = "challenger"
    # Largest batch one request may send.
    max_batch_size: PositiveInt = 256
    # How the server calls the model: ONNX Runtime (measured fastest), the compiled Keras call, or auto
    # (ONNX, falling back to Keras when export or its output check fails).
    backend: Literal["auto", "onnx", "keras"] = "auto"
    # Inputs may exceed the training data's min/max by this share of its span before they are rejected.
    range_tolerance: Annotated[float, Field(ge=0)] = 0.1
    # Micro-batching: requests waiting while the model thread is busy share one model call of at most
    # this many instances (1: one call per request). batch_wait_ms > 0 waits that long for more.
    batch_max_rows: PositiveInt = 1024
    batch_wait_ms: Annotated[float, Field(ge=0, le=100)] = 0.0


class AlertSinkSection(Section):
    kind: Literal["file", "console", "webhook"]
    path: str | None = None
    url: str | None = Field(default=None, pattern=r"^https?://")
    timeout_seconds: PositiveFloat = 5.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3

    @model_validator(mode="after")
    def _target(self) -> AlertSinkSection:
        if self.kind == "file" and not self.path:
            raise ValueError("path: required for a file sink")
        if self.kind == "webhook" and not self.url:
            raise ValueError("url: required for a webhook sink")
        return self


class RetrainSection(Section):
    enabled: bool = True
    cooldown_hours: Annotated[float, Field(ge=0)] = 6.0
    max_per_day: Annotated[int, Field(ge=0)] = 2
    min_new_labels: Annotated[int, Field(ge=0)] = 50


class ScheduleSection(Section):
    monitor_every_minutes: PositiveInt | None = 15
    # Standard 5-field cron for scheduled retraining; None for none.
    retrain_cron: str | None = None

    @field_validator("retrain_cron")
    @classmethod
    def _five_fields(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"expected a 5-field cron expression, got {value!r}")
        return value


class MonitoringSection(Section):
    window: PositiveInt = 1000
    min_samples: PositiveInt = 100
    # A feature counts as drifted when Evidently's test says so; the window drifts when this share does.
    drift_share: Fraction = 0.3
    # Consecutive drifted windows before it is an alert (fewer is a warning) and before retraining.
    alert_after_windows: PositiveInt = 2
    retrain_after_windows: PositiveInt = 3
    embedding_components: PositiveInt = 3
    alerts: list[AlertSinkSection] = [AlertSinkSection(kind="file", path="var/alerts.jsonl")]
    retrain: RetrainSection = RetrainSection()
    schedule: ScheduleSection = ScheduleSection()

    @model_validator(mode="after")
    def _windows_ordered(self) -> MonitoringSection:
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) must be <= window ({self.window})")
        if self.retrain_after_windows < self.alert_after_windows:
            raise ValueError(
                f"retrain_after_windows ({self.retrain_after_windows}) must be >= "
                f"alert_after_windows ({self.alert_after_windows})"
            )
        return self
