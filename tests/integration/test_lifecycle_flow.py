"""The lifecycle flow's data phase under real Prefect, on a temp git + DVC copy of the project, real stages.

The flow runs with ``until="data"``: training and later phases have their own integration tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import copy_project, project_plan

pytestmark = pytest.mark.integration


def make_project(directory: Path, change=None) -> Path:
    """A git + DVC copy of the project (code, dvc.yaml, .dvc/config) with a small plan."""

    def small(raw: dict[str, Any]) -> None:
        raw["data"].update(max_samples=300, min_samples_per_class=10, reference_size=50)
        if change:
            change(raw)

    return copy_project(directory, project_plan(small))


@pytest.fixture
def run_in(monkeypatch: pytest.MonkeyPatch, prefect: None):
    """Run the lifecycle flow with a project as LIFECYCLE_ROOT."""
    from pipeline.flows import lifecycle

    def run(project: Path):
        monkeypatch.setenv("LIFECYCLE_ROOT", str(project))
        return lifecycle(plan_path="plan.yaml", until="data")

    return run


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, prefect: None) -> tuple[Path, Any]:
    """A project the lifecycle flow has run on once, and the flow's summary."""
    from pipeline.flows import lifecycle

    project = make_project(tmp_path_factory.mktemp("prepared") / "project")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIFECYCLE_ROOT", str(project))
        return project, lifecycle(plan_path="plan.yaml", until="data")


def test_flow_runs_the_data_stages_and_prepares_the_splits(prepared: tuple[Path, Any]) -> None:
    project, summary = prepared

    assert summary.viability.viable
    assert [(stage.stage, stage.ran) for stage in summary.stages] == [
        ("collect", True),
        ("label", True),
        ("prepare", True),
    ]
    sizes = {}
    for split in ("train", "val", "test", "reference"):
        with np.load(project / "data" / "prepared" / f"{split}.npz") as arrays:
            sizes[split] = len(arrays["labels"])
            assert arrays["features"].shape[1:] == (8, 8)
    assert sizes["train"] + sizes["val"] + sizes["test"] == 300
    assert sizes["reference"] == 50
    produced = {output.path: output for output in summary.outputs}
    assert produced["data/prepared/train.npz"].detail == f"{sizes['train']} samples"
    assert produced["data/raw/samples.npz"].detail == "300 samples"
    assert "data/prepared/meta.json" in produced
    assert (project / "dvc.lock").is_file()


def test_second_run_skips_every_stage(prepared: tuple[Path, Any], run_in) -> None:
    project, _ = prepared

    again = run_in(project)

    assert [stage.ran for stage in again.stages] == [False, False, False]
    assert {output.path for output in again.outputs} >= {
        "data/prepared/train.npz",
        "data/labeled/samples.npz",
    }


def test_unknown_label_in_annotations_stops_the_flow_at_the_label_stage(tmp_path: Path, run_in) -> None:
    from pipeline.flows import StageError

    def change(raw: dict[str, Any]) -> None:
        raw["data"]["labeling"]["annotations"] = ["data/annotations/round1.csv"]

    project = make_project(tmp_path / "project", change)
    (project / "data" / "annotations" / "round1.csv").write_text("sample_id,label\ndigits-00000,eleven\n")

    with pytest.raises(StageError) as caught:
        run_in(project)

    assert caught.value.stage == "label"
    assert "data/annotations/round1.csv" in caught.value.tail
    assert "eleven" in caught.value.tail
    assert "Traceback" not in caught.value.tail
    assert not (project / "data" / "labeled" / "samples.npz").exists()
    assert not (project / "data" / "prepared").exists()


def test_table_with_nan_stops_the_flow_before_any_stage(tmp_path: Path, run_in) -> None:
    from pipeline.flows import NotViableError

    def change(raw: dict[str, Any]) -> None:
        raw["data"].update(source="table:table.csv", target="label", classes=["no", "yes"], max_samples=None)
        raw["model"]["layers"] = [{"type": "Input", "shape": [2]}, {"type": "Dense", "units": 2}]
        raw["success"]["min"] = {"accuracy": 0.8}

    project = make_project(tmp_path / "project", change)
    rows = ["a,b,label"] + [f"{i % 7}.5,{i % 5},{'yes' if i % 2 else 'no'}" for i in range(40)]
    rows[6] = "1.5,nan,yes"
    (project / "table.csv").write_text("\n".join(rows) + "\n")

    with pytest.raises(NotViableError) as caught:
        run_in(project)

    message = str(caught.value)
    assert message.startswith(f"{project / 'plan.yaml'}: the plan is not viable:")
    assert "data checks: table:table.csv: non-finite values" in message
    assert "(rows 5)" in message
    assert not (project / "data" / "raw").exists()


def test_lifecycle_run_command_ends_with_what_it_produced(tmp_path: Path, prepared: tuple[Path, Any]) -> None:
    # A copy of the prepared project (git, DVC cache, dvc.lock and outputs): the command's own path is
    # under test here (settings, ephemeral Prefect, progress, summary); the stages were run above.
    project = tmp_path / "project"
    shutil.copytree(prepared[0], project, ignore=shutil.ignore_patterns("var"))
    environment = {
        **os.environ,
        "LIFECYCLE_ROOT": str(project),
        "COLUMNS": "160",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    for name in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_LOGGING_LEVEL"):
        environment.pop(name, None)

    result = subprocess.run(
        [str(Path(sys.executable).parent / "lifecycle"), "run", "--until", "data"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=400,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert "Prefect ephemeral, no server" in output
    for line in ("collect: up to date, skipped", "label: up to date", "prepare: up to date"):
        assert line in output
    assert "viable" in output and "not viable" not in output
    assert "data/prepared/train.npz" in output and "data/prepared/reference.npz" in output
    assert "50 samples" in output
    assert "done in" in output
    # Prefect's state lives under var/prefect of the project; its own logs stay quiet.
    assert (project / "var" / "prefect").is_dir()
    assert "| INFO" not in output and "Traceback" not in result.stderr
