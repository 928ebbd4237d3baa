"""The DVC stage task on a tiny real DVC project (called as a plain function; the flow is integration)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import zc.lockfile
from prefect.states import Failed

from config.layout import ProjectLayout
from config.settings import Settings
from pipeline.dvc import StageError, TransientStageError, dvc_environment
from pipeline.flows import resolve_plan_path, retry_when_transient, run_dvc_stage


def test_stage_runs_then_is_skipped_when_nothing_changed(dvc_project: Path) -> None:
    first = run_dvc_stage.fn("make", ProjectLayout.at(dvc_project))
    second = run_dvc_stage.fn("make", ProjectLayout.at(dvc_project))

    assert first.ran and not second.ran
    assert (dvc_project / "runs.log").read_text() == "make\n"
    assert [(o.path, o.detail) for o in first.outputs] == [("data/made/samples.npz", "12 samples")]
    assert first.outputs[0].size_bytes == (dvc_project / "data/made/samples.npz").stat().st_size
    assert "make" in (dvc_project / "dvc.lock").read_text()


def test_changed_plan_key_reruns_the_stage(dvc_project: Path) -> None:
    run_dvc_stage.fn("make", ProjectLayout.at(dvc_project))
    plan = dvc_project / "plan.yaml"
    plan.write_text(plan.read_text().replace("sklearn:digits", "sklearn:breast_cancer"))

    assert run_dvc_stage.fn("make", ProjectLayout.at(dvc_project)).ran


def test_failing_stage_error_carries_the_stage_message(dvc_project: Path) -> None:
    run_dvc_stage.fn("make", ProjectLayout.at(dvc_project))
    (dvc_project / "BAD").write_text("")

    with pytest.raises(StageError) as caught:
        run_dvc_stage.fn("check", ProjectLayout.at(dvc_project))

    assert not isinstance(caught.value, TransientStageError)
    assert caught.value.stage == "check" and caught.value.returncode != 0
    assert "data/made/samples.npz: rows 3, 7: NaN in features (rule: values must be finite)" in str(
        caught.value
    )
    assert "failed to reproduce 'check'" in caught.value.tail


def test_locked_repository_is_a_transient_error(dvc_project: Path) -> None:
    lock = zc.lockfile.LockFile(str(dvc_project / ".dvc/tmp/lock"))
    try:
        with pytest.raises(TransientStageError, match="Unable to acquire lock"):
            run_dvc_stage.fn("make", ProjectLayout.at(dvc_project))
    finally:
        lock.close()
    assert not (dvc_project / "runs.log").exists()


def test_only_transient_failures_are_retried() -> None:
    assert retry_when_transient(None, None, Failed(data=TransientStageError("make", 255, "lock")))
    assert not retry_when_transient(None, None, Failed(data=StageError("make", 255, "NaN in features")))
    assert not retry_when_transient(None, None, Failed(data=ValueError("other")))


def test_stage_environment_puts_this_interpreter_first(dvc_project: Path) -> None:
    environment = dvc_environment()

    assert environment["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_plan_must_be_the_dvc_params_file(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path)

    assert resolve_plan_path("plan.yaml", settings) == tmp_path.resolve() / "plan.yaml"
    assert resolve_plan_path(tmp_path / "plan.yaml", settings) == tmp_path.resolve() / "plan.yaml"
    with pytest.raises(ValueError, match=r"the DVC stages read their parameters from .*plan\.yaml"):
        resolve_plan_path("experiments/other.yaml", settings)


def test_lifecycle_refuses_an_unknown_phase_before_doing_anything() -> None:
    from pipeline.flows import lifecycle

    with pytest.raises(ValueError, match="until: expected one of data, train, deploy, got 'serve'"):
        lifecycle.fn(plan_path="plan.yaml", until="serve")
