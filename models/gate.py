"""The gate: a candidate's test metrics against the plan's success thresholds and against the champion.

``judge`` is pure. It returns a ``Verdict``: every check with its value, threshold and result, and a
diagnosis (overfitting, underfitting, weakest classes) that explains but never decides.

The champion check (the rule, exactly): on the SAME test rows, draw ``B = success.champion.bootstrap_samples``
resamples of row indices with replacement (``numpy.random.default_rng(seed)``); for each, compute
``d_b = metric(candidate on idx_b) - metric(champion on idx_b)`` with the same indices for both models (a
paired bootstrap). The confidence interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
percentiles of ``d``. The check FAILS only when the whole interval lies below ``-margin`` (its upper bound
``< -margin``): the candidate is then worse than the champion by more than the margin with that confidence.
A candidate whose interval reaches ``-margin`` or above passes (not shown to be clearly worse). Without a
champion the check passes with "no champion yet".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from config.plan import SuccessSection

from .evaluate import metric_value

OVERFIT_GAP = 0.05  # train - val on the training metric (relative for a loss) above this: overfitting
WEAKEST_CLASSES = 3


@dataclass(frozen=True)
class Check:
    """One gate check. ``direction`` is ">=" or "<=" (value against threshold)."""

    name: str
    value: float | None
    threshold: float
    direction: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Diagnosis:
    overfitting: bool = False
    underfitting: bool = False
    train_val_gap: float | None = None
    weakest_classes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    checks: list[Check]
    diagnosis: Diagnosis
    candidate_version: str | None = None
    champion_version: str | None = None

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=float)


def paired_bootstrap(
    metric: str,
    y_true: np.ndarray,
    candidate_outputs: np.ndarray,
    champion_outputs: np.ndarray,
    *,
    num_classes: int,
    samples: int,
    confidence: float,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(point difference, CI low, CI high)`` of ``metric(candidate) - metric(champion)``, paired rows.

    Args:
        metric: a higher-is-better metric name (``evaluate.metric_value``).
        y_true: test targets.
        candidate_outputs: the candidate's outputs on those rows.
        champion_outputs: the champion's outputs on the same rows, same order.
        num_classes: number of classes.
        samples: bootstrap resamples.
        confidence: interval level, e.g. 0.95.
        seed: the resampling seed (same seed, same interval).

    Returns:
        The difference on all rows and the percentile interval of the resampled differences.
    """
    y_true = np.asarray(y_true)
    if not len(y_true) == len(candidate_outputs) == len(champion_outputs):
        raise ValueError(
            f"Expected targets and both models' outputs on the same rows. Received {len(y_true)} targets, "
            f"{len(candidate_outputs)} candidate and {len(champion_outputs)} champion outputs."
        )
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(y_true), size=(samples, len(y_true)))
    if metric == "accuracy":  # vectorised: the mean of per-row correctness differences
        from .evaluate import predicted_classes

        gain = (predicted_classes(candidate_outputs) == y_true).astype("float64") - (
            predicted_classes(champion_outputs) == y_true
        )
        point, differences = float(gain.mean()), gain[index].mean(axis=1)
    else:

        def difference(rows: np.ndarray) -> float:
            return metric_value(metric, y_true[rows], candidate_outputs[rows], num_classes) - metric_value(
                metric, y_true[rows], champion_outputs[rows], num_classes
            )

        point = difference(np.arange(len(y_true)))
        differences = np.array([difference(rows) for rows in index])
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(differences, [tail, 100 - tail])
    return point, float(low), float(high)


def diagnose(
    history: Mapping[str, Sequence[float]],
    per_class: Mapping[str, Mapping[str, float]],
    success: SuccessSection,
    best_epoch: int | None = None,
) -> Diagnosis:
    """Why a model scores as it does: train/val gap, low scores on both, weakest classes.

    Args:
        history: per-epoch curves (``accuracy``, ``val_accuracy``, ``loss``, ``val_loss``, ...).
        per_class: ``evaluate_predictions``'s per_class.
        success: the plan's success section (its accuracy threshold marks underfitting).
        best_epoch: the epoch whose weights were kept (1-based); None for the last.

    Returns:
        The diagnosis.
    """
    notes: list[str] = []
    metric = "accuracy" if "accuracy" in history and "val_accuracy" in history else "loss"
    train, val = list(history.get(metric, [])), list(history.get(f"val_{metric}", []))
    gap = overfitting = underfitting = None
    if train and val:
        at = min(best_epoch or len(train), len(train), len(val)) - 1
        if metric == "accuracy":
            gap = train[at] - val[at]
            overfitting = gap > OVERFIT_GAP
            floor = success.min.get("accuracy")
            underfitting = floor is not None and train[at] < floor and val[at] < floor
            if underfitting:
                notes.append(
                    f"underfitting: train accuracy {train[at]:.3f} and val {val[at]:.3f} both below {floor:g}"
                )
        else:
            gap = (val[at] - train[at]) / max(abs(train[at]), 1e-12)
            overfitting = gap > OVERFIT_GAP
        finding = "overfitting" if overfitting else "no overfitting"
        where = f"at epoch {at + 1} (limit {OVERFIT_GAP:g})"
        notes.append(f"{finding}: train-val gap on {metric} {gap:.3f} {where}")
        val_loss = list(history.get("val_loss", []))
        if len(val_loss) > at + 1 and min(val_loss[at + 1 :]) > val_loss[at]:
            notes.append(f"val loss rose after epoch {at + 1}, whose weights were kept")
    else:
        notes.append("no train/val curves to diagnose fitting")
    rows: list[dict[str, Any]] = [
        {"class": name, **{key: float(value) for key, value in scores.items()}}
        for name, scores in per_class.items()
    ]
    weakest = sorted(rows, key=lambda row: float(row.get("f1", 0.0)))[:WEAKEST_CLASSES]
    if weakest:
        notes.append(
            "weakest classes by F1: " + ", ".join(f"{row['class']} ({row['f1']:.3f})" for row in weakest)
        )
    return Diagnosis(
        overfitting=bool(overfitting),
        underfitting=bool(underfitting),
        train_val_gap=gap,
        weakest_classes=weakest,
        notes=notes,
    )


