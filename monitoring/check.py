"""One monitor check, the shell around the pure parts: champion + reference + store window in, actions out.

``run_check``: resolve the champion, load its pinned reference, read the latest window of its predictions
from the store, build the monitoring frames, ``detect_drift``, ``decide``, then act: report files + MLflow
summary, alerts (deduplicated through the state file), a labeling queue when labels are missing. When
retraining is due, the ``retrain`` flow exports the feedback (``export_store_feedback``) and retrains.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from config.layout import ProjectLayout
from config.plan import Plan
from config.settings import Settings
from models.client import artifact_location
from monitoring.alerts import Alert, Delivery, build_sinks, send_alert
from monitoring.drift import DriftResult, detect_drift
from monitoring.features import FeatureSpec, build_frame, embedding_function, fit_features, predict_outputs
from monitoring.feedback import export_feedback, export_labeling_queue, feedback_dataset, labeling_queue
from monitoring.policy import Action, Decision, decide, for_champion
from monitoring.reference import load_reference
from monitoring.report import log_summary, save_report
from monitoring.state import load_state, save_state

log = logging.getLogger("lifecycle")
QUEUE_SIZE = 200


@dataclass
class Champion:
    """The model the window is judged against, with its reference frame."""

    name: str
    version: str
    model: Any
    meta: Any
    spec: FeatureSpec
    reference: pd.DataFrame
    reference_source: str
    embed: Any = None


@dataclass(frozen=True)
class CheckOutcome:
    result: DriftResult
    decision: Decision
    model_version: str
    report_dir: Path | None = None
    run_id: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    labeling_queue: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "decision": self.decision.to_dict(),
            "drift": self.result.summary(),
            "report": str(self.report_dir) if self.report_dir else None,
            "mlflow_run_id": self.run_id,
            "alerts": [{"sink": d.sink, "ok": d.ok, "error": d.error} for d in self.deliveries],
            "labeling_queue": str(self.labeling_queue) if self.labeling_queue else None,
        }


def load_champion(client: Any, plan: Plan, layout: ProjectLayout) -> Champion:
    """Resolve the champion, load it, and build its reference frame (features fitted on the reference).

    Args:
        client: the project's ``MlflowClient``.
        plan: the plan (model name, alias, monitoring section).
        layout: the project (the DVC cache holding the champion's reference sample).
    """
    import keras

    from models.evaluate import predict_outputs as model_outputs
    from models.names import DATA_MD5_TAG
    from models.registry import resolve_model

    name = plan.deploy.model_name
    with tempfile.TemporaryDirectory(prefix="monitor-") as folder:  # the model is in memory once loaded
        resolved = resolve_model(client, name, plan.deploy.alias, dst=Path(folder))
        model = keras.saving.load_model(resolved.model_path)
    data_md5 = client.get_model_version(name, resolved.version).tags.get(DATA_MD5_TAG)
    reference, source = load_reference(layout, data_md5, resolved.meta)
    embed = embedding_function(model) if resolved.meta.kind == "image" else None
    spec = fit_features(
        resolved.meta, reference.features, components=plan.monitoring.embedding_components, embed=embed
    )
    outputs = predict_outputs(functools.partial(model_outputs, model), reference.features, resolved.meta.task)
    frame = build_frame(spec, reference.features, *outputs, embed=embed)
    return Champion(name, resolved.version, model, resolved.meta, spec, frame, source, embed)


def window_frame(champion: Champion, window: pd.DataFrame) -> pd.DataFrame:
    """The monitoring frame of store rows: inputs from ``features``, answers as the service gave them."""
    shape = tuple(champion.meta.input_shape)
    inputs = np.stack(window["features"].to_list()) if len(window) else np.zeros((0, *shape), dtype="float32")
    return build_frame(
        champion.spec,
        inputs.astype("float32"),
        window["predicted"].to_numpy(),
        window["confidence"].to_numpy(),
        embed=champion.embed,
    )


def run_check(
    client: Any,
    plan: Plan,
    settings: Settings,
    *,
    now: datetime | None = None,
    champion: Champion | None = None,
) -> CheckOutcome:
    """One monitor check, acted on. See the module docstring.

    Args:
        client: the project's ``MlflowClient`` (the champion, and where the check is logged).
        plan: the plan (monitoring policy, sinks, model name).
        settings: paths and URLs (store, var/).
        now: the check's time (default: now, UTC).
        champion: an already loaded champion (``load_champion``), to skip loading it again.

    Returns:
        The drift result, the decision and what was done about it.
    """
    from serving.store.reader import PredictionReader

    now = now or datetime.now(UTC)
    policy = plan.monitoring
    layout = settings.layout
    champion = champion or load_champion(client, plan, layout)
    with PredictionReader(settings.resolved_store_url) as store:
        window = store.window(policy.window)
        labeled_total = store.labeled_count()
    window = window[window["model_version"].astype(str) == champion.version].reset_index(drop=True)
    frame = window_frame(champion, window)
    labels = window["label"].to_numpy(dtype="float64")
    result = detect_drift(champion.reference, frame, policy, labels=labels)
    path = layout.monitor_state
    state = load_state(path)
    new_labels = max(labeled_total - state.labels_exported, 0)
    decision = decide(result, for_champion(state.policy, champion.version), policy, now, new_labels)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    context = {
        "model_name": champion.name,
        "model_version": champion.version,
        "reference": champion.reference_source,
        "time": now.isoformat(timespec="seconds"),
        "decision": decision.to_dict(),
        "new_labels": new_labels,
        "window_start": window["created_at"].min().isoformat() if len(window) else None,
        "window_end": window["created_at"].max().isoformat() if len(window) else None,
    }
    files = save_report(result, layout.monitor_reports / stamp, extra=context)
    tags = {"model_name": champion.name, "model_version": champion.version, "decision": str(decision.action)}
    run_id = log_summary(client, result, files, tags=tags, artifact_location=artifact_location(settings))
    report_dir = files["summary"].parent
    queue_dir = None
    if decision.action is Action.LABEL:
        rows = labeling_queue(window, frame, champion.reference, result, QUEUE_SIZE)
        queue_dir = layout.labeling_queues / stamp
        export_labeling_queue(window, rows, champion.meta, queue_dir)
    deliveries: list[Delivery] = []
    if decision.notify:
        alert = _alert(champion, result, decision, report_dir, queue_dir)
        deliveries = send_alert(alert, build_sinks(policy.alerts, settings.root))
        state = replace(state, last_alert=alert.to_dict())
    if decision.action is Action.RETRAIN:  # the retrain flow exports them; these labels are now used
        state = replace(state, labels_exported=labeled_total)
    log.info("monitor: v%s: %s: %s", champion.version, decision.action, decision.reason)
    checked = {**context, "share": result.share, "drifted": result.drifted, "report": str(report_dir)}
    save_state(path, replace(state, policy=decision.state, last_check=checked))
    return CheckOutcome(result, decision, champion.version, report_dir, run_id, deliveries, queue_dir)


def export_store_feedback(settings: Settings, meta: Any) -> Path | None:
    """Export every labeled prediction in the store to ``data/feedback`` for the data phase.

    Args:
        settings: where the store and the project are.
        meta: the DatasetMeta the samples must fit (input shape, classes); other shapes are left out.

    Returns:
        The npz written, or None when the store holds no labeled prediction of that shape.
    """
    from serving.store.reader import PredictionReader

    with PredictionReader(settings.resolved_store_url) as store:
        labeled = store.labeled()
    fits = labeled["features"].map(lambda x: x.shape == tuple(meta.input_shape))
    if not fits.any():
        return None
    return export_feedback(feedback_dataset(labeled[fits], meta), settings.layout.feedback_dir)


def _alert(
    champion: Champion, result: DriftResult, decision: Decision, report: Path | None, queue: Path | None
) -> Alert:
    since = decision.state.drifting_since
    return Alert(
        action=str(decision.action),
        reason=decision.reason,
        model_name=champion.name,
        model_version=champion.version,
        share=result.share,
        drifted={feature.name: feature.score for feature in result.drifted_features},
        drifting_since=since.isoformat(timespec="seconds") if since else None,
        consecutive_windows=decision.state.consecutive_drifted,
        window_size=result.window_size,
        report=str(report) if report else None,
        labels_missing=decision.action is Action.LABEL,
        labeling_queue=str(queue) if queue else None,
        performance=result.performance,
    )
