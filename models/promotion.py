"""The shell around the gate and the registry: evaluate a version, judge it, report, move aliases.

The CLI (``lifecycle promote``) and the lifecycle flow both call these. The decisions stay in pure code
(``gate.judge``, ``registry.promote``); this module downloads, runs the models, writes reports and logs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from config.plan import Plan
from data.dataset import Dataset

from . import registry
from .evaluate import confusion_matrix, evaluate_model, predict_outputs, predicted_classes
from .gate import Verdict, judge, render_markdown
from .names import GATE_PASSED_TAG, GATE_REPORT_TAG
from .run_artifacts import classification_report, plot_confusion_matrix

CURVES = ("loss", "val_loss", "accuracy", "val_accuracy")


class GateError(RuntimeError):
    """The gate could not be run (e.g. the champion can't take this test split); nothing was moved."""


@dataclass(frozen=True)
class GateOutcome:
    verdict: Verdict
    metrics: dict[str, Any]
    report_ref: str  # runs:/<run_id>/gate/gate.json
    files: dict[str, Path]


@dataclass(frozen=True)
class PromotionResult:
    version: str
    moved: bool
    gate: GateOutcome | None
    entries: list[registry.LedgerEntry]


def run_history(client: Any, run_id: str) -> tuple[dict[str, list[float]], int | None]:
    """The run's per-epoch curves (``loss``, ``val_loss``, ``accuracy``, ``val_accuracy``) and best epoch."""
    run = client.get_run(run_id)
    history = {}
    for key in CURVES:
        if key in run.data.metrics:
            points = sorted(client.get_metric_history(run_id, key), key=lambda metric: metric.step)
            history[key] = [metric.value for metric in points]
    best = run.data.metrics.get("best_epoch")
    return history, int(best) if best else None


def write_verdict(verdict: Verdict, reports_dir: Path) -> dict[str, Path]:
    """Write ``gate.json`` and the readable ``gate.md`` into ``reports_dir``."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": reports_dir / "gate.json", "markdown": reports_dir / "gate.md"}
    files["json"].write_text(verdict.to_json() + "\n")
    files["markdown"].write_text(render_markdown(verdict))
    return files


def write_test_report(
    test: Dataset, outputs: np.ndarray, metrics: dict[str, Any], reports_dir: Path
) -> dict[str, Path]:
    """The confusion-matrix plot and the classification report of the candidate on the test split."""
    classes = list(test.meta.classes)
    matrix = confusion_matrix(test.labels, predicted_classes(outputs), len(classes))
    files = {"confusion_plot": plot_confusion_matrix(matrix, classes, reports_dir / "confusion_matrix.png")}
    if "per_class" in metrics:
        files["classification_report"] = reports_dir / "classification_report.txt"
        files["classification_report"].write_text(classification_report(metrics))
    return files


def log_verdict(
    client: Any, name: str, version: str, run_id: str, verdict: Verdict, metrics: dict[str, Any], files: dict
) -> str:
    """Log the test metrics and the verdict to the candidate's run and tag its version; returns the report
    reference ``runs:/<run_id>/gate/gate.json``."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    numbers = {f"test_{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    numbers["gate_passed"] = float(verdict.passed)
    numbers.update({f"gate_{c.name}": c.value for c in verdict.checks if c.value is not None})
    client.log_batch(run_id, metrics=[Metric(key, value, now, 0) for key, value in numbers.items()])
    for path in files.values():
        client.log_artifact(run_id, str(path), "gate")
    passed = "true" if verdict.passed else "false"
    client.set_tag(run_id, GATE_PASSED_TAG, passed)
    report_ref = f"runs:/{run_id}/gate/gate.json"
    client.set_model_version_tag(name, version, GATE_PASSED_TAG, passed)
    client.set_model_version_tag(name, version, GATE_REPORT_TAG, report_ref)
    return report_ref


def gate_version(
    client: Any,
    plan: Plan,
    version: str,
    test: Dataset,
    *,
    reports_dir: Path,
    evaluation: tuple[dict[str, Any], np.ndarray] | None = None,
) -> GateOutcome:
    """Test a registered version on the test split against the plan and the champion, and record it.

    Args:
        client: the project's ``MlflowClient``.
        plan: the plan (success thresholds, model name, aliases).
        version: the candidate version.
        test: the test split; the champion is run on the same rows.
        reports_dir: where ``gate.json`` / ``gate.md`` go.
        evaluation: the candidate's ``(metrics, outputs)`` on ``test`` when the evaluate stage already
            measured them; None to download and evaluate the version here.

    Returns:
        The verdict, the candidate's metrics, the report reference and the files written.
    """
    import keras

    name = plan.deploy.model_name
    model_version = registry.get_version(client, name, version)
    num_classes = len(test.meta.classes) if test.meta.task == "classification" else 0
    with tempfile.TemporaryDirectory() as tmp:
        if evaluation is None:
            candidate = registry.resolve_model(client, name, version=version, dst=Path(tmp) / "candidate")
            evaluation = evaluate_model(
                keras.saving.load_model(candidate.model_path), test, candidate.model_path
            )
        metrics, outputs = evaluation
        champion_version = registry.alias_version(client, name, plan.deploy.alias)
        champion_outputs = None
        if champion_version == str(version):
            champion_outputs = outputs
        elif champion_version is not None:
            champion = registry.resolve_model(
                client, name, version=champion_version, dst=Path(tmp) / "champion"
            )
            try:
                champion_outputs = predict_outputs(
                    keras.saving.load_model(champion.model_path), test.features
                )
            except Exception as error:  # a champion from another input shape can't be compared
                raise GateError(
                    f"{name} v{champion_version} (the champion) could not run on the test split "
                    f"{test.features.shape}: {error}. Promote with --force and a reason to replace it."
                ) from error
    history, best_epoch = run_history(client, model_version.run_id)
    verdict = judge(
        metrics, plan.success, y_true=test.labels, candidate_outputs=outputs,
        champion_outputs=champion_outputs, num_classes=num_classes, history=history, best_epoch=best_epoch,
        candidate_version=str(version), champion_version=champion_version, seed=plan.train.seed,
    )  # fmt: skip
    files = write_verdict(verdict, reports_dir)
    if num_classes:
        files |= write_test_report(test, outputs, metrics, reports_dir)
    report_ref = log_verdict(client, name, str(version), model_version.run_id, verdict, metrics, files)
    return GateOutcome(verdict=verdict, metrics=metrics, report_ref=report_ref, files=files)


def promote_version(
    client: Any,
    plan: Plan,
    version: str,
    test: Dataset | None,
    *,
    reports_dir: Path,
    force: bool = False,
    reason: str = "",
    evaluation: tuple[dict[str, Any], np.ndarray] | None = None,
) -> PromotionResult:
    """Gate a version and, when it passes, make it challenger then champion; or force it with a reason.

    Args:
        client: the project's ``MlflowClient``.
        plan: the plan.
        version: the version to promote.
        test: the test split (not needed when forced).
        reports_dir: where the gate's reports go.
        force: skip the gate (needs ``reason``).
        reason: why, recorded in the ledger.
        evaluation: the candidate's ``(metrics, outputs)`` from the evaluate stage, if at hand.

    Returns:
        Whether the champion moved, the gate outcome (None when forced) and the ledger entries written.

    Raises:
        PromotionRefusedError: forced without a reason.
    """
    name = plan.deploy.model_name
    if force:
        entry = registry.promote(
            client, name, version, None, reason=reason, force=True, alias=plan.deploy.alias
        )
        return PromotionResult(str(version), True, None, [entry])
    if test is None:
        raise ValueError(f"{name} v{version}: expected the test split to gate against. Received: none.")
    outcome = gate_version(client, plan, version, test, reports_dir=reports_dir, evaluation=evaluation)
    if not outcome.verdict.passed:
        return PromotionResult(str(version), False, outcome, [])
    entries = []
    if registry.alias_version(client, name, plan.deploy.challenger_alias) != str(version):
        entries.append(
            registry.mark_challenger(
                client,
                name,
                version,
                outcome.verdict,
                report_ref=outcome.report_ref,
                alias=plan.deploy.challenger_alias,
            )  # fmt: skip
        )
    if registry.alias_version(client, name, plan.deploy.alias) != str(version):
        entries.append(
            registry.promote(
                client,
                name,
                version,
                outcome.verdict,
                reason=reason or "gate passed",
                report_ref=outcome.report_ref,
                alias=plan.deploy.alias,
            )  # fmt: skip
        )
    return PromotionResult(str(version), True, outcome, entries)
