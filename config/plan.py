"""The plan: `plan.yaml` read once into frozen, typed sections.

Every section rejects unknown keys, and every error names the file and the field path, what was expected
and what was found: ``plan.yaml: train.optimizer.learning_rate: must be > 0, got -1``. The sections live in
``config.sections`` (data, model, training, resources) and ``config.policies`` (success, deploy,
monitoring); this module composes them into the ``Plan`` and names every one of them for its readers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator

from config.policies import (
    AlertSinkSection,
    ChampionSection,
    DeploySection,
    MonitoringSection,
    RetrainSection,
    ScheduleSection,
    SuccessSection,
)
from config.sections import (
    DataSection,
    EarlyStoppingSection,
    LabelingSection,
    LayerSpec,
    ModelSection,
    OptimizerSection,
    ProjectSection,
    ReduceLROnPlateauSection,
    RegularizerSpec,
    ResourcesSection,
    Section,
    SplitSection,
    TrainSection,
)

__all__ = [
    "AlertSinkSection",
    "ChampionSection",
    "DataSection",
    "DeploySection",
    "EarlyStoppingSection",
    "LabelingSection",
    "LayerSpec",
    "ModelSection",
    "MonitoringSection",
    "OptimizerSection",
    "Plan",
    "PlanError",
    "ProjectSection",
    "ReduceLROnPlateauSection",
    "RegularizerSpec",
    "ResourcesSection",
    "RetrainSection",
    "ScheduleSection",
    "Section",
    "SplitSection",
    "SuccessSection",
    "TrainSection",
    "load_plan",
    "parse_plan",
]


class PlanError(ValueError):
    """A plan that can't be used. ``problems`` holds one line per broken field."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}: {problem}" for problem in problems))


class Plan(Section):
    project: ProjectSection
    data: DataSection
    model: ModelSection
    train: TrainSection = TrainSection()
    resources: ResourcesSection = ResourcesSection()
    success: SuccessSection = SuccessSection()
    deploy: DeploySection
    monitoring: MonitoringSection = MonitoringSection()

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        regression = self.data.task == "regression"
        if regression != (self.train.loss == "mse"):
            raise ValueError(f"train.loss: {self.train.loss!r} does not fit data.task {self.data.task!r}")
        if (
            self.data.classes is not None
            and self.train.loss == "binary_crossentropy"
            and len(self.data.classes) != 2
        ):
            raise ValueError(
                f"train.loss: binary_crossentropy needs 2 classes, data.classes has {len(self.data.classes)}"
            )
        return self

    def digest(self) -> str:
        """A stable hash of the plan's content, recorded as lineage."""
        canonical = self.model_dump_json()
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    found = error.get("input")
    if kind == "extra_forbidden":
        return f"{location}: unknown key (found {found!r})"
    if kind == "missing":
        return f"{location}: required field is missing"
    message = error["msg"]
    message = message.removeprefix("Value error, ")
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(error.get("ctx", {}).values()), None)
        if isinstance(limit, int | float):
            message = f"must be {bounds[kind]} {limit:g}"
        message = message.replace("Input should be", "must be")
    elif kind.startswith("literal_error") or kind.endswith("_type") or kind.endswith("_parsing"):
        message = message.replace("Input should be", "expected")
    if kind != "value_error" and not isinstance(found, dict | list):
        message = f"{message}, got {found!r}"
    return f"{location}: {message}" if location else message


def parse_plan(raw: Any, path: str | Path = "plan.yaml") -> Plan:
    """Validate an already-parsed YAML document as a plan.

    Raises:
        PlanError: one line per broken field, each naming the file and the field path.
    """
    if raw is None:
        raise PlanError(path, ["expected a mapping of sections at the top level, got an empty file"])
    if not isinstance(raw, dict):
        raise PlanError(path, [f"expected a mapping of sections at the top level, got {type(raw).__name__}"])
    try:
        return Plan.model_validate(raw)
    except ValidationError as error:
        raise PlanError(path, [_describe(e) for e in error.errors()]) from None  # type: ignore[arg-type]


def load_plan(path: str | Path = "plan.yaml") -> Plan:
    """Read and validate a plan file.

    Args:
        path: the YAML file.

    Returns:
        The frozen plan.

    Raises:
        PlanError: the file is missing, is not YAML, or breaks the schema; the message names the field.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise PlanError(path, [f"can't read the plan: {error.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PlanError(path, [f"not valid YAML{where}: {problem}"]) from None
    return parse_plan(raw, path)
