"""The `lifecycle` command: each phase of the lifecycle as a subcommand.

Commands load Settings and the plan at the edge, then call flows or domain functions. Heavy imports
(TensorFlow, MLflow, Prefect) happen inside the commands, so `lifecycle --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

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


# pipeline.flows.PHASES, named here so `--until` is checked before Prefect is imported.
RunPhase = Literal["data", "train", "deploy"]
RUN_PHASES = get_args(RunPhase)


@app.command("run")
def run_command(
    plan: Annotated[
        Path | None, typer.Option("--plan", "-p", help="The plan file (default: plan.yaml of the project).")
    ] = None,
    until: Annotated[RunPhase | None, typer.Option(help="Stop after this phase (default: all).")] = None,
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
    plan = plan or settings.plan_path
    load_plan_or_exit(plan)
    params_file = settings.root / "plan.yaml"
    if plan.resolve() != params_file.resolve():  # pipeline.flows.resolve_plan_path, before Prefect starts
        typer.secho(
            f"{plan}: the DVC stages read their parameters from {params_file} (dvc.yaml params); "
            "run with that plan, or set LIFECYCLE_ROOT to the folder of yours",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    # Before Prefect is imported: its own logs only when asked for; ours go through the "lifecycle" logger.
    if verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    else:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    settings.apply_environment()
    console = Console()
    handler = RichHandler(console=console, show_path=False, markup=False, log_time_format="%H:%M:%S")
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress = logging.getLogger("lifecycle")
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False  # Prefect's root handler would print every line twice

    from pipeline.flows import NotViableError, StageError, lifecycle
    from pipeline.render import outputs_table, stages_table, viability_table

    prefect = settings.prefect_api_url or "ephemeral, no server"
    console.print(
        f"lifecycle on [bold]{plan}[/] in {settings.root}; Prefect {prefect}; state {settings.var_dir}"
    )
    try:
        summary = lifecycle(plan_path=str(plan.resolve()), until=until)
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
    except RuntimeError as error:  # Prefect itself, e.g. its ephemeral server did not start
        typer.secho(f"lifecycle run: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    console.print(viability_table(summary.viability))
    console.print(stages_table(summary.stages))
    console.print(outputs_table(summary.outputs))
    gate = summary.extra.get("gate")
    if gate:  # the gate's verdict (issue 3): a failed gate is a finished run that exits 1
        failed = ", ".join(gate["failures"])
        verdict = "[green]passed[/]" if gate["passed"] else f"[bold red]failed[/] ({failed})"
        console.print(f"gate: v{gate['version']} {verdict}; champion v{gate['champion']}; {gate['report']}")
    console.print(f"[green]done[/] in {summary.seconds:.1f} s; files are under {settings.root}")
    if gate and not gate["passed"]:
        raise typer.Exit(1)


# --- training, testing and registry (issue 3) --------------------------------------------------------------


@app.command("ui")
def ui_command(
    port: Annotated[int | None, typer.Option(help="Port (default: LIFECYCLE_UI_PORT, 5000).")] = None,
) -> None:
    """Start the MLflow UI on 127.0.0.1 over this project's runs and registry; Ctrl-C stops it."""
    import subprocess

    from models.tracking import ui_server_command

    settings = load_settings_or_exit()
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
    server = subprocess.Popen(command, cwd=settings.root)
    try:
        raise typer.Exit(server.wait())
    except KeyboardInterrupt:
        server.terminate()
        server.wait(timeout=30)


def _print_verdict(console, outcome) -> None:  # outcome: models.promotion.GateOutcome
    from rich.markdown import Markdown

    from models.gate import render_markdown

    console.print(Markdown(render_markdown(outcome.verdict, f"Gate on v{outcome.verdict.candidate_version}")))
    console.print(f"report: {outcome.files['markdown']}  (MLflow: {outcome.report_ref})")


