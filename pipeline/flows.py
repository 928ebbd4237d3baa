"""Prefect flows: the lifecycle as tasks around DVC stages and plain functions.

The flow reads like the lifecycle: load the plan once, check it is viable, then run each phase. Each DVC
stage is one task, ``dvc repro --single-item <stage>`` in a subprocess, so DVC decides what is up to date
and records it in dvc.lock. Runs in Prefect's ephemeral mode unless ``LIFECYCLE_PREFECT_API_URL`` is set.
Call ``Settings().apply_environment()`` before importing this module (it imports Prefect).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.outputs import OutputFile, describe_outputs, stage_outs
from pipeline.plan import Plan, load_plan
from pipeline.settings import Settings
from pipeline.viability import ViabilityReport, check_viability

# Progress for people, on a plain logger: the CLI shows it; Prefect's own logs stay quiet.
log = logging.getLogger("lifecycle")

DATA_STAGES = ("collect", "label", "prepare")
# The lifecycle's phases in order; `lifecycle(until=...)` stops after one.
PHASES = ("data", "train", "deploy")
DVC_PARAMS_FILE = "plan.yaml"
# DVC says these when another process holds the repository lock: worth a retry, unlike a failing stage.
_TRANSIENT = re.compile(
    r"Unable to acquire lock|lock.*(is|are) (busy|held)|Resource temporarily unavailable", re.I
)
_TAIL_LINES = 25


class StageError(RuntimeError):
    """A DVC stage failed; the message ends with the tail of its output (the stage's own error)."""

    def __init__(self, stage: str, returncode: int, tail: str):
        self.stage = stage
        self.returncode = returncode
        self.tail = tail
        super().__init__(f"stage {stage!r} failed (dvc exited with {returncode}):\n{tail}")


class TransientStageError(StageError):
    """The stage could not start because the DVC repository was busy; retried."""


class NotViableError(RuntimeError):
    """The plan failed its viability checks; nothing was run."""

    def __init__(self, plan_path: Path, report: ViabilityReport):
        self.report = report
        failed = "\n".join(f"  {check.name}: {check.detail}" for check in report.failures)
        super().__init__(f"{plan_path}: the plan is not viable:\n{failed}")


@dataclass(frozen=True)
class StageResult:
    """One DVC stage: whether it ran or DVC skipped it as up to date, how long it took, and its outs."""

    stage: str
    ran: bool
    seconds: float
    outputs: list[OutputFile] = field(default_factory=list)


@dataclass(frozen=True)
class LifecycleSummary:
    """What one lifecycle run did and produced."""

    plan_path: Path
    plan_digest: str
    viability: ViabilityReport
    stages: list[StageResult]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)  # later phases add their results here

    @property
    def outputs(self) -> list[OutputFile]:
        return [output for stage in self.stages for output in stage.outputs]


def _retry_when_transient(task: Any, task_run: Any, state: Any) -> bool:
    # Prefect hands the failure as a Failed state whose data is the exception.
    return isinstance(getattr(state, "data", None), TransientStageError)


