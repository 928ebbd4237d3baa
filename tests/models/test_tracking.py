"""Tracking: a real run in a tmp MLflow store holds params, epoch metrics, artifacts, lineage, a version."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import keras
import mlflow
import numpy as np
import pytest
import yaml

from data.dataset import DatasetMeta
from models.lineage import dvc_data_hashes, file_sha256, git_state
from models.run_artifacts import history_rows
from models.tracking import epoch_metrics, flatten_params, log_training_run


def test_run_holds_params_epoch_metrics_artifacts_and_lineage(trained_version, tiny_plan, mlflow_env, client):
    version, result = trained_version
    run = client.get_run(version.run_id)

    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "tiny-project"
    assert experiment.artifact_location == mlflow_env.resolved_artifacts_dir.as_uri()
    params = run.data.params
    assert params["train.optimizer.name"] == "adam"
    assert params["model.layers.2.units"] == "16"
    assert params["model.layers.0.shape"] == "[8, 8]"
    assert params["deploy.model_name"] == "tiny-model"
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(version.run_id, name)
        assert [m.step for m in history] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx(result.history[name])
    assert run.data.metrics["epochs_run"] == 3
    assert run.data.metrics["final_val_accuracy"] == pytest.approx(result.final_metrics["final_val_accuracy"])
    assert run.data.metrics["train_seconds"] > 0

    artifacts = {item.path for item in client.list_artifacts(version.run_id)}
    assert {
        "model_summary.txt",
        "learning_curves.png",
        "plan.yaml",
        "dataset_meta.json",
        "history.csv",
    } <= artifacts
    meta_text = Path(client.download_artifacts(version.run_id, "dataset_meta.json"))
    assert DatasetMeta.from_json(meta_text.read_text()).classes == ["0", "1", "2"]
    png = Path(client.download_artifacts(version.run_id, "learning_curves.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    tags = run.data.tags
    assert (
        tags["git_commit"] == "unknown" and tags["git_dirty"] == "unknown"
    )  # tmp_path is not a git checkout
    assert tags["plan_hash"] == tiny_plan.digest()
    assert tags["accelerator"] == "cpu"
    assert tags["data_md5"] == "{}"  # no dvc.lock in tmp_path
    assert tags["version.keras"] == keras.__version__
    assert tags["version.mlflow"] == mlflow.__version__
    assert tags["version.tensorflow"][0].isdigit() and tags["version.numpy"] == np.__version__
    assert tags["model_sha256"] == version.sha256


def test_registered_version_matches_the_model_file(
    trained_version, tiny_plan, tiny_splits, client, mlflow_env, monkeypatch
):
    version, result = trained_version

    registered = client.get_model_version("tiny-model", version.version)
    assert version.version == "1" and version.model_uri == "models:/tiny-model/1"
    assert registered.run_id == version.run_id
    assert registered.tags["run_id"] == version.run_id
    assert registered.tags["model_sha256"] == version.sha256
    assert registered.tags["plan_hash"] == tiny_plan.digest()
    assert registered.tags["git_commit"] == "unknown"
    assert json.loads(registered.tags["data_md5"]) == {}

    # The registry holds the native .keras file with that sha256, and the local copy is byte-identical.
    # MLflow's own tools find it by the models:/ URI, as `mlflow models serve` users do (store in the env).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_env.resolved_tracking_uri)
    downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.model_uri))
    assert file_sha256(downloaded / "data" / "model.keras") == version.sha256
    assert file_sha256(version.model_path) == version.sha256
    mlmodel = yaml.safe_load((downloaded / "MLmodel").read_text())
    assert mlmodel["flavors"]["keras"]["save_exported_model"] is False
    assert "signature" in mlmodel and "saved_input_example_info" in mlmodel
    assert (downloaded / "input_example.json").is_file()
    # The registered model predicts what the trained model predicts, on raw inputs.
    loaded = mlflow.keras.load_model(version.model_uri)
    raw = tiny_splits["test"].features[:8]
    np.testing.assert_allclose(np.asarray(loaded(raw)), np.asarray(result.model(raw)), rtol=1e-6)


def test_epoch_metrics_go_in_one_batch_and_each_run_adds_a_version(
    trained_version, tiny_plan, tiny_plan_path, tiny_splits, client, tmp_path, monkeypatch
):
    _, result = trained_version
    calls: list[tuple[list, int]] = []
    real_log_batch = mlflow.MlflowClient.log_batch

    def counting_log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        calls.append((list(metrics), len(params)))
        return real_log_batch(self, run_id, metrics, params, tags, synchronous)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", counting_log_batch)
    second = log_training_run(
        client,
        tiny_plan,
        result,
        tiny_splits["train"].meta,
        plan_path=tiny_plan_path,
        root=tmp_path,
        input_example=tiny_splits["train"].features[:2],
    )

    # Every per-epoch number and the final ones go in one call (5 series x 3 epochs + 8 final numbers).
    # (MLflow itself later copies the run's latest metrics onto the logged model with another call.)
    epoch_calls = [metrics for metrics, _ in calls if any(metric.step > 1 for metric in metrics)]
    assert [len(metrics) for metrics in epoch_calls] == [5 * 3 + 8]
    assert all(n_params <= 100 for _, n_params in calls)  # MLflow's per-call limit
    assert sum(n for _, n in calls) == len(flatten_params(tiny_plan.model_dump(mode="json")))
    assert second.version == "2"


def test_lineage_reads_git_and_dvc_lock(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "dvc.lock").write_text(
        yaml.safe_dump(
            {
                "schema": "2.0",
                "stages": {
                    "prepare": {
                        "cmd": "python -m pipeline.stages prepare",
                        "deps": [{"path": "data/labeled", "hash": "md5", "md5": "aaa.dir"}],
                        "outs": [{"path": "data/prepared", "hash": "md5", "md5": "bbb.dir", "nfiles": 6}],
                    },
                    "collect": {"cmd": "c", "outs": [{"path": "data/raw", "hash": "md5", "md5": "ccc.dir"}]},
                    "train": {"cmd": "t", "outs": [{"path": "artifacts/model.keras", "md5": "ddd"}]},
                },
            }
        )
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "code.py"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=tmp_path, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()

    assert git_state(tmp_path) == (head, "false")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (head, "true")
    assert dvc_data_hashes(tmp_path / "dvc.lock") == {"data/prepared": "bbb.dir", "data/raw": "ccc.dir"}
    assert dvc_data_hashes(tmp_path / "missing.lock") == {}


def test_flatten_params_uses_dot_keys():
    flat = flatten_params({"a": {"b": 1, "c": [1, 2], "d": None}, "layers": [{"type": "Dense", "units": 3}]})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "layers.0.type": "Dense", "layers.0.units": "3"}


def test_epoch_metrics_and_history_rows_count_epochs_from_one():
    history = {"loss": [0.9, 0.5], "val_loss": [1.0, 0.7]}
    metrics = epoch_metrics(history, timestamp_ms=5)
    assert [(m.key, m.step, m.value) for m in metrics] == [
        ("loss", 1, 0.9),
        ("loss", 2, 0.5),
        ("val_loss", 1, 1.0),
        ("val_loss", 2, 0.7),
    ]
    assert history_rows(history) == [
        {"epoch": 1, "loss": 0.9, "val_loss": 1.0},
        {"epoch": 2, "loss": 0.5, "val_loss": 0.7},
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.integration
def test_lifecycle_ui_serves_the_run_and_the_registered_model(trained_version, mlflow_env, tmp_path):
    version, _ = trained_version
    port = free_port()
    env = {
        **os.environ,
        "LIFECYCLE_ROOT": str(tmp_path),
        "LIFECYCLE_VAR_DIR": str(mlflow_env.var_dir),
        "LIFECYCLE_UI_PORT": str(port),
    }
    lifecycle = Path(sys.executable).parent / "lifecycle"
    ui = subprocess.Popen(
        [str(lifecycle), "ui"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=(tmp_path / "ui.log").open("w"), text=True, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        assert ui.stdout is not None
        assert ui.stdout.readline().startswith(f"MLflow UI: {base}")
        deadline = time.monotonic() + 90
        while True:
            try:
                run = httpx.get(
                    f"{base}/api/2.0/mlflow/runs/get", params={"run_id": version.run_id}, timeout=5
                )
                break
            except httpx.TransportError:
                assert ui.poll() is None, "the UI process exited"
                assert time.monotonic() < deadline, "the UI did not answer within 90 s"
                time.sleep(0.5)
        model = httpx.get(
            f"{base}/api/2.0/mlflow/registered-models/get", params={"name": "tiny-model"}, timeout=5
        )
    finally:
        os.killpg(ui.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()

    assert run.status_code == 200
    body = run.json()["run"]
    assert body["info"]["run_id"] == version.run_id
    assert {"key": "model_sha256", "value": version.sha256} in body["data"]["tags"]
    assert model.status_code == 200
    latest = model.json()["registered_model"]["latest_versions"]
    assert [(v["version"], v["run_id"]) for v in latest] == [(version.version, version.run_id)]


def test_tracking_and_registry_use_the_client_never_mlflows_environment(
    trained_version, tiny_plan, tiny_plan_path, tiny_splits, client, tmp_path, monkeypatch
):
    from models.registry import alias_version, move_alias, read_ledger, resolve_model

    decoy = tmp_path / "decoy.db"  # where MLflow's own environment points: nothing may reach it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{decoy}")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{decoy}")
    _, result = trained_version

    second = log_training_run(
        client, tiny_plan, result, tiny_splits["train"].meta, plan_path=tiny_plan_path, root=tmp_path,
        input_example=tiny_splits["train"].features[:2],
    )  # fmt: skip
    move_alias(client, "tiny-model", "champion", second.version, action="promote", reason="test")
    resolved = resolve_model(client, "tiny-model", "champion", dst=tmp_path / "resolved")

    assert resolved.version == second.version == "2" and resolved.sha256 == second.sha256
    assert alias_version(client, "tiny-model") == "2" and len(read_ledger(client, "tiny-model")) == 1
    assert not decoy.exists()
