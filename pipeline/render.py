"""Everything the CLI prints: the plan at a glance, the viability report, what a run produced, the gate's
verdict, where the registry and the monitor stand, a prediction's lineage, a drift check.

The commands (``pipeline.cli``) only call these with the typed results of flows and domain functions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from config.plan import Plan
from pipeline.outputs import OutputFile, human_size
from pipeline.viability import ViabilityReport

if TYPE_CHECKING:
    from models.promotion import GateOutcome
    from models.status import RegistryStatus
    from pipeline.dvc import StageResult
    from pipeline.results import LifecycleSummary, MonitorSummary
    from serving.lineage import Lineage

_STATUS_STYLE = {"ok": "[green]ok[/]", "warning": "[yellow]warning[/]", "failed": "[bold red]FAILED[/]"}


def plan_table(plan: Plan, path: Path) -> Table:
    """The plan's main choices, one row per section."""
    table = Table(title=f"plan {path} ({plan.digest()})", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    data, train = plan.data, plan.train
    model = plan.model.builder or " > ".join(layer.type for layer in plan.model.layers)
    split = f"{data.split.train:g}/{data.split.val:g}/{data.split.test:g} (seed {data.split.seed})"
    success = ", ".join(f"{name} >= {value:g}" for name, value in plan.success.min.items())
    success += "".join(f", {name} <= {value:g}" for name, value in plan.success.max.items())
    sinks = ", ".join(sink.kind for sink in plan.monitoring.alerts) or "none"
    rows = [
        ("project", f"{plan.project.name}: {plan.project.goal}"),
        ("data", f"{data.source} ({data.task}), split {split}, scaling {data.scaling}"),
        ("labels", f"{len(data.labeling.annotations)} annotation file(s), queue {data.labeling.queue_dir}"),
        ("model", model),
        (
            "train",
            f"{train.epochs} epochs, batch {train.batch_size}, {train.optimizer.name} "
            f"lr {train.optimizer.learning_rate:g}, {train.loss}",
        ),
        ("resources", f"{plan.resources.accelerator}, budget {plan.resources.time_budget_minutes:g} min"),
        (
            "success",
            f"{success}; beat champion on {plan.success.champion.metric} "
            f"within {plan.success.champion.margin:g}",
        ),
        ("deploy", f"{plan.deploy.model_name}@{plan.deploy.alias}"),
        (
            "monitoring",
            f"window {plan.monitoring.window}, drift share {plan.monitoring.drift_share:g}, alerts: {sinks}",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def viability_table(report: ViabilityReport) -> Table:
    """One row per check; the caption says whether the plan is viable."""
    failed = len(report.failures)
    caption = "[green]viable[/]" if report.viable else f"[bold red]not viable[/]: {failed} check(s) failed"
    table = Table(title="viability", caption=caption, title_justify="left", caption_justify="left")
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        table.add_row(check.name, _STATUS_STYLE[check.status], check.detail)
    return table


def stages_table(stages: list[StageResult]) -> Table:
    """Each stage: ran or skipped, and how long it took."""
    table = Table(title="stages", title_justify="left")
    table.add_column("stage", style="bold")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    for stage in stages:
        result = "[green]ran[/]" if stage.ran else "[dim]up to date, skipped[/]"
        table.add_row(stage.stage, result, f"{stage.seconds:.1f}")
    return table


def outputs_table(outputs: list[OutputFile]) -> Table:
    """Every produced file with its size and what it holds."""
    total = sum(output.size_bytes for output in outputs)
    table = Table(
        title="produced",
        caption=f"{len(outputs)} files, {human_size(total)}",
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("file", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("holds")
    for output in outputs:
        table.add_row(output.path, human_size(output.size_bytes), output.detail)
    return table


def console(*, stderr: bool = False) -> Console:
    """The console a command prints to (stderr when stdout carries JSON)."""
    return Console(stderr=stderr)


def show_progress(out: Console) -> None:
    """Print the ``lifecycle`` logger's progress lines (one per step) on ``out``, each once."""
    from rich.logging import RichHandler

    handler = RichHandler(console=out, show_path=False, markup=False, log_time_format="%H:%M:%S")
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress = logging.getLogger("lifecycle")
    progress.handlers = [handler]
    progress.setLevel(logging.INFO)
    progress.propagate = False  # Prefect's root handler would print every line twice


def print_run(out: Console, summary: LifecycleSummary, root: Path) -> None:
    """The end of ``lifecycle run``: viability, stages, produced files, the gate's verdict, the time."""
    out.print(viability_table(summary.viability))
    out.print(stages_table(summary.stages))
    out.print(outputs_table(summary.outputs))
    gate = summary.gate
    if gate is not None:
        verdict = "[green]passed[/]" if gate.passed else f"[bold red]failed[/] ({', '.join(gate.failures)})"
        out.print(f"gate: v{gate.version} {verdict}; champion v{gate.champion}; {gate.report}")
    out.print(f"[green]done[/] in {summary.seconds:.1f} s; files are under {root}")


def print_verdict(out: Console, outcome: GateOutcome) -> None:
    """The gate's verdict as markdown, and where its report is."""
    from rich.markdown import Markdown

    from models.gate import render_markdown

    out.print(Markdown(render_markdown(outcome.verdict, f"Gate on v{outcome.verdict.candidate_version}")))
    out.print(f"report: {outcome.files['markdown']}  (MLflow: {outcome.report_ref})")


def print_status(out: Console, registry: RegistryStatus, monitoring: dict[str, Any]) -> None:
    """``lifecycle status``: the registry's aliases, verdicts and ledger, then the monitor's last check."""
    out.print(
        f"[bold]{registry.model}[/]: {registry.versions} version(s); "
        f"champion v{registry.champion or '-'}, challenger v{registry.challenger or '-'}"
    )
    verdicts = Table("version", "gate", "report", title="latest gate verdicts")
    for verdict in registry.verdicts:
        verdicts.add_row(verdict.version, "passed" if verdict.passed else "failed", verdict.report or "")
    out.print(verdicts)
    ledger = Table("#", "time", "alias", "move", "action", "reason", title="promotion ledger (latest)")
    for entry in registry.ledger:
        move = f"v{entry.previous_version or '-'} -> v{entry.version}"
        action = entry.action + (" (forced)" if entry.forced else "")
        ledger.add_row(str(entry.index), entry.time, entry.alias, move, action, entry.reason)
    out.print(ledger)
    check = monitoring["last_check"]
    if check:
        decision = check.get("decision") or {}
        out.print(
            f"last drift check {check['time']} on v{check.get('model_version') or '-'}: "
            f"{float(check['share']):.0%} of features drifted, decision {decision.get('action', '-')} "
            f"({monitoring['consecutive_drifted']} drifted window(s) in a row); report {check.get('report')}"
        )
    else:
        out.print("last drift check: none yet (run `lifecycle monitor`)")
    alert = monitoring["last_alert"]
    if alert:
        out.print(
            f"last alert {alert['time']}: [{alert['action']}] {alert['model_name']} "
            f"v{alert.get('model_version') or '-'}, {float(alert['share']):.0%} drifted"
        )
    else:
        out.print("last alert: none")
    for flow_name, when in monitoring["next_runs"].items():
        out.print(f"next scheduled {flow_name}: {when or 'not scheduled'}")


def lineage_table(request_id: str, chain: Lineage) -> Table:
    """A prediction's lineage, one link per row."""
    table = Table(title=f"lineage of prediction {request_id}")
    table.add_column("link")
    table.add_column("value", overflow="fold")
    for link, value in chain.links():
        table.add_row(link, value)
    return table


def print_check(out: Console, checked: MonitorSummary) -> None:
    """``lifecycle monitor``: the decision, drift by feature, the window, alerts, a queue, a retraining."""
    check = checked.check
    decision, drift = check.decision, check.result
    out.print(f"v{check.model_version}: [bold]{decision.action}[/]: {decision.reason}", highlight=False)
    table = Table("feature", "method", "score", "threshold", "drifted", title="drift by feature")
    for feature in drift.features:
        mark = "[red]yes[/]" if feature.drifted else "no"
        table.add_row(feature.name, feature.method, f"{feature.score:.3g}", f"{feature.threshold:g}", mark)
    if drift.features:
        out.print(table)
    out.print(f"window {drift.window_size} (min {drift.min_samples}), report {check.report_dir}")
    for delivery in check.deliveries:
        status = "sent" if delivery.ok else f"[red]not delivered[/]: {delivery.error}"
        out.print(f"alert -> {delivery.sink}: {status}")
    if check.labeling_queue:
        out.print(f"labeling queue: {check.labeling_queue}")
    if checked.retrain is not None:
        gate = checked.retrain.lifecycle.gate
        verdict = "none" if gate is None else ("passed" if gate.passed else "failed")
        out.print(f"retrain: promoted={checked.retrain.promoted} gate={verdict}")
