"""Prefect flows: the lifecycle as tasks around DVC stages and plain functions.

The flow reads like the lifecycle: load the plan once, check it is viable, run the data stages, train and
evaluate, gate, then serve the champion once to prove it answers. Each DVC stage is one task
(``pipeline.dvc.repro_stage``), so DVC decides what is up to date and records it in dvc.lock. Every flow
builds its own Settings and MLflow client from the environment it runs in (the CLI's, or a Prefect worker's),
and returns a typed result (``pipeline.results``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from config.layout import PLAN_FILE, ProjectLayout
from config.plan import Plan, load_plan
from config.settings import Settings
from pipeline.dvc import StageError, StageResult, TransientStageError, repro_stage
from pipeline.results import GateSummary, LifecycleSummary, MonitorSummary, RetrainSummary
from pipeline.stage_files import StageFileError, TrainRecord, read_evaluation
from pipeline.viability import ViabilityReport, check_viability

if TYPE_CHECKING:
    from monitoring.check import CheckOutcome
    from serving.deploy import DeployCheck

__all__ = ["StageError", "TransientStageError", "lifecycle", "monitor", "retrain"]

# Progress for people, on a plain logger: the CLI shows it; Prefect's own logs stay quiet.
log = logging.getLogger("lifecycle")

DATA_STAGES = ("collect", "label", "prepare")
TRAINING_STAGES = ("train", "evaluate")
# The lifecycle's phases in order; `lifecycle(until=...)` stops after one.
PHASES = ("data", "train", "deploy")


class NotViableError(RuntimeError):
    """The plan failed its viability checks; nothing was run."""

    def __init__(self, plan_path: Path, report: ViabilityReport):
        self.report = report
        failed = "\n".join(f"  {check.name}: {check.detail}" for check in report.failures)
        super().__init__(f"{plan_path}: the plan is not viable:\n{failed}")


def _settings() -> Settings:
    """A flow run's Settings, from the environment it runs in (the CLI's, or a Prefect worker's), with the
    libraries' environment exported for the stages it starts."""
    settings = Settings()
    settings.apply_environment()
    return settings


def retry_when_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: only a busy DVC repository is worth another try, not a failing stage."""
    return isinstance(getattr(state, "data", None), TransientStageError)  # the exception of a Failed state


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_when_transient,
    cache_policy=NO_CACHE,  # DVC decides what is up to date, from dvc.lock
)
def run_dvc_stage(stage: str, layout: ProjectLayout, force: bool = False) -> StageResult:
    """``pipeline.dvc.repro_stage`` as a task, retried when another process holds the DVC lock."""
    return repro_stage(stage, layout, force=force)


@task(name="check-viability", cache_policy=NO_CACHE)
def check_plan(plan: Plan, plan_path: Path, settings: Settings) -> ViabilityReport:
    """Run the viability checks; fail the run with the failed checks when the plan is not viable."""
    report = check_viability(plan, settings)
    for check in report.failures + report.warnings:
        log.warning("viability: %s: %s: %s", check.status, check.name, check.detail)
    log.info("viability: %s (%d checks)", "viable" if report.viable else "not viable", len(report.checks))
    if not report.viable:
        raise NotViableError(plan_path, report)
    return report


def resolve_plan_path(plan_path: str | Path, settings: Settings) -> Path:
    """The plan's absolute path; relative paths are taken from the project root.

    Raises:
        ValueError: the plan is not the project's DVC params file, which the DVC stages read.
    """
    path = Path(plan_path)
    path = (path if path.is_absolute() else settings.root / path).resolve()
    params_file = settings.layout.plan_file.resolve()
    if path != params_file:
        raise ValueError(
            f"{plan_path}: the DVC stages read their parameters from {params_file} (dvc.yaml params); "
            f"expected that plan, got {path}. Copy your plan there or set LIFECYCLE_ROOT to its project."
        )
    return path


def unregistered_training(client: Any, layout: ProjectLayout) -> str | None:
    """Why the train stage's outputs don't match the registry, or None when they do (or it never ran).

    DVC knows only files: with the MLflow state (``var/``) gone, or pointed elsewhere, ``dvc repro train``
    is "up to date" while the registry lacks the version ``artifacts/train.json`` names, and the gate fails.

    Args:
        client: the project's ``MlflowClient``.
        layout: the project.

    Returns:
        None when train.json is absent or its version is registered from its run; otherwise the reason.
    """
    from models.registry import ModelNotFoundError, get_version

    try:
        record = TrainRecord.read(layout)
    except StageFileError as error:
        return str(error)
    if record is None:
        return None
    where = layout.relative(layout.train_record)
    try:
        registered = get_version(client, record.model_name, record.version)
    except ModelNotFoundError:
        return (
            f"{where} names {record.model_name} v{record.version} (run {record.run_id}), "
            "which the registry does not hold"
        )
    if registered.run_id != record.run_id:
        return (
            f"{where} names {record.model_name} v{record.version} from run {record.run_id}, but the "
            f"registry's v{record.version} comes from run {registered.run_id}"
        )
    return None


@task(name="check-train-record", cache_policy=NO_CACHE)
def check_train_record(settings: Settings) -> str | None:
    """``unregistered_training`` on the project's registry; logs the reason when a retrain is forced."""
    from models.client import tracking_client

    reason = unregistered_training(tracking_client(settings), settings.layout)
    if reason:
        log.warning("train: %s; forcing the train stage (dvc repro --force --single-item train)", reason)
    return reason


