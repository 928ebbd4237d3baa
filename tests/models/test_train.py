"""train_model on tiny data: loss falls, determinism, the plan's callbacks, progress, the accelerator."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from config.plan import ResourcesSection, TrainSection
from models.accelerator import Accelerator, AcceleratorError, select_accelerator
from models.build import build_model
from models.train import EpochProgress, TimeBudget, make_dataset, train_model


def run(plan, splits, progress=None, **train_changes):
    train = TrainSection.model_validate({**plan.train.model_dump(), **train_changes})
    meta = splits["train"].meta
    return train_model(
        lambda: build_model(plan.model, meta, train),
        splits["train"],
        splits["val"],
        train,
        plan.resources,
        progress=progress or io.StringIO(),
    )


def test_loss_falls_and_the_run_is_recorded(tiny_plan, tiny_splits):
    result = run(tiny_plan, tiny_splits)

    assert result.epochs_run == 3 and result.stopped_by == "epochs"
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert all(len(values) == 3 for values in result.history.values())
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.final_metrics["final_val_accuracy"] > 0.9
    assert result.accelerator == "cpu"
    assert result.seconds > 0 and result.samples_per_second > 0


def test_same_plan_data_and_seed_give_identical_metrics(tiny_plan, tiny_splits):
    # A learning rate low enough that the run doesn't saturate, so differences would show.
    first = run(tiny_plan, tiny_splits, seed=3, optimizer={"name": "adam", "learning_rate": 0.0005})
    second = run(tiny_plan, tiny_splits, seed=3, optimizer={"name": "adam", "learning_rate": 0.0005})
    other_seed = run(tiny_plan, tiny_splits, seed=4, optimizer={"name": "adam", "learning_rate": 0.0005})

    assert first.history == second.history
    assert first.final_metrics == second.final_metrics
    assert other_seed.history["loss"] != first.history["loss"]


def test_early_stopping_stops_and_restores_the_best_weights(tiny_plan, tiny_splits):
    # min_delta no epoch can beat: the first epoch stays best, patience 1 stops after the second.
    result = run(
        tiny_plan,
        tiny_splits,
        epochs=6,
        early_stopping={"enabled": True, "monitor": "val_loss", "patience": 1, "min_delta": 100.0},
    )

    assert result.stopped_by == "early_stopping"
    assert result.epochs_run == 2
    assert result.best_epoch == 1
    assert result.final_metrics["final_val_loss"] == pytest.approx(result.history["val_loss"][0], rel=1e-4)


def test_reduce_lr_on_plateau_lowers_the_learning_rate(tiny_plan, tiny_splits):
    # So small a learning rate that val_loss plateaus at once.
    result = run(
        tiny_plan,
        tiny_splits,
        epochs=3,
        optimizer={"name": "sgd", "learning_rate": 1e-9},
        reduce_lr={"enabled": True, "monitor": "val_loss", "factor": 0.5, "patience": 1, "min_lr": 0},
    )

    rates = result.history["learning_rate"]
    assert rates[0] == pytest.approx(1e-9)
    assert rates[-1] < rates[0]


def test_time_budget_stops_training(tiny_plan, tiny_splits):
    plan = tiny_plan.model_copy(
        update={"resources": ResourcesSection(accelerator="cpu", time_budget_minutes=1e-5)}
    )
    result = run(plan, tiny_splits, epochs=50)

    assert result.stopped_by == "time_budget"
    assert result.epochs_run == 1


def test_time_budget_callback_counts_wall_time():
    now = [100.0]
    budget = TimeBudget(minutes=1, clock=lambda: now[0])

    class Model:
        stop_training = False

    budget.set_model(Model())
    budget.on_train_begin()
    now[0] = 159.0
    budget.on_train_batch_end(0)
    assert not budget.model.stop_training
    now[0] = 160.0
    budget.on_train_batch_end(1)
    assert budget.model.stop_training and budget.exhausted
    with pytest.raises(ValueError, match="Expected minutes > 0. Received 0"):
        TimeBudget(minutes=0)


def test_progress_prints_one_readable_line_per_epoch_with_eta():
    now = [0.0]
    stream = io.StringIO()
    progress = EpochProgress(epochs=4, stream=stream, clock=lambda: now[0])
    progress.on_train_begin()
    for epoch in range(2):
        progress.on_epoch_begin(epoch)
        now[0] += 2.0
        progress.on_epoch_end(epoch, {"loss": 0.5 / (epoch + 1), "val_accuracy": 0.9})

    assert stream.getvalue().splitlines() == [
        "epoch 1/4  loss 0.5  val_accuracy 0.9  2.0s  ETA 6s",
        "epoch 2/4  loss 0.25  val_accuracy 0.9  2.0s  ETA 4s",
    ]


def test_training_prints_progress(tiny_plan, tiny_splits):
    stream = io.StringIO()
    run(tiny_plan, tiny_splits, progress=stream, epochs=2)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2  ") and " val_loss " in lines[0] and "ETA" in lines[0]


def test_input_pipeline_is_seeded_and_batched():
    features = np.arange(40, dtype="float32").reshape(20, 2)
    labels = np.arange(20)

    def order(seed):
        return np.concatenate(
            [y.numpy() for _, y in make_dataset(features, labels, 8, shuffle_buffer=100, seed=seed)]
        )

    batches = [x.shape[0] for x, _ in make_dataset(features, labels, 8)]
    assert batches == [8, 8, 4]
    assert np.array_equal(order(1), order(1))
    assert not np.array_equal(order(1), order(2))
    assert sorted(order(1)) == list(range(20))


def test_accelerator_choice():
    assert select_accelerator(ResourcesSection(accelerator="cpu")).describe() == "cpu"
    # The test session hides GPUs (CUDA_VISIBLE_DEVICES=""): auto falls back to the CPU, gpu fails clearly.
    assert select_accelerator(ResourcesSection(accelerator="auto")).kind == "cpu"
    with pytest.raises(AcceleratorError, match="resources.accelerator: Expected at least one visible GPU"):
        select_accelerator(ResourcesSection(accelerator="gpu"))
    assert (
        Accelerator(kind="gpu", devices=2, mixed_precision=True).describe() == "gpu x2 mirrored+mixed_float16"
    )


@pytest.mark.integration
def test_train_stage_writes_its_outputs_and_registers(
    tiny_splits, tiny_plan_path, client, monkeypatch, capsys
):
    import csv
    import json

    from models.lineage import file_sha256
    from pipeline import stages

    root = tiny_plan_path.parent
    monkeypatch.setenv("LIFECYCLE_ROOT", str(root))
    for name in ("train", "val"):
        tiny_splits[name].save(root / "data" / "prepared", name)

    assert stages.main(["train", "--plan", str(tiny_plan_path)]) == 0

    record = json.loads((root / "artifacts" / "train.json").read_text())
    assert record["model_name"] == "tiny-model" and record["version"] == "1"
    assert record["epochs_run"] == 3 and record["stopped_by"] == "epochs" and record["accelerator"] == "cpu"
    assert file_sha256(root / "artifacts" / "model.keras") == record["sha256"]
    version = client.get_model_version("tiny-model", "1")
    assert version.tags["model_sha256"] == record["sha256"] and version.run_id == record["run_id"]
    metrics = json.loads((root / "reports" / "train_metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and 0 <= metrics["final_val_accuracy"] <= 1
    with (root / "reports" / "history.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"] and "val_loss" in rows[0]
    assert "epoch 3/3" in capsys.readouterr().out
    # The run logged the plan file itself (it is the plan the stage ran).
    plan_copy = client.download_artifacts(record["run_id"], "plan.yaml")
    assert Path(plan_copy).read_text() == tiny_plan_path.read_text()


def test_train_stage_reports_a_bad_model_without_a_traceback(
    tiny_splits, tiny_plan_path, mlflow_env, monkeypatch, capsys
):
    from pipeline import stages

    root = tiny_plan_path.parent
    monkeypatch.setenv("LIFECYCLE_ROOT", str(root))
    for name in ("train", "val"):
        tiny_splits[name].save(root / "data" / "prepared", name)
    tiny_plan_path.write_text(tiny_plan_path.read_text().replace("units: 3", "units: 5"))

    assert stages.main(["train", "--plan", str(tiny_plan_path)]) == 2

    error = capsys.readouterr().err
    assert "stage train failed:" in error
    assert "model.layers[3]: Expected the model's output shape (None, 3)" in error
    assert "Traceback" not in error