@app.command("promote")
def promote_command(
    version: Annotated[str, typer.Argument(help="The registered version to promote.")],
    force: Annotated[bool, typer.Option("--force", help="Skip the gate (needs --reason).")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the promotion ledger.")] = "",
    plan: PlanOption = Path("plan.yaml"),
) -> None:
    """Make VERSION the champion through the gate (--force skips it and needs --reason).

    The gate tests VERSION on the test split against the plan's thresholds and the champion; only a pass
    moves the alias.

    Exits 0 when promoted, 1 when the gate failed (nothing moved), 2 when refused or misused.
    """
    from rich.console import Console

    if force and not reason.strip():
        typer.secho("promote: --force needs --reason TEXT (kept in the promotion ledger)", fg="red", err=True)
        raise typer.Exit(2)
    settings = load_settings_or_exit()
    plan_obj = load_plan_or_exit(plan)
    settings.apply_environment()
    from models.promotion import GateError, load_test_split, promote_version
    from models.registry import RegistryError

    console = Console()
    try:
        test = None if force else load_test_split(settings.root)
        with console.status(f"gating {plan_obj.deploy.model_name} v{version} ..."):
            result = promote_version(
                plan_obj, version, test, reports_dir=settings.reports_dir, force=force, reason=reason
            )
    except (RegistryError, GateError, FileNotFoundError) as error:
        typer.secho(f"promote: {error}", fg="red", err=True)
        raise typer.Exit(2) from None
    if result.gate is not None:
        _print_verdict(console, result.gate)
    if not result.moved:
        console.print(f"[bold red]gate failed[/]: {plan_obj.deploy.alias!r} not moved")
        raise typer.Exit(1)
    forced = " (forced)" if force else ""
    console.print(f"[green]{plan_obj.deploy.model_name} v{version} is {plan_obj.deploy.alias}{forced}[/]")


@app.command("rollback")
def rollback_command(
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the promotion ledger.")] = "rollback",
    plan: PlanOption = Path("plan.yaml"),
) -> None:
    """Move the champion back to the version it replaced (per the promotion ledger). Exits 2 if none."""
    settings = load_settings_or_exit()
    plan_obj = load_plan_or_exit(plan)
    settings.apply_environment()
    from models.registry import RegistryError, rollback

    try:
        entry = rollback(None, plan_obj.deploy.model_name, reason=reason, alias=plan_obj.deploy.alias)
    except RegistryError as error:
        typer.secho(f"rollback: {error}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{plan_obj.deploy.model_name}: {entry.alias} v{entry.previous_version} -> v{entry.version}")


@app.command("status")
def status_command(
    plan: PlanOption = Path("plan.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Champion, challenger, the latest gate verdicts and the promotion ledger's tail."""
    import json

    from rich.console import Console
    from rich.table import Table

    settings = load_settings_or_exit()
    plan_obj = load_plan_or_exit(plan)
    settings.apply_environment()
    from models.promotion import registry_status
    from pipeline.schedules import monitoring_status

    status = registry_status(plan_obj)
    status["monitoring"] = monitoring_status(plan_obj, settings)
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    console = Console()
    console.print(
        f"[bold]{status['model']}[/]: {status['versions']} version(s); "
        f"champion v{status['champion'] or '-'}, challenger v{status['challenger'] or '-'}"
    )
    verdicts = Table("version", "gate", "report", title="latest gate verdicts")
    for row in status["verdicts"]:
        verdicts.add_row(row["version"], "passed" if row["passed"] else "failed", row["report"] or "")
    console.print(verdicts)
    ledger = Table("#", "time", "alias", "move", "action", "reason", title="promotion ledger (latest)")
    for entry in status["ledger"]:
        forced = " (forced)" if entry["forced"] else ""
        move = f"v{entry['previous_version'] or '-'} -> v{entry['version']}"
        action = entry["action"] + forced
        ledger.add_row(str(entry["index"]), entry["time"], entry["alias"], move, action, entry["reason"])
    console.print(ledger)
    _print_monitoring_status(console, status["monitoring"])


def _print_monitoring_status(console: Any, monitoring: dict[str, Any]) -> None:
    check = monitoring["last_check"]
    if check:
        decision = check.get("decision") or {}
        console.print(
            f"last drift check {check['time']} on v{check.get('model_version') or '-'}: "
            f"{float(check['share']):.0%} of features drifted, decision {decision.get('action', '-')} "
            f"({monitoring['consecutive_drifted']} drifted window(s) in a row); report {check.get('report')}"
        )
    else:
        console.print("last drift check: none yet (run `lifecycle monitor`)")
    alert = monitoring["last_alert"]
    if alert:
        console.print(
            f"last alert {alert['time']}: [{alert['action']}] {alert['model_name']} "
            f"v{alert.get('model_version') or '-'}, {float(alert['share']):.0%} drifted"
        )
    else:
        console.print("last alert: none")
    for flow_name, when in monitoring["next_runs"].items():
        console.print(f"next scheduled {flow_name}: {when or 'not scheduled'}")


# --- deployment (issue 4) ----------------------------------------------------------------------------------


@app.command("serve")
def serve_command(
    host: Annotated[str | None, typer.Option(help="Interface (default LIFECYCLE_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default LIFECYCLE_PORT, 8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default LIFECYCLE_WORKERS).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve the registry's champion (models:/<deploy.model_name>@<deploy.alias>) over HTTP.

    Loads, verifies and warms the model, then answers /v1/predict; follows the alias every
    LIFECYCLE_POLL_SECONDS; logs every prediction to LIFECYCLE_STORE_URL. OpenAPI at /docs.
    """
    import os

    settings = load_settings_or_exit()
    load_plan_or_exit(settings.plan_path)
    settings.apply_environment()
    for name, value in (("LIFECYCLE_HOST", host), ("LIFECYCLE_PORT", port), ("LIFECYCLE_WORKERS", workers)):
        if value is not None:
            os.environ[name] = str(value)  # the workers build their Settings from the environment
    from serving.app import serve

    serve(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        log_level=log_level,
    )


@app.command("lineage")
def lineage_command(
    request_id: Annotated[str, typer.Argument(help="A prediction's request_id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Trace a prediction: model version -> MLflow run -> data version (DVC hashes) -> git commit -> plan.

    Exits 1 when a link is missing (unknown request id, version gone from the registry).
    """
    import json
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    settings = load_settings_or_exit()
    settings.apply_environment()
    from serving.lineage import LineageError, trace_prediction
    from serving.store import PredictionStore

    store = PredictionStore(settings.resolved_store_url)
    try:
        chain = trace_prediction(request_id, store)
    except LineageError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(asdict(chain), indent=2, sort_keys=True, default=str))
        return
    table = Table(title=f"lineage of prediction {request_id}")
    table.add_column("link")
    table.add_column("value", overflow="fold")
    for link, value in chain.links():
        table.add_row(link, value)
    Console().print(table)


# --- monitoring and schedules (issue 5) --------------------------------------------------------------------


def _progress_logging(console) -> None:  # console: rich.console.Console
    import logging

    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, markup=False, log_time_format="%H:%M:%S")
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress = logging.getLogger("lifecycle")
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False


@app.command("monitor")
def monitor_command(
    plan: PlanOption = Path("plan.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the check as JSON.")] = False,
) -> None:
    """Run one drift check now: the champion's latest window of predictions vs its reference.

    Reports land in var/reports/<time>/ and the MLflow `monitoring` experiment; alerts go to the plan's
    sinks; when the policy says retrain, the retrain flow runs (through the gate). Exits 2 when there is
    no champion or reference to monitor.
    """
    import json
    import os

    from rich.console import Console
    from rich.table import Table

    settings = load_settings_or_exit()
    load_plan_or_exit(plan)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings.apply_environment()
    console = Console(stderr=as_json)
    _progress_logging(console)
    from models.registry import RegistryError
    from monitoring.reference import ReferenceError
    from pipeline.flows import monitor

    try:
        checked = monitor(plan_path=str(plan.resolve()))
    except (RegistryError, ReferenceError) as error:
        typer.secho(f"monitor: {error}", fg="red", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(checked, indent=2, default=str))
        return
    decision, drift = checked["decision"], checked["drift"]
    console.print(
        f"v{checked['model_version']}: [bold]{decision['action']}[/]: {decision['reason']}", highlight=False
    )
    table = Table("feature", "method", "score", "threshold", "drifted", title="drift by feature")
    for feature in drift["features"]:
        mark = "[red]yes[/]" if feature["drifted"] else "no"
        table.add_row(
            feature["name"], feature["method"], f"{feature['score']:.3g}", f"{feature['threshold']:g}", mark
        )
    if drift["features"]:
        console.print(table)
    console.print(f"window {drift['window_size']} (min {drift['min_samples']}), report {checked['report']}")
    for delivery in checked["alerts"]:
        status = "sent" if delivery["ok"] else f"[red]not delivered[/]: {delivery['error']}"
        console.print(f"alert -> {delivery['sink']}: {status}")
    if checked.get("labeling_queue"):
        console.print(f"labeling queue: {checked['labeling_queue']}")
    if "retrain" in checked:
        retrained = checked["retrain"]
        console.print(f"retrain: promoted={retrained['promoted']} gate={retrained['gate']}")


@app.command("schedule")
def schedule_command(plan: PlanOption = Path("plan.yaml")) -> None:
    """Serve the plan's schedules (monitor every N minutes, retrain by cron) until Ctrl-C.

    Uses LIFECYCLE_PREFECT_API_URL when set; otherwise starts a local `prefect server` on 127.0.0.1
    (state in var/prefect) and stops it on exit.
    """
    import os

    from rich.console import Console

    settings = load_settings_or_exit()
    plan_obj = load_plan_or_exit(plan)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # flow runs inherit it
    settings.apply_environment()
    _progress_logging(Console())
    from pipeline.schedules import serve_schedules

    try:
        serve_schedules(plan_obj, settings, str(plan.resolve()))
    except (ValueError, RuntimeError) as error:
        typer.secho(f"schedule: {error}", fg="red", err=True)
        raise typer.Exit(2) from None
