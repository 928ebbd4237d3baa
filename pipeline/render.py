"""Rich tables for the CLI: the plan at a glance, the viability report, what a run produced."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from pipeline.outputs import OutputFile, human_size
from pipeline.plan import Plan
from pipeline.viability import ViabilityReport

if TYPE_CHECKING:
    from pipeline.flows import StageResult

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