def dvc_environment(root: Path) -> dict[str, str]:
    """The environment a stage runs in: this interpreter's bin folder first on PATH, so `python` is ours."""
    environment = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    environment["PATH"] = os.pathsep.join([bin_dir, environment.get("PATH", "")])
    environment.setdefault("DVC_NO_ANALYTICS", "1")
    return environment


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_when_transient,
    cache_policy=NO_CACHE,  # DVC decides what is up to date, from dvc.lock
)
def run_dvc_stage(stage: str, root: Path, force: bool = False) -> StageResult:
    """Run one DVC stage with ``dvc repro --single-item``; DVC skips it when nothing it reads changed.

    Args:
        stage: the stage's name in dvc.yaml.
        root: the project root (where dvc.yaml is).
        force: run it even when DVC finds it up to date (``--force``).

    Returns:
        Whether it ran or was skipped, its duration, and the files it produced.

    Raises:
        StageError: the stage failed; the message carries the tail of its output.
        TransientStageError: the DVC repository was locked by another process (retried).
    """
    log.info("%s: starting%s", stage, " (forced)" if force else "")
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else []), "--single-item", stage],
        cwd=root,
        env=dvc_environment(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in order: the stage's own error sits next to DVC's
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        tail = "\n".join(completed.stdout.strip().splitlines()[-_TAIL_LINES:])
        error = TransientStageError if _TRANSIENT.search(completed.stdout) else StageError
        log.error("%s: failed after %.1f s", stage, seconds)
        raise error(stage, completed.returncode, tail)
    ran = f"Stage '{stage}' didn't change, skipping" not in completed.stdout
    outputs = describe_outputs(root, stage_outs(root, stage))
    log.info("%s: %s in %.1f s", stage, "ran" if ran else "up to date, skipped", seconds)
    return StageResult(stage=stage, ran=ran, seconds=seconds, outputs=outputs)


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
    params_file = (settings.root / DVC_PARAMS_FILE).resolve()
    if path != params_file:
        raise ValueError(
            f"{plan_path}: the DVC stages read their parameters from {params_file} (dvc.yaml params); "
            f"expected that plan, got {path}. Copy your plan there or set LIFECYCLE_ROOT to its project."
        )
    return path


# --- training, testing and registry (issue 3) ---
TRAINING_STAGES = ("train", "evaluate")
TRAIN_RECORD = Path("artifacts/train.json")


def unregistered_training(root: Path, *, client: Any = None) -> str | None:
    """Why the train stage's outputs don't match the registry, or None when they do (or it never ran).

    DVC knows only files: with the MLflow state (``var/``) gone, or pointed elsewhere, ``dvc repro train``
    is "up to date" while the registry lacks the version ``artifacts/train.json`` names, and the gate fails.

    Args:
        root: the project root.
        client: an ``MlflowClient``; None for one on the environment's URIs.

    Returns:
        None when train.json is absent or its version is registered from its run; otherwise the reason.
    """
    import json

    from models.registry import ModelNotFoundError, get_version

    path = root / TRAIN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        name, version, run_id = record["model_name"], str(record["version"]), record["run_id"]
    except (ValueError, KeyError, TypeError) as error:
        return f"{TRAIN_RECORD}: expected model_name, version and run_id; got an unreadable record ({error})"
    try:
        registered = get_version(client, name, version)
    except ModelNotFoundError:
        return f"{TRAIN_RECORD} names {name} v{version} (run {run_id}), which the registry does not hold"
    if registered.run_id != run_id:
        return (
            f"{TRAIN_RECORD} names {name} v{version} from run {run_id}, but the registry's v{version} "
            f"comes from run {registered.run_id}"
        )
    return None


@task(name="check-train-record", cache_policy=NO_CACHE)
def check_train_record(settings: Settings) -> str | None:
    """``unregistered_training`` on the project's registry; logs the reason when a retrain is forced."""
    settings.apply_environment()
    reason = unregistered_training(settings.root)
    if reason:
        log.warning("train: %s; forcing the train stage (dvc repro --force --single-item train)", reason)
    return reason


@task(name="gate-and-promote", cache_policy=NO_CACHE)
def gate_and_promote(plan: Plan, settings: Settings) -> dict[str, Any]:
    """Gate the version the train stage registered (with the evaluate stage's files); promote it on a pass.

    A failing gate is an expected outcome, not an error: the task completes, nothing is moved, and the
    result says so (``passed`` False); the flow then ends there and ``lifecycle run`` exits 1.

    Returns:
        ``{"version", "passed", "moved", "champion", "report", "report_ref", "failures"}``.
    """
    from models.promotion import promote_candidate

    settings.apply_environment()
    result = promote_candidate(plan, settings.root)
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
    return {
        "version": result.version,
        "passed": gate.verdict.passed,
        "moved": result.moved,
        "champion": gate.verdict.champion_version if not result.moved else result.version,
        "report": str(gate.files["markdown"]),
        "report_ref": gate.report_ref,
        "failures": [check.name for check in gate.verdict.failures],
    }


@flow(name="lifecycle", log_prints=False)
def lifecycle(plan_path: str = "plan.yaml", until: str | None = None) -> LifecycleSummary:
    """The lifecycle on one plan: viability, the data stages, then the later phases.

    Args:
        plan_path: the plan, relative to the project root (``LIFECYCLE_ROOT``, default the working folder).
        until: stop after this phase (one of ``PHASES``: data, train, deploy); None runs them all.

    Returns:
        What each stage did and the files it produced.
    """
    if until is not None and until not in PHASES:
        raise ValueError(f"until: expected one of {', '.join(PHASES)}, got {until!r}")
    started = time.perf_counter()
    settings = Settings()
    path = resolve_plan_path(plan_path, settings)
    plan = load_plan(path)
    log.info("plan %s (%s), project %s", path, plan.digest(), settings.root)
    report = check_plan(plan, path, settings)

    # --- data: collect, label, prepare (issue 2) ---
    from data.collect import ensure_feedback_dir

    ensure_feedback_dir(settings.root)  # collect's DVC dep; missing in a fresh clone (DVC-tracked)
    stages = [run_dvc_stage(stage, settings.root) for stage in DATA_STAGES]
    if until == "data":
        return LifecycleSummary(path, plan.digest(), report, stages, time.perf_counter() - started)

    # --- training, testing and registry (issue 3) ---
    # DVC can call train up to date while the registry lacks its version (var/ deleted): then it is forced.
    force_train = check_train_record(settings) is not None
    stages += [
        run_dvc_stage(stage, settings.root, force_train and stage == "train") for stage in TRAINING_STAGES
    ]
    extra: dict[str, Any] = {"gate": gate_and_promote(plan, settings)}
    # A failed gate ends the run here (the verdict is in the result, no alias moved); so does until="train".
    if until == "train" or not extra["gate"]["passed"]:
        return LifecycleSummary(
            plan_path=path, plan_digest=plan.digest(), viability=report, stages=stages,
            seconds=time.perf_counter() - started, extra=extra,
        )  # fmt: skip

    # --- deployment (issue 4) ---
    # The champion served in-process (the app `lifecycle serve` runs) answers one test-split sample.
    from serving.deploy import check_deployment

    deployed = task(name="deploy-check", cache_policy=NO_CACHE)(check_deployment)(settings, plan)
    extra["deploy"] = deployed
    log.info(
        "deploy: %s v%s (%s) answered test sample %s: %s (true %s) in %.1f ms; lineage: lifecycle lineage %s",
        plan.deploy.model_name, deployed["model_version"], deployed["backend"], deployed["sample_id"],
        deployed["label"] if deployed["label"] is not None else deployed["predicted"], deployed["true_label"],
        deployed["latency_ms"], deployed["request_id"],
    )  # fmt: skip

    return LifecycleSummary(
        plan_path=path,
        plan_digest=plan.digest(),
        viability=report,
        stages=stages,
        seconds=time.perf_counter() - started,
        extra=extra,
    )


# --- monitoring and retraining (issue 5) ---
@task(name="drift-check", cache_policy=NO_CACHE)
def drift_check(plan: Plan, settings: Settings) -> dict[str, Any]:
    """One monitor check (``monitoring.check.run_check``): drift, policy decision, reports, alerts."""
    from monitoring.check import run_check

    settings.apply_environment()
    return run_check(plan, settings).to_dict()


@task(name="export-feedback", cache_policy=NO_CACHE)
def export_feedback_data(settings: Settings) -> str | None:
    """Labeled production samples -> ``data/feedback`` (versioned with ``dvc add`` in a DVC project)."""
    from data.dataset import DatasetMeta
    from monitoring.check import export_store_feedback

    meta_file = settings.root / "data/prepared/meta.json"
    if not meta_file.is_file():
        log.warning("retrain: no data/prepared/meta.json yet; feedback not exported")
        return None
    written = export_store_feedback(settings, DatasetMeta.from_json(meta_file.read_text()))
    if written is None:
        log.info("retrain: no labeled feedback in the store")
        return None
    if (settings.root / ".dvc").is_dir():
        folder = written.parent.relative_to(settings.root).as_posix()
        command = [sys.executable, "-m", "dvc", "add", folder]
        environment = dvc_environment(settings.root)
        subprocess.run(
            command, cwd=settings.root, env=environment, check=True, capture_output=True, text=True
        )
    log.info("retrain: feedback exported to %s", written)
    return str(written)


@flow(name="retrain", log_prints=False)
def retrain(plan_path: str = "plan.yaml", reason: str = "scheduled") -> dict[str, Any]:
    """Retrain: export the labeled feedback into the data phase, run the lifecycle (its gate decides).

    Args:
        plan_path: the plan, relative to the project root.
        reason: why (the monitor's decision, or "scheduled").

    Returns:
        ``{"reason", "feedback", "gate", "promoted"}``; ``gate`` is the lifecycle's gate result.
    """
    settings = Settings()
    settings.apply_environment()
    resolve_plan_path(plan_path, settings)
    feedback = export_feedback_data(settings)
    summary = lifecycle(plan_path)
    gate = summary.extra.get("gate")
    return {"reason": reason, "feedback": feedback, "gate": gate, "promoted": bool(gate and gate["moved"])}


@flow(name="monitor", log_prints=False)
def monitor(plan_path: str = "plan.yaml") -> dict[str, Any]:
    """One monitor check; when the policy says retrain, the ``retrain`` flow runs as a subflow.

    Args:
        plan_path: the plan, relative to the project root.

    Returns:
        The check (``CheckOutcome.to_dict()``), plus ``retrain`` when it ran.
    """
    settings = Settings()
    plan = load_plan(resolve_plan_path(plan_path, settings))
    checked = drift_check(plan, settings)
    if checked["decision"]["action"] == "retrain":
        checked["retrain"] = retrain(plan_path, reason=checked["decision"]["reason"])
    return checked
