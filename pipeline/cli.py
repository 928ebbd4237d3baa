"""The `lifecycle` command: each phase of the lifecycle as a subcommand.

Every command opens the project the same way (``open_project``: Settings, then the plan named by ``--plan``,
default ``LIFECYCLE_PLAN_PATH`` or ``plan.yaml`` of the project root), calls a flow or a domain function, and
hands the typed result to ``pipeline.render``. Heavy imports (TensorFlow, MLflow, Prefect) happen inside the
commands, so `lifecycle --help` stays fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, get_args

import typer

if TYPE_CHECKING:
    from config.plan import Plan
    from config.settings import Settings

app = typer.Typer(
    name="lifecycle",
    help="The deep-learning lifecycle for Keras models: plan, data, train, test, deploy, monitor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

PlanOption = Annotated[
    Path | None,
    typer.Option(
        "--plan", "-p", help="The plan file (default: LIFECYCLE_PLAN_PATH, plan.yaml of the project)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
# pipeline.flows.PHASES, named here so `--until` is checked before Prefect is imported.
RunPhase = Literal["data", "train", "deploy"]
RUN_PHASES = get_args(RunPhase)


def main() -> None:
    app()


@dataclass(frozen=True)
class Project:
    """What a command works on: the settings (from the environment) and the validated plan."""

    settings: Settings
    plan: Plan
    plan_path: Path


def load_settings() -> Settings:
    """Settings from the environment; a bad LIFECYCLE_* value prints the problem and exits with 2."""
    from pydantic import ValidationError

    from config.settings import Settings

    try:
        return Settings()
    except ValidationError as error:
        for problem in error.errors():
            name = "LIFECYCLE_" + "_".join(str(part) for part in problem["loc"]).upper()
            typer.echo(f"settings: {name}: {problem['msg'].removeprefix('Value error, ')}", err=True)
        raise typer.Exit(2) from None


def open_project(plan_option: Path | None, *, environment: bool = True) -> Project:
    """Settings and the plan; exits 2 on a bad setting or plan (one line per broken field).

    Args:
        plan_option: ``--plan``; None for the settings' plan path.
        environment: export the libraries' environment (``Settings.apply_environment``) for what follows.
    """
    from config.plan import PlanError, load_plan

    settings = load_settings()
    path = plan_option or settings.plan_path
    try:
        plan = load_plan(path)
    except PlanError as error:
        for line in str(error).splitlines():
            typer.secho(line, fg="red", err=True)
        raise typer.Exit(2) from None
    if environment:
        settings.apply_environment()
    return Project(settings, plan, path)


def fail(command: str, error: object, code: int = 2) -> typer.Exit:
    """Print ``<command>: <error>`` in red on stderr; the Exit to raise."""
    typer.secho(f"{command}: {error}", fg="red", err=True)
    return typer.Exit(code)


@app.command("plan")
def plan_command(plan: PlanOption = None) -> None:
    """Validate a plan and check it is viable: data, samples per class, baseline, accelerator, budget.

    Exits 0 when viable, 1 when not, 2 when the plan is invalid.
    """
    from pipeline.render import console, plan_table, viability_table
    from pipeline.viability import check_viability

    project = open_project(plan, environment=False)
    out = console()
    out.print(plan_table(project.plan, project.plan_path))
    with out.status("checking viability ..."):
        report = check_viability(project.plan, project.settings)
    out.print(viability_table(report))
    raise typer.Exit(0 if report.viable else 1)


@app.command("run")
def run_command(
    plan: PlanOption = None,
    until: Annotated[RunPhase | None, typer.Option(help="Stop after this phase (default: all).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's own logs.")] = False,
) -> None:
    """Run the lifecycle flow on the plan (Prefect, ephemeral): viability, then every stage.

    Ends with what was produced and where. Exits 1 when a stage fails or the plan is not viable.
    """
    from pipeline.render import console, print_run, show_progress

    # Before Prefect is imported: its own logs only when asked for; ours go through the "lifecycle" logger.
    os.environ["PREFECT_LOGGING_LEVEL"] = (
        "INFO" if verbose else os.environ.get("PREFECT_LOGGING_LEVEL", "CRITICAL")
    )
    project = open_project(plan, environment=False)
    settings = project.settings
    params_file = settings.layout.plan_file
    if (
        project.plan_path.resolve() != params_file.resolve()
    ):  # pipeline.flows.resolve_plan_path, before Prefect
        raise fail(
            "run",
            f"{project.plan_path}: the DVC stages read their parameters from {params_file} "
            "(dvc.yaml params); run with that plan, or set LIFECYCLE_ROOT to the folder of yours",
        )
    settings.apply_environment()
    out = console()
    show_progress(out)

    from pipeline.flows import NotViableError, StageError, lifecycle
    from pipeline.render import viability_table

    prefect = settings.prefect_api_url or "ephemeral, no server"
    where = f"in {settings.root}; Prefect {prefect}; state {settings.var_dir}"
    out.print(f"lifecycle on [bold]{project.plan_path}[/] {where}")
    try:
        summary = lifecycle(plan_path=str(project.plan_path.resolve()), until=until)
    except NotViableError as error:
        out.print(viability_table(error.report))
        raise typer.Exit(1) from None
    except StageError as error:
        out.print(f"[bold red]stage {error.stage!r} failed[/] (dvc exited with {error.returncode}):")
        out.print(error.tail, markup=False, highlight=False)
        raise typer.Exit(1) from None
    except ValueError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(2) from None
    except RuntimeError as error:  # Prefect itself, e.g. its ephemeral server did not start
        raise fail("lifecycle run", error, 1) from None
    print_run(out, summary, settings.root)
    if summary.gate is not None and not summary.gate.passed:  # a failed gate is a finished run that exits 1
        raise typer.Exit(1)


@app.command("ui")
def ui_command(
    port: Annotated[int | None, typer.Option(help="Port (default: LIFECYCLE_UI_PORT, 5000).")] = None,
) -> None:
    """Start the MLflow UI on 127.0.0.1 over this project's runs and registry; Ctrl-C stops it."""
    import subprocess

    from models.tracking import ui_server_command
    from pipeline.processes import stop_process

    settings = load_settings()
    settings.apply_environment()
    settings.resolved_artifacts_dir.mkdir(parents=True, exist_ok=True)
    port = port or settings.ui_port
    command = ui_server_command(
        settings.resolved_tracking_uri,
        settings.resolved_registry_uri,
        settings.resolved_artifacts_dir.as_uri(),
        host="127.0.0.1",
        port=port,
    )
    typer.echo(f"MLflow UI: http://127.0.0.1:{port}  store: {settings.resolved_tracking_uri}  (Ctrl-C stops)")
    server = subprocess.Popen(command, cwd=settings.root, start_new_session=True)
    try:
        raise typer.Exit(server.wait())
    except KeyboardInterrupt:
        stop_process(server, group=True)  # the server and the workers it started


