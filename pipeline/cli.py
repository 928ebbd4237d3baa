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

# --- training, testing and registry (issue 3) --------------------------------------------------------------

# --- deployment (issue 4) ----------------------------------------------------------------------------------

# --- monitoring and schedules (issue 5) --------------------------------------------------------------------