@task(name="gate-and-promote", cache_policy=NO_CACHE)
def gate_and_promote(plan: Plan, settings: Settings) -> GateSummary:
    """Gate the version the train stage registered (with the evaluate stage's files); promote it on a pass.

    A failing gate is an expected outcome, not an error: the task completes, nothing is moved, and the
    result says so (``passed`` False); the flow then ends there and ``lifecycle run`` exits 1.

    Raises:
        StageFileError: the train and evaluate stages' files are missing or disagree.
    """
    from config.layout import PREPARED_DIR
    from data.dataset import load_stage_output
    from models.client import tracking_client
    from models.promotion import promote_version

    layout = settings.layout
    record = TrainRecord.read(layout)
    if record is None or record.model_name != plan.deploy.model_name:
        found = "none" if record is None else record.model_name
        raise StageFileError(
            f"Expected {layout.relative(layout.train_record)} for {plan.deploy.model_name}. Received {found}."
        )
    test = load_stage_output(layout.prepared_dir, "test", "prepare", PREPARED_DIR.as_posix())
    evaluation = read_evaluation(layout, test)
    result = promote_version(
        tracking_client(settings), plan, record.version, test, reports_dir=layout.reports_dir,
        evaluation=evaluation,
    )  # fmt: skip
    gate = result.gate
    assert gate is not None  # never forced here
    for check in gate.verdict.checks:
        value = "n/a" if check.value is None else f"{check.value:.4g}"
        status = "pass" if check.passed else "FAIL"
        log.info("gate: [%s] %s = %s (%s %g) %s", status, check.name, value, check.direction, check.threshold,
                 check.detail)  # fmt: skip
    for note in gate.verdict.diagnosis.notes:
        log.info("gate: diagnosis: %s", note)
    alias, where = plan.deploy.alias, gate.files["markdown"]
    if result.moved:
        log.info("gate: v%s PASSED; %s is v%s (report %s)", result.version, alias, result.version, where)
    else:
        log.warning("gate: v%s FAILED; %s not moved (report %s)", result.version, alias, where)
    return GateSummary(
        version=result.version,
        passed=gate.verdict.passed,
        moved=result.moved,
        champion=result.version if result.moved else gate.verdict.champion_version,
        report=gate.files["markdown"],
        report_ref=gate.report_ref,
        failures=[check.name for check in gate.verdict.failures],
    )


@task(name="deploy-check", cache_policy=NO_CACHE)
def deploy_check(plan: Plan, settings: Settings) -> DeployCheck:
    """The champion served in-process (the app `lifecycle serve` runs) answers one test-split sample."""
    from serving.deploy import check_deployment

    deployed = check_deployment(settings, plan)
    log.info(
        "deploy: %s v%s (%s) answered test sample %s: %s (true %s) in %.1f ms; lineage: lifecycle lineage %s",
        plan.deploy.model_name, deployed.model_version, deployed.backend, deployed.sample_id,
        deployed.label if deployed.label is not None else deployed.predicted, deployed.true_label,
        deployed.latency_ms, deployed.request_id,
    )  # fmt: skip
    return deployed


