"""The `lifecycle` command: each phase of the lifecycle as a subcommand.

Commands load Settings and the plan at the edge, then call flows or domain functions. Heavy imports
(TensorFlow, MLflow, Prefect) happen inside the commands, so `lifecycle --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="lifecycle",
    help="The deep-learning lifecycle for Keras models: plan, data, train, test, deploy, monitor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

PlanOption = Annotated[Path, typer.Option("--plan", "-p", help="The plan file.")]


def main() -> None:
    app()


# --- plan and data phase (issue 2) -------------------------------------------------------------------------


def load_settings_or_exit():  # -> Settings; imported lazily like everything else here
    """Settings from the environment; a bad LIFECYCLE_* value prints the problem and exits with 2."""
    from pydantic import ValidationError

    from pipeline.settings import Settings

    try:
        return Settings()
    except ValidationError as error:
        for problem in error.errors():
            name = "LIFECYCLE_" + "_".join(str(part) for part in problem["loc"]).upper()
            typer.echo(f"settings: {name}: {problem['msg'].removeprefix('Value error, ')}", err=True)
        raise typer.Exit(2) from None


def load_plan_or_exit(path: Path):  # -> Plan
    """The validated plan; an invalid one prints one line per broken field and exits with 2."""
    from pipeline.plan import PlanError, load_plan

    try:
        return load_plan(path)
    except PlanError as error:
        for line in str(error).splitlines():
            typer.secho(line, fg="red", err=True)
        raise typer.Exit(2) from None


@app.command("plan")
def plan_command(
    path: Annotated[Path | None, typer.Argument(help="The plan file (default: plan.yaml).")] = None,
) -> None:
    """Validate a plan and check it is viable: data, samples per class, baseline, accelerator, budget.

    Exits 0 when viable, 1 when not, 2 when the plan is invalid.
    """
    from rich.console import Console

    from pipeline.render import plan_table, viability_table
    from pipeline.viability import check_viability

    settings = load_settings_or_exit()
    path = path or settings.plan_path
    plan = load_plan_or_exit(path)
    console = Console()
    console.print(plan_table(plan, path))
    with console.status("checking viability ..."):
        report = check_viability(plan, settings)
    console.print(viability_table(report))
    raise typer.Exit(0 if report.viable else 1)


@app.command("run")
def run_command(
    plan: PlanOption = Path("plan.yaml"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's own logs.")] = False,
) -> None:
    """Run the lifecycle flow on the plan (Prefect, ephemeral): viability, then every stage.

    Ends with what was produced and where. Exits 1 when a stage fails or the plan is not viable.
    """
    import logging
    import os

    from rich.console import Console
    from rich.logging import RichHandler

    settings = load_settings_or_exit()
    load_plan_or_exit(plan)
    # Before Prefect is imported: its own logs only when asked for; ours go through the "lifecycle" logger.
    if verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    else:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    settings.apply_environment()
    console = Console()
    handler = RichHandler(console=console, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress = logging.getLogger("lifecycle")
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)

    from pipeline.flows import NotViableError, StageError, lifecycle
    from pipeline.render import outputs_table, stages_table, viability_table

    console.print(f"lifecycle on [bold]{plan}[/] in {settings.root} (state in {settings.var_dir})")
    try:
        summary = lifecycle(plan_path=str(plan.resolve()))
    except NotViableError as error:
        console.print(viability_table(error.report))
        raise typer.Exit(1) from None
    except StageError as error:
        console.print(f"[bold red]stage {error.stage!r} failed[/] (dvc exited with {error.returncode}):")
        console.print(error.tail, markup=False, highlight=False)
        raise typer.Exit(1) from None
    except ValueError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(2) from None
    console.print(stages_table(summary.stages))
    console.print(outputs_table(summary.outputs))
    console.print(f"[green]done[/] in {summary.seconds:.1f} s; files are under {settings.root}")


# --- training, testing and registry (issue 3) --------------------------------------------------------------

# --- deployment (issue 4) ----------------------------------------------------------------------------------

# --- monitoring and schedules (issue 5) --------------------------------------------------------------------