@app.command("promote")
def promote_command(
    version: Annotated[str, typer.Argument(help="The registered version to promote.")],
    force: Annotated[bool, typer.Option("--force", help="Skip the gate (needs --reason).")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the promotion ledger.")] = "",
    plan: PlanOption = None,
) -> None:
    """Make VERSION the champion through the gate (--force skips it and needs --reason).

    The gate tests VERSION on the test split against the plan's thresholds and the champion; only a pass
    moves the alias.

    Exits 0 when promoted, 1 when the gate failed (nothing moved), 2 when refused or misused.
    """
    if force and not reason.strip():
        raise fail("promote", "--force needs --reason TEXT (kept in the promotion ledger)")
    project = open_project(plan)
    from config.layout import PREPARED_DIR
    from data.dataset import MissingInputError, load_stage_output
    from models.client import tracking_client
    from models.promotion import GateError, promote_version
    from models.registry import RegistryError
    from pipeline.render import console, print_verdict

    layout, deploy = project.settings.layout, project.plan.deploy
    out = console()
    try:
        test = (
            None
            if force
            else load_stage_output(layout.prepared_dir, "test", "prepare", PREPARED_DIR.as_posix())
        )
        with out.status(f"gating {deploy.model_name} v{version} ..."):
            result = promote_version(
                tracking_client(project.settings), project.plan, version, test,
                reports_dir=layout.reports_dir, force=force, reason=reason,
            )  # fmt: skip
    except (RegistryError, GateError, MissingInputError) as error:
        raise fail("promote", error) from None
    if result.gate is not None:
        print_verdict(out, result.gate)
    if not result.moved:
        out.print(f"[bold red]gate failed[/]: {deploy.alias!r} not moved")
        raise typer.Exit(1)
    forced = " (forced)" if force else ""
    out.print(f"[green]{deploy.model_name} v{version} is {deploy.alias}{forced}[/]")


@app.command("rollback")
def rollback_command(
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the promotion ledger.")] = "rollback",
    plan: PlanOption = None,
) -> None:
    """Move the champion back to the version it replaced (per the promotion ledger). Exits 2 if none."""
    project = open_project(plan)
    from models.client import tracking_client
    from models.registry import RegistryError, rollback

    deploy = project.plan.deploy
    try:
        entry = rollback(
            tracking_client(project.settings), deploy.model_name, reason=reason, alias=deploy.alias
        )
    except RegistryError as error:
        raise fail("rollback", error) from None
    typer.echo(f"{deploy.model_name}: {entry.alias} v{entry.previous_version} -> v{entry.version}")


@app.command("status")
def status_command(plan: PlanOption = None, as_json: JsonOption = False) -> None:
    """Champion, challenger, the latest gate verdicts, the promotion ledger's tail, the last drift check."""
    import json

    project = open_project(plan)
    from models.client import tracking_client
    from models.status import registry_status
    from pipeline.render import console, print_status
    from pipeline.schedules import monitoring_status

    deploy = project.plan.deploy
    registry = registry_status(
        tracking_client(project.settings), deploy.model_name, alias=deploy.alias,
        challenger_alias=deploy.challenger_alias,
    )  # fmt: skip
    monitoring = monitoring_status(project.plan, project.settings)
    if as_json:
        typer.echo(json.dumps({**registry.to_dict(), "monitoring": monitoring}, indent=2))
        return
    print_status(console(), registry, monitoring)


@app.command("serve")
def serve_command(
    plan: PlanOption = None,
    host: Annotated[str | None, typer.Option(help="Interface (default LIFECYCLE_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default LIFECYCLE_PORT, 8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default LIFECYCLE_WORKERS).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve the registry's champion (models:/<deploy.model_name>@<deploy.alias>) over HTTP.

    Loads, verifies and warms the model, then answers /v1/predict; follows the alias every
    LIFECYCLE_POLL_SECONDS; logs every prediction to LIFECYCLE_STORE_URL. OpenAPI at /docs.
    """
    project = open_project(plan)
    chosen = {
        "LIFECYCLE_PLAN_PATH": project.plan_path.resolve(),
        "LIFECYCLE_HOST": host,
        "LIFECYCLE_PORT": port,
        "LIFECYCLE_WORKERS": workers,
    }
    for name, value in chosen.items():
        if value is not None:
            os.environ[name] = str(value)  # the workers build their Settings from the environment
    settings = load_settings()
    from serving.app import serve

    serve(host=settings.host, port=settings.port, workers=settings.workers, log_level=log_level)


@app.command("lineage")
def lineage_command(
    request_id: Annotated[str, typer.Argument(help="A prediction's request_id.")], as_json: JsonOption = False
) -> None:
    """Trace a prediction: model version -> MLflow run -> data version (DVC hashes) -> git commit -> plan.

    Exits 1 when a link is missing (unknown request id, version gone from the registry).
    """
    import json
    from dataclasses import asdict

    settings = load_settings()
    settings.apply_environment()
    from models.client import tracking_client
    from pipeline.render import console, lineage_table
    from serving.lineage import LineageError, trace_prediction
    from serving.store.reader import PredictionReader

    try:
        with PredictionReader(settings.resolved_store_url) as store:
            chain = trace_prediction(tracking_client(settings), request_id, store)
    except LineageError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(asdict(chain), indent=2, sort_keys=True, default=str))
        return
    console().print(lineage_table(request_id, chain))


@app.command("monitor")
def monitor_command(plan: PlanOption = None, as_json: JsonOption = False) -> None:
    """Run one drift check now: the champion's latest window of predictions vs its reference.

    Reports land in var/reports/<time>/ and the MLflow `monitoring` experiment; alerts go to the plan's
    sinks; when the policy says retrain, the retrain flow runs (through the gate). Exits 2 when there is
    no champion or reference to monitor.
    """
    import json

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    project = open_project(plan)
    from pipeline.render import console, print_check, show_progress

    out = console(stderr=as_json)
    show_progress(out)
    from models.registry import RegistryError
    from monitoring.reference import ReferenceError
    from pipeline.flows import NotViableError, StageError, monitor

    try:
        checked = monitor(plan_path=str(project.plan_path.resolve()))
    except (RegistryError, ReferenceError) as error:
        raise fail("monitor", error) from None
    except (StageError, NotViableError) as error:  # the retraining it started failed
        raise fail("monitor: retrain", error, 1) from None
    if as_json:
        typer.echo(json.dumps(checked.to_dict(), indent=2, default=str))
        return
    print_check(out, checked)


@app.command("schedule")
def schedule_command(plan: PlanOption = None) -> None:
    """Serve the plan's schedules (monitor every N minutes, retrain by cron) until Ctrl-C.

    Uses LIFECYCLE_PREFECT_API_URL when set; otherwise starts a local `prefect server` on 127.0.0.1
    (state in var/prefect) and stops it on exit.
    """
    project = open_project(plan)
    from pipeline.render import console, show_progress
    from pipeline.schedules import serve_schedules

    show_progress(console())
    try:
        serve_schedules(project.plan, project.settings, str(project.plan_path.resolve()))
    except (ValueError, RuntimeError) as error:
        raise fail("schedule", error) from None
