"""Is the plan viable? Cheap checks run before anything is collected or trained.

Each check is a small function returning a :class:`Check`; :func:`check_viability` runs them all. Only
loading the source touches data; GPUs are found without importing TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from config.plan import (
    DataSection,
    LabelingSection,
    ModelSection,
    MonitoringSection,
    Plan,
    ResourcesSection,
    SuccessSection,
)
from config.settings import Settings
from pipeline.resources import STARTUP_SECONDS, GpuReport, detect_gpus, estimate_training_seconds

if TYPE_CHECKING:
    from data.dataset import Dataset

# error: a failure makes the plan not viable; warning: reported, the plan still runs; info: for the record.
Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Check:
    """One viability check: what was checked, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str
    severity: Severity = "error"

    @property
    def status(self) -> str:
        """``ok``, ``warning`` or ``failed`` (an error-severity check that did not pass)."""
        if self.ok:
            return "ok"
        return "failed" if self.severity == "error" else "warning"


@dataclass(frozen=True)
class ViabilityReport:
    checks: list[Check]

    @property
    def viable(self) -> bool:
        """True when no error-severity check failed."""
        return all(check.ok for check in self.checks if check.severity == "error")

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.status == "failed"]

    @property
    def warnings(self) -> list[Check]:
        return [check for check in self.checks if check.status == "warning"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "viable": self.viable,
            "checks": [asdict(check) | {"status": check.status} for check in self.checks],
        }

    def __str__(self) -> str:
        lines = [f"[{check.status}] {check.name}: {check.detail}" for check in self.checks]
        lines.append("viable" if self.viable else f"not viable: {len(self.failures)} check(s) failed")
        return "\n".join(lines)


def check_viability(plan: Plan, settings: Settings) -> ViabilityReport:
    """Run every viability check on a validated plan.

    Args:
        plan: the validated plan.
        settings: where the project lives; relative plan paths are taken from ``settings.root``.

    Returns:
        The report; ``report.viable`` is False when any error-severity check failed.
    """
    root = settings.root
    source_check, dataset = check_source(plan.data, root)
    gpus = detect_gpus()
    checks = [source_check, check_annotations(plan.data.labeling, root)]
    if dataset is not None:
        counts = class_counts(dataset, plan.data)
        checks += [
            check_data(dataset, plan.data),
            check_samples_per_class(counts, plan.data, unlabeled=_unlabeled(dataset, plan.data)),
            check_baseline(counts, plan.success),
            check_time_budget(plan, list(dataset.meta.input_shape), sum(counts.values()), gpus),
        ]
    checks += [check_accelerator(plan.resources, gpus), check_builder(plan.model, root)]
    checks.append(check_alert_sinks(plan.monitoring, root))
    return ViabilityReport([check for check in checks if check is not None])


def _unlabeled(dataset: Dataset, data: DataSection) -> int:
    return int(np.sum(dataset.labels < 0)) if data.task == "classification" else 0


def check_source(data: DataSection, root: Path) -> tuple[Check, Dataset | None]:
    """Load the plan's source once; a failure says why (missing files, offline Keras cache, ...)."""
    from data.sources import SourceError, load_source

    try:
        dataset = load_source(data, root)
    except (SourceError, OSError, ValueError) as error:
        return Check("data source", False, f"{data.source}: {error}"), None
    labeled = int(np.sum(dataset.labels >= 0)) if data.task == "classification" else len(dataset)
    shape = "x".join(str(size) for size in dataset.meta.input_shape)
    detail = f"{data.source}: {len(dataset)} samples ({labeled} labeled), input shape {shape}"
    return Check("data source", True, detail), dataset


def check_data(dataset: Dataset, data: DataSection) -> Check:
    """The source passes the rules collect applies: shapes, dtypes, NaN/inf, value ranges, ids."""
    from data.validate import DataValidationError, validate_dataset

    try:
        validate_dataset(dataset, data, data.source, labeled=False)
    except DataValidationError as error:
        return Check("data checks", False, str(error))
    return Check("data checks", True, "shapes, dtypes, finite values, ranges and ids pass")


def check_annotations(labeling: LabelingSection, root: Path) -> Check | None:
    """Label files the plan merges must exist; None when the plan names none."""
    if not labeling.annotations:
        return None
    missing = [name for name in labeling.annotations if not (root / name).is_file()]
    if missing:
        return Check(
            "annotations", False, f"data.labeling.annotations: file(s) not found: {', '.join(missing)}"
        )
    return Check("annotations", True, f"{len(labeling.annotations)} label file(s) found")


def class_counts(dataset: Dataset, data: DataSection) -> dict[str, int]:
    """Labeled samples per class name, scaled down to ``data.max_samples`` when the plan caps the source."""
    if data.task == "regression":  # unlabeled targets are NaN
        labeled = int(np.sum(np.isfinite(np.asarray(dataset.labels, dtype=float))))
        return {"(all)": _capped(labeled, len(dataset), data.max_samples)}
    labels = np.asarray(dataset.labels)
    labels = labels[labels >= 0].astype(int)
    names = list(data.classes or dataset.meta.classes)
    counts = np.bincount(labels, minlength=len(names))
    return {
        names[i] if i < len(names) else str(i): _capped(int(n), len(dataset), data.max_samples)
        for i, n in enumerate(counts)
    }


def _capped(count: int, total: int, cap: int | None) -> int:
    # The source is capped stratified: each class keeps its share of `cap`.
    if cap is None or total <= cap:
        return count
    return int(count * cap / total)


