"""Acting on a drift check: the Evidently HTML report(s) and ``summary.json`` under ``var/reports/<time>/``,
and one run per check in the MLflow ``monitoring`` experiment (share drifted, per-feature scores, window size,
performance when known, the report files as artifacts).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from monitoring.drift import DriftResult

MONITORING_EXPERIMENT = "monitoring"


def save_report(result: DriftResult, directory: Path, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the Evidently HTML report(s) and ``summary.json`` into ``directory``.

    Args:
        result: the drift check.
        directory: usually ``var/reports/<UTC time>/``; created.
        extra: more summary fields (model version, window times, decision).

    Returns:
        ``{"summary": ..., "drift": ..., "performance": ...}``, the files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = {"summary": directory / "summary.json"}
    for name, snapshot in result.snapshots.items():
        files[name] = directory / f"{name}.html"
        snapshot.save_html(str(files[name]))
    summary = {**result.summary(), **(extra or {})}
    files["summary"].write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return files


def log_summary(
    client: Any,
    result: DriftResult,
    files: dict[str, Path],
    *,
    experiment: str = MONITORING_EXPERIMENT,
    tags: dict[str, str] | None = None,
    artifact_location: str | None = None,
) -> str:
    """Log one check to MLflow: share drifted, per-feature scores, window size, performance, the reports.

    Args:
        client: the project's ``MlflowClient``.
        result: the drift check.
        files: what ``save_report`` wrote (logged as artifacts under ``report/``).
        experiment: the MLflow experiment (created when missing).
        tags: run tags (model name and version, decision).
        artifact_location: artifact root URI for the experiment when it is created
            (``models.client.artifact_location``); None lets the store (or server) decide.

    Returns:
        The run id.
    """
    from mlflow.entities import Metric, RunStatus

    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found
        else client.create_experiment(experiment, artifact_location=artifact_location)
    )
    run = client.create_run(experiment_id, tags=tags or {}, run_name="drift-check")
    now = int(time.time() * 1000)
    numbers = {
        "window_size": result.window_size,
        "reference_size": result.reference_size,
        "enough_data": float(result.enough_data),
        "drift_share": result.share,
        "drifted": float(result.drifted),
        "drifted_features": len(result.drifted_features),
        "labeled": result.labeled,
        "check_seconds": result.seconds,
    }
    numbers.update({f"score_{feature.name}": feature.score for feature in result.features})
    numbers.update({f"perf_{name}": value for name, value in (result.performance or {}).items()})
    metrics = [Metric(key, float(value), now, 0) for key, value in numbers.items()]
    client.log_batch(run.info.run_id, metrics=metrics)
    for path in files.values():
        client.log_artifact(run.info.run_id, str(path), "report")
    client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
    return run.info.run_id
