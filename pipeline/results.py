"""What the flows return: typed results the CLI renders (``pipeline.render``) and tests read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.dvc import StageResult
from pipeline.outputs import OutputFile
from pipeline.viability import ViabilityReport

if TYPE_CHECKING:
    from monitoring.check import CheckOutcome
    from serving.deploy import DeployCheck


@dataclass(frozen=True)
class GateSummary:
    """The gate's verdict on the version the train stage registered, and whether the champion moved."""

    version: str
    passed: bool
    moved: bool
    champion: str | None  # the champion after the gate
    report: Path  # reports/gate.md
    report_ref: str  # runs:/<run_id>/gate/gate.json
    failures: list[str]  # names of the failed checks


@dataclass(frozen=True)
class LifecycleSummary:
    """What one lifecycle run did and produced."""

    plan_path: Path
    plan_digest: str
    viability: ViabilityReport
    stages: list[StageResult]
    seconds: float
    gate: GateSummary | None = None  # None when the run stopped before the gate
    deploy: DeployCheck | None = None  # when the champion was served and answered a test sample

    @property
    def outputs(self) -> list[OutputFile]:
        return [output for stage in self.stages for output in stage.outputs]


@dataclass(frozen=True)
class RetrainSummary:
    """A retraining: why, the feedback it exported, and the lifecycle it ran (its gate decides)."""

    reason: str
    feedback: Path | None
    lifecycle: LifecycleSummary

    @property
    def promoted(self) -> bool:
        return bool(self.lifecycle.gate and self.lifecycle.gate.moved)


@dataclass(frozen=True)
class MonitorSummary:
    """One monitor check (``monitoring.check.CheckOutcome``) and the retraining it started, if any."""

    check: CheckOutcome
    retrain: RetrainSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-ready values, with ``retrain`` when one ran (``lifecycle monitor --json``)."""
        content: dict[str, Any] = self.check.to_dict()
        if self.retrain is not None:
            gate = self.retrain.lifecycle.gate
            content["retrain"] = {
                "reason": self.retrain.reason,
                "feedback": str(self.retrain.feedback) if self.retrain.feedback else None,
                "promoted": self.retrain.promoted,
                "gate": None if gate is None else {**gate.__dict__, "report": str(gate.report)},
            }
        return content