def judge(
    candidate_metrics: Mapping[str, Any],
    success: SuccessSection,
    *,
    y_true: np.ndarray,
    candidate_outputs: np.ndarray,
    champion_outputs: np.ndarray | None,
    num_classes: int,
    history: Mapping[str, Sequence[float]] | None = None,
    best_epoch: int | None = None,
    candidate_version: str | None = None,
    champion_version: str | None = None,
    seed: int = 0,
) -> Verdict:
    """The gate's verdict on a candidate.

    Args:
        candidate_metrics: the candidate's test metrics (``evaluate_predictions`` + latency + size).
        success: the plan's success section: thresholds and the champion rule.
        y_true: test targets.
        candidate_outputs: the candidate's outputs on the test rows.
        champion_outputs: the champion's outputs on the same rows; None when there is no champion.
        num_classes: number of classes (0 for regression).
        history: the candidate's per-epoch train/val curves, for the diagnosis.
        best_epoch: the epoch whose weights were kept.
        candidate_version: registry version of the candidate (recorded).
        champion_version: registry version of the champion (recorded).
        seed: bootstrap seed.

    Returns:
        Passed when every check passed; each check with value, threshold and result.
    """
    checks = [
        _threshold_check(name, candidate_metrics.get(name), threshold, ">=")
        for name, threshold in success.min.items()
    ]
    checks += [
        _threshold_check(name, candidate_metrics.get(name), threshold, "<=")
        for name, threshold in success.max.items()
    ]
    rule = success.champion
    name = f"champion_{rule.metric}_difference"
    if champion_outputs is None:
        checks.append(Check(name, None, -rule.margin, ">=", True, "no champion yet"))
    elif (num_classes == 0) != (rule.metric == "r2"):
        task = "regression" if num_classes == 0 else "classification"
        detail = f"success.champion.metric {rule.metric!r} does not apply to {task}"
        checks.append(Check(name, None, -rule.margin, ">=", False, detail))
    else:
        point, low, high = paired_bootstrap(
            rule.metric, y_true, np.asarray(candidate_outputs), np.asarray(champion_outputs),
            num_classes=num_classes, samples=rule.bootstrap_samples, confidence=rule.confidence, seed=seed,
        )  # fmt: skip
        passed = bool(high >= -rule.margin)
        detail = (
            f"candidate - champion v{champion_version} = {point:+.4f}, "
            f"{rule.confidence:.0%} paired bootstrap CI [{low:+.4f}, {high:+.4f}] "
            f"({rule.bootstrap_samples} resamples); fails when the CI's upper bound < -{rule.margin:g}"
        )
        checks.append(Check(name, point, -rule.margin, ">=", passed, detail))
    diagnosis = diagnose(history or {}, candidate_metrics.get("per_class") or {}, success, best_epoch)
    return Verdict(
        passed=all(check.passed for check in checks),
        checks=checks,
        diagnosis=diagnosis,
        candidate_version=candidate_version,
        champion_version=champion_version,
    )


def _threshold_check(name: str, value: Any, threshold: float, direction: str) -> Check:
    if value is None or not np.isfinite(value):
        return Check(name, None, threshold, direction, False, f"{name} was not measured")
    value = float(value)
    passed = value >= threshold if direction == ">=" else value <= threshold
    return Check(name, value, threshold, direction, passed)


def render_markdown(verdict: Verdict, title: str = "Gate verdict") -> str:
    """A readable report of the verdict: result, a table of checks, the diagnosis."""
    result = "PASSED" if verdict.passed else "FAILED"
    lines = [
        f"# {title}: {result}",
        "",
        f"- candidate: v{verdict.candidate_version or '?'}",
        f"- champion: {'v' + verdict.champion_version if verdict.champion_version else 'none'}",
        "",
        "| check | value | threshold | result | detail |",
        "|---|---|---|---|---|",
    ]
    for check in verdict.checks:
        value = "n/a" if check.value is None else f"{check.value:.4g}"
        mark = "pass" if check.passed else "**FAIL**"
        lines.append(
            f"| {check.name} | {value} | {check.direction} {check.threshold:g} | {mark} | {check.detail} |"
        )
    lines += ["", "## Diagnosis", ""]
    lines += [f"- {note}" for note in verdict.diagnosis.notes] or ["- nothing to report"]
    return "\n".join(lines) + "\n"
