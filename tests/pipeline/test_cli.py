"""The `lifecycle plan` command: exit codes and what it prints (real plans, real sklearn sources)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIFECYCLE_ROOT", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("LIFECYCLE_API_KEY", raising=False)
    return tmp_path


def write_plan(project: Path, change=None) -> Path:
    raw: dict[str, Any] = yaml.safe_load((ROOT / "plan.yaml").read_text())
    raw = copy.deepcopy(raw)
    if change:
        change(raw)
    path = project / "plan.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])

    assert result.exit_code == 0
    assert "plan" in result.output and "run" in result.output


def test_viable_default_plan_exits_0_with_both_tables(project: Path) -> None:
    path = write_plan(project)

    result = runner.invoke(app, ["plan", "--plan", str(path)])

    assert result.exit_code == 0, result.output
    assert "digits-classifier" in result.output
    assert "sklearn:digits: 1797 samples" in result.output
    assert "majority-class baseline 10.2%" in result.output
    assert "not viable" not in result.output and "viable" in result.output


def test_plan_defaults_to_plan_yaml_of_the_root(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plan(project)
    monkeypatch.chdir(project)

    result = runner.invoke(app, ["plan"])

    assert result.exit_code == 0, result.output
    assert f"plan {project.resolve() / 'plan.yaml'}" in result.output


def test_invalid_plan_exits_2_naming_file_and_field(project: Path) -> None:
    def change(raw: dict[str, Any]) -> None:
        raw["train"]["optimizer"]["learning_rate"] = -1
        raw["data"]["split"]["train"] = 0.9

    path = write_plan(project, change)

    result = runner.invoke(app, ["plan", "--plan", str(path)])

    assert result.exit_code == 2
    assert f"{path}: train.optimizer.learning_rate: must be > 0, got -1" in result.output
    assert f"{path}: data.split: train + val + test must sum to 1, got 1.2" in result.output
    assert "viability" not in result.output


def test_missing_plan_exits_2(project: Path) -> None:
    result = runner.invoke(app, ["plan", "--plan", str(project / "absent.yaml")])

    assert result.exit_code == 2
    assert "absent.yaml: can't read the plan: No such file or directory" in result.output


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            lambda raw: raw["resources"].update(accelerator="gpu"),
            "resources.accelerator is 'gpu', but",
        ),
        (
            lambda raw: raw["data"].update(min_samples_per_class=500),
            "data.min_samples_per_class is 500, got '8': 174",
        ),
        (
            lambda raw: (
                raw["data"].update(source="sklearn:breast_cancer", classes=None)
                or raw["success"].update(min={"accuracy": 0.6})
            ),
            "at or below the majority-class baseline 62.7%",
        ),
        (lambda raw: raw["data"].update(source="images:no/such/folder"), "images:no/such/folder"),
    ],
    ids=["gpu-without-gpu", "too-few-samples", "target-below-baseline", "source-missing"],
)
def test_not_viable_plan_exits_1_with_the_failed_check(project: Path, change, fragment: str) -> None:
    path = write_plan(project, change)

    result = runner.invoke(app, ["plan", "--plan", str(path)])

    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "not viable" in result.output
    assert fragment in " ".join(result.output.split())


def test_placeholder_api_key_exits_2(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_API_KEY", "changeme")

    result = runner.invoke(app, ["plan", "--plan", str(write_plan(project))])

    assert result.exit_code == 2
    assert "settings: LIFECYCLE_API_KEY: LIFECYCLE_API_KEY must be a real secret" in result.output


def test_run_with_invalid_plan_exits_2_before_starting_prefect(project: Path) -> None:
    path = write_plan(project, lambda raw: raw["train"].update(epochs=0))

    result = runner.invoke(app, ["run", "--plan", str(path)])

    assert result.exit_code == 2
    assert f"{path}: train.epochs: must be > 0, got 0" in result.output


def test_run_with_unknown_phase_exits_2_before_starting_prefect(project: Path) -> None:
    result = runner.invoke(app, ["run", "--plan", str(write_plan(project)), "--until", "serve"])

    assert result.exit_code == 2
    assert "'serve' is not one of 'data', 'train', 'deploy'" in " ".join(result.output.split())
    assert not (project / "var").exists()


def test_run_phases_are_the_flow_phases() -> None:
    from pipeline.cli import RUN_PHASES
    from pipeline.flows import PHASES

    assert RUN_PHASES == PHASES


def test_run_with_a_plan_other_than_the_dvc_params_file_exits_2(project: Path) -> None:
    write_plan(project)
    other = project / "experiments" / "wide.yaml"
    other.parent.mkdir()
    other.write_text((project / "plan.yaml").read_text())

    result = runner.invoke(app, ["run", "--plan", str(other)])

    assert result.exit_code == 2
    assert "the DVC stages read their parameters from" in result.output
    assert not (project / "var").exists()