@flow(name="lifecycle", log_prints=False)
def lifecycle(plan_path: str = str(PLAN_FILE), until: str | None = None) -> LifecycleSummary:
    """The lifecycle on one plan: viability, data stages, training and evaluation, the gate, a deploy check.

    Args:
        plan_path: the plan, relative to the project root (``LIFECYCLE_ROOT``, default the working folder).
        until: stop after this phase (one of ``PHASES``: data, train, deploy); None runs them all.

    Returns:
        What each stage did, the files it produced, the gate's verdict and the deploy check.
    """
    from data.collect import ensure_feedback_dir

    if until is not None and until not in PHASES:
        raise ValueError(f"until: expected one of {', '.join(PHASES)}, got {until!r}")
    started = time.perf_counter()
    settings = _settings()
    layout = settings.layout
    path = resolve_plan_path(plan_path, settings)
    plan = load_plan(path)
    log.info("plan %s (%s), project %s", path, plan.digest(), settings.root)
    report = check_plan(plan, path, settings)

    def summary(stages: list[StageResult], **later: Any) -> LifecycleSummary:
        return LifecycleSummary(path, plan.digest(), report, stages, time.perf_counter() - started, **later)

    ensure_feedback_dir(layout)  # collect's DVC dep; missing in a fresh clone (DVC-tracked)
    stages = [run_dvc_stage(stage, layout) for stage in DATA_STAGES]
    if until == "data":
        return summary(stages)

    # DVC can call train up to date while the registry lacks its version (var/ deleted): then it is forced.
    force_train = check_train_record(settings) is not None
    stages += [run_dvc_stage(stage, layout, force_train and stage == "train") for stage in TRAINING_STAGES]
    gate = gate_and_promote(plan, settings)
    # A failed gate ends the run here (the verdict is in the result, no alias moved); so does until="train".
    if until == "train" or not gate.passed:
        return summary(stages, gate=gate)
    return summary(stages, gate=gate, deploy=deploy_check(plan, settings))


@task(name="drift-check", cache_policy=NO_CACHE)
def drift_check(plan: Plan, settings: Settings) -> CheckOutcome:
    """One monitor check (``monitoring.check.run_check``): drift, policy decision, reports, alerts."""
    from models.client import tracking_client
    from monitoring.check import run_check

    return run_check(tracking_client(settings), plan, settings)


@task(name="export-feedback", cache_policy=NO_CACHE)
def export_feedback_data(settings: Settings) -> Path | None:
    """Labeled production samples -> ``data/feedback`` (versioned with ``dvc add`` in a DVC project)."""
    from config.layout import META_FILE
    from data.dataset import DatasetMeta
    from monitoring.check import export_store_feedback
    from pipeline.dvc import dvc_add

    layout = settings.layout
    meta_file = layout.prepared_dir / META_FILE
    if not meta_file.is_file():
        log.warning("retrain: no %s yet; feedback not exported", layout.relative(meta_file))
        return None
    written = export_store_feedback(settings, DatasetMeta.from_json(meta_file.read_text()))
    if written is None:
        log.info("retrain: no labeled feedback in the store")
        return None
    if (layout.root / ".dvc").is_dir():
        dvc_add(written.parent, layout)
    log.info("retrain: feedback exported to %s", written)
    return written


@flow(name="retrain", log_prints=False)
def retrain(plan_path: str = str(PLAN_FILE), reason: str = "scheduled") -> RetrainSummary:
    """Retrain: export the labeled feedback into the data phase, run the lifecycle (its gate decides).

    Args:
        plan_path: the plan, relative to the project root.
        reason: why (the monitor's decision, or "scheduled").
    """
    settings = _settings()
    resolve_plan_path(plan_path, settings)
    feedback = export_feedback_data(settings)
    return RetrainSummary(reason, feedback, lifecycle(plan_path))


@flow(name="monitor", log_prints=False)
def monitor(plan_path: str = str(PLAN_FILE)) -> MonitorSummary:
    """One monitor check; when the policy says retrain, the ``retrain`` flow runs as a subflow.

    Args:
        plan_path: the plan, relative to the project root.
    """
    from monitoring.policy import Action

    settings = _settings()
    plan = load_plan(resolve_plan_path(plan_path, settings))
    checked = drift_check(plan, settings)
    if checked.decision.action is Action.RETRAIN:
        return MonitorSummary(checked, retrain(plan_path, reason=checked.decision.reason))
    return MonitorSummary(checked)
