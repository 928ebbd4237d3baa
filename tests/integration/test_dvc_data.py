"""The data stages under real DVC, in a temp git repo holding a copy of the project's dvc.yaml and code.

``python -m pipeline.stages`` runs from the temp repo, so it imports the copied code (the working directory
comes first on ``sys.path``); the venv's bin goes first on PATH so DVC's ``python`` is the venv's.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from config.layout import ProjectLayout
from data.collect import ensure_feedback_dir
from data.dataset import Dataset
from tests.support import copy_project, project_plan
from tests.support import dvc as _dvc

pytestmark = pytest.mark.integration

OUTPUTS = ("data/raw", "data/labeled", "data/prepared")
DATA_STAGES = ("collect", "label", "prepare")


def _edit_plan(project: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = project / "plan.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _make_project(directory: Path) -> Path:
    """A git + DVC copy of the project (code, dvc.yaml, .dvc/config with remote var/dvc-remote), a small plan,
    and an empty DVC-tracked data/feedback (the collect stage's dependency, as in the project)."""
    raw = project_plan(
        lambda raw: raw["data"].update(max_samples=300, min_samples_per_class=10, reference_size=50)
    )
    project = copy_project(directory, raw)
    ensure_feedback_dir(ProjectLayout.at(project))
    _dvc(project, "add", "-q", "data/feedback")
    return project


def _digests(project: Path) -> dict[str, str]:
    return {
        path.relative_to(project).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for output in OUTPUTS
        for path in sorted((project / output).rglob("*"))
        if path.is_file()
    }


def _ran(output: str) -> list[str]:
    return [stage for stage in DATA_STAGES if f"Running stage '{stage}'" in output]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project after its first ``dvc repro prepare``: all three data stages ran."""
    project = _make_project(tmp_path_factory.mktemp("dvc") / "project")
    first = _dvc(project, "repro", "prepare")
    assert _ran(first.stdout) == list(DATA_STAGES), first.stdout
    assert (project / "data/prepared/train.npz").is_file()
    assert (project / "dvc.lock").is_file()
    return project


def test_second_repro_skips_every_stage(project):
    again = _dvc(project, "repro", "prepare")
    assert _ran(again.stdout) == []
    for stage in DATA_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again.stdout


def test_changing_the_split_seed_reruns_prepare_only(project):
    before = _digests(project)
    raw_mtime = (project / "data/raw/samples.npz").stat().st_mtime_ns

    _edit_plan(project, lambda raw: raw["data"]["split"].update(seed=7))
    status = _dvc(project, "status", "--with-deps", "prepare").stdout
    assert "prepare:" in status and "collect:" not in status and "label:" not in status
    result = _dvc(project, "repro", "prepare")

    assert _ran(result.stdout) == ["prepare"], result.stdout
    after = _digests(project)
    assert (project / "data/raw/samples.npz").stat().st_mtime_ns == raw_mtime
    assert {k: v for k, v in after.items() if not k.startswith("data/prepared")} == {
        k: v for k, v in before.items() if not k.startswith("data/prepared")
    }
    assert after["data/prepared/test.npz"] != before["data/prepared/test.npz"]  # a different split
    assert "up to date" in _dvc(project, "status", "--with-deps", "prepare").stdout


def test_a_new_label_file_reruns_label_and_its_descendant_not_collect(project):
    before = _digests(project)
    (project / "data/annotations/fixes.csv").write_text("sample_id,label,annotator\ndigits-00000,7,ann\n")
    _edit_plan(
        project, lambda raw: raw["data"]["labeling"].update(annotations=["data/annotations/fixes.csv"])
    )

    result = _dvc(project, "repro", "prepare")

    assert _ran(result.stdout) == ["label", "prepare"], result.stdout
    after = _digests(project)
    assert after["data/raw/samples.npz"] == before["data/raw/samples.npz"]
    assert after["data/labeled/samples.npz"] != before["data/labeled/samples.npz"]


def test_new_feedback_reruns_collect_which_appends_it(project):
    raw = Dataset.load(project / "data/raw", "samples")
    features = np.random.default_rng(9).uniform(0, 16, (4, 8, 8)).astype("float32")
    ids = np.array([f"feedback-r{i}" for i in range(4)])
    Dataset(features, np.array([1, 2, 3, 4]), ids, raw.meta).save(project / "data/feedback", "samples")
    _dvc(project, "add", "-q", "data/feedback")  # what the retrain flow does after exporting

    result = _dvc(project, "repro", "prepare")

    assert _ran(result.stdout) == list(DATA_STAGES), result.stdout
    merged = Dataset.load(project / "data/raw", "samples")
    assert len(merged) == len(raw) + 4 and merged.sample_ids[-4:].tolist() == ids.tolist()
    assert set(ids) <= set(Dataset.load(project / "data/labeled", "samples").sample_ids.tolist())


def test_push_then_pull_restores_identical_files(project):
    before = _digests(project)
    # The data stages' outputs only: the training stages after them have not run here.
    pushed = _dvc(project, "push", "--with-deps", "prepare")
    assert (project / "var/dvc-remote").is_dir(), pushed.stdout

    for output in OUTPUTS:
        shutil.rmtree(project / output)
    shutil.rmtree(project / ".dvc/cache")
    _dvc(project, "pull", "--with-deps", "prepare")

    assert _digests(project) == before
    assert _ran(_dvc(project, "repro", "prepare").stdout) == []


def test_bad_labels_stop_the_pipeline_with_the_message(tmp_path):
    project = _make_project(tmp_path / "bad")
    (project / "data/annotations/batch.csv").write_text("sample_id,label\ndigits-00003,ten\n")
    _edit_plan(
        project, lambda raw: raw["data"]["labeling"].update(annotations=["data/annotations/batch.csv"])
    )

    result = _dvc(project, "repro", "prepare", check=False)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "data/annotations/batch.csv: unknown classes: expected one of" in output
    assert "row 1 (digits-00003: 'ten')" in output
    assert "Traceback" not in output
    assert "Running stage 'prepare'" not in output
