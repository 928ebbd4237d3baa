"""DVC outputs vs MLflow state: train is forced when the registry lacks the version train.json names.

A tiny real project: git + DVC, one ``train`` stage whose script logs a real MLflow run (sqlite in the
project's var/), registers a version and writes ``artifacts/train.json`` like the real stage.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from config.settings import Settings
from models.client import tracking_client
from pipeline.flows import check_train_record, run_dvc_stage, unregistered_training
from tests.support import init_git_dvc

TRAIN_SCRIPT = """\
import json, pathlib
import mlflow
from mlflow import MlflowClient

with mlflow.start_run() as run:
    mlflow.log_param("epochs", 1)
client = MlflowClient()
if not client.search_registered_models(filter_string="name='tiny'"):
    client.create_registered_model("tiny")
version = client.create_model_version("tiny", f"runs:/{run.info.run_id}/model", run.info.run_id)
pathlib.Path("artifacts").mkdir(exist_ok=True)
record = {"run_id": run.info.run_id, "model_name": "tiny", "version": str(version.version)}
pathlib.Path("artifacts/train.json").write_text(json.dumps(record))
with open("runs.log", "a") as runs:
    runs.write("train\\n")
"""

DVC_YAML = """\
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    outs: [artifacts/train.json]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Settings]:
    root = tmp_path / "project"
    root.mkdir()
    (root / "train.py").write_text(TRAIN_SCRIPT)
    (root / "dvc.yaml").write_text(DVC_YAML)
    init_git_dvc(root, project_remote=False)
    settings = Settings(root=root)
    settings.var_dir.mkdir()
    # train.py stands in for the train stage: it logs to the project's store through MLflow's environment.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.resolved_tracking_uri)
    return root, settings


def _runs(root: Path) -> int:
    return (root / "runs.log").read_text().count("train")


def test_a_deleted_registry_forces_the_train_stage(project, caplog, monkeypatch):
    root, settings = project
    layout = settings.layout
    assert unregistered_training(tracking_client(settings), layout) is None  # never trained: nothing to check
    assert run_dvc_stage.fn("train", layout).ran
    assert unregistered_training(tracking_client(settings), layout) is None  # v1 is registered from its run

    # The MLflow state gone, the DVC outputs kept. A fresh var folder: this process's MLflow keeps its sqlite
    # engine per URI, so a deleted DB would still answer here (a new `lifecycle run` process wouldn't).
    shutil.rmtree(root / "var")
    fresh = Settings(root=root, var_dir=root / "var-fresh")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh.resolved_tracking_uri)
    assert not run_dvc_stage.fn("train", layout).ran  # what DVC alone does: "up to date"
    with caplog.at_level(logging.WARNING, logger="lifecycle"):
        reason = check_train_record.fn(fresh)
    assert reason is not None and "tiny v1" in reason and "the registry does not hold" in reason
    assert "forcing the train stage (dvc repro --force --single-item train)" in caplog.text

    forced = run_dvc_stage.fn("train", layout, force=reason is not None)

    assert forced.ran and _runs(root) == 2
    fresh_client = tracking_client(fresh)
    assert unregistered_training(fresh_client, layout) is None  # train.json names what the new registry holds
    assert not run_dvc_stage.fn("train", layout).ran


def test_a_version_registered_from_another_run_is_a_mismatch(project):
    root, settings = project
    run_dvc_stage.fn("train", settings.layout)
    record = json.loads((root / "artifacts/train.json").read_text())
    (root / "artifacts/train.json").write_text(json.dumps(record | {"run_id": "0123abc"}))

    reason = unregistered_training(tracking_client(settings), settings.layout)

    assert reason is not None
    assert f"tiny v1 from run 0123abc, but the registry's v1 comes from run {record['run_id']}" in reason


def test_an_unreadable_train_record_is_a_mismatch(project):
    root, settings = project
    (root / "artifacts").mkdir()
    (root / "artifacts/train.json").write_text('{"model_name": "tiny"}')

    reason = unregistered_training(tracking_client(settings), settings.layout)

    assert reason is not None and "expected model_name, version and run_id" in reason