def check_samples_per_class(counts: dict[str, int], data: DataSection, unlabeled: int = 0) -> Check:
    """Every class needs ``data.min_samples_per_class`` labeled samples (all samples, for regression)."""
    minimum = data.min_samples_per_class
    short = {name: n for name, n in counts.items() if n < minimum}
    capped = f" (after max_samples={data.max_samples})" if data.max_samples else ""
    if not short:
        smallest = min(counts, key=counts.__getitem__)
        detail = f"smallest class {smallest!r} has {counts[smallest]} >= {minimum}{capped}"
        if data.task == "regression":
            detail = f"{counts[smallest]} samples >= {minimum}{capped}"
        return Check("samples per class", True, detail)
    listed = ", ".join(f"{name!r}: {n}" for name, n in sorted(short.items(), key=lambda item: item[1]))
    detail = f"data.min_samples_per_class is {minimum}, got {listed}{capped}"
    # Unlabeled samples may still get labels from the label stage's annotations: then it's a warning.
    pending = unlabeled > 0 and bool(data.labeling.annotations)
    if pending:
        detail += f"; {unlabeled} unlabeled samples may get labels from data.labeling.annotations"
    return Check("samples per class", False, detail, "warning" if pending else "error")


def check_baseline(counts: dict[str, int], success: SuccessSection) -> Check:
    """An accuracy target at or below the majority-class share is met by a constant answer: not meaningful."""
    target = success.min.get("accuracy")
    total = sum(counts.values())
    if "(all)" in counts or total == 0:
        return Check("baseline", True, "no class baseline for this task", "info")
    majority = max(counts, key=counts.__getitem__)
    share = counts[majority] / total
    if target is None:
        return Check(
            "baseline", True, f"majority class {majority!r} is {share:.1%}; no accuracy target", "info"
        )
    if target <= share:
        detail = (
            f"success.min.accuracy {target:.1%} is at or below the majority-class baseline {share:.1%}: "
            f"always answering {majority!r} meets it; expected a target above {share:.1%}"
        )
        return Check("baseline", False, detail)
    return Check("baseline", True, f"accuracy target {target:.1%} > majority-class baseline {share:.1%}")


def check_accelerator(resources: ResourcesSection, gpus: GpuReport) -> Check:
    """``gpu`` needs a usable GPU; ``auto`` takes one when there is one; ``cpu`` always works."""
    wanted = resources.accelerator
    if wanted == "gpu" and not gpus.usable:
        return Check("accelerator", False, f"resources.accelerator is 'gpu', but {gpus.reason}")
    if wanted == "cpu":
        return Check("accelerator", True, f"cpu ({os.cpu_count()} cores); {gpus.reason}")
    using = "gpu" if gpus.usable else "cpu"
    return Check("accelerator", True, f"{wanted} -> {using}: {gpus.reason}")


def check_time_budget(plan: Plan, input_shape: list[int], samples: int, gpus: GpuReport) -> Check:
    """Compare a rough training-time estimate with ``resources.time_budget_minutes``."""
    budget = plan.resources.time_budget_minutes * 60
    if not plan.model.layers:
        return Check("time budget", True, f"{budget / 60:g} min; no estimate for a builder model", "info")
    device = "gpu" if gpus.usable and plan.resources.accelerator != "cpu" else "cpu"
    estimate = estimate_training_seconds(plan.model.layers, input_shape, samples, plan, device)
    detail = (
        f"about {_minutes(estimate)} for {plan.train.epochs} epochs on {device}, budget {_minutes(budget)}"
    )
    if estimate > budget:
        epochs = max(
            0, int((budget - STARTUP_SECONDS) / max(estimate - STARTUP_SECONDS, 1e-9) * plan.train.epochs)
        )
        return Check(
            "time budget", False, f"{detail}: training stops at the budget near epoch {epochs}", "warning"
        )
    return Check("time budget", True, detail, "warning")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def check_builder(model: ModelSection, root: Path) -> Check | None:
    """A ``module:function`` builder must import and be callable; None for a layer stack."""
    if model.builder is None:
        return None
    module_name, _, function_name = model.builder.partition(":")
    added = str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any failure importing user code is the finding
        return Check(
            "builder", False, f"model.builder {model.builder!r}: can't import {module_name}: {error}"
        )
    finally:
        if added:
            sys.path.remove(str(root))
    function = getattr(module, function_name, None)
    if not callable(function):
        found = "nothing" if function is None else type(function).__name__
        detail = f"model.builder {model.builder!r}: expected a function {function_name} in {module_name}"
        detail += f", got {found}"
        return Check("builder", False, detail)
    return Check("builder", True, f"{model.builder} imports")


def check_alert_sinks(monitoring: MonitoringSection, root: Path) -> Check:
    """File sinks must be writable (or creatable); webhooks are not contacted here."""
    problems, found = [], []
    for index, sink in enumerate(monitoring.alerts):
        if sink.kind == "file" and sink.path:
            path = root / sink.path
            if not _writable(path):
                problems.append(f"monitoring.alerts.{index}.path: {path} is not writable")
            found.append(f"file {sink.path}")
        else:
            found.append(sink.kind if sink.kind == "console" else f"webhook {sink.url} (not contacted)")
    if problems:
        return Check("alert sinks", False, "; ".join(problems))
    return Check("alert sinks", True, ", ".join(found) or "none")


def _writable(path: Path) -> bool:
    if path.exists():
        return path.is_file() and os.access(path, os.W_OK)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)
