"""GPU detection from the driver's files and the rough training-time estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.plan import LayerSpec, load_plan
from pipeline.resources import detect_gpus, estimate_training_seconds, forward_flops, tensorflow_has_cuda

ROOT = Path(__file__).resolve().parents[2]


def driver_folder(tmp_path: Path, models: list[str]) -> Path:
    """The layout the NVIDIA driver writes: /proc/driver/nvidia/gpus/<pci address>/information."""
    gpus = tmp_path / "gpus"
    for index, model in enumerate(models):
        folder = gpus / f"0000:0{index}:00.0"
        folder.mkdir(parents=True)
        (folder / "information").write_text(f"Model: \t\t {model}\nIRQ:   \t\t 42\n")
    return gpus


def test_no_driver_and_no_nvidia_smi_means_no_gpu(tmp_path: Path) -> None:
    report = detect_gpus(tmp_path / "absent", environ={}, nvidia_smi=None)

    assert report.devices == [] and not report.usable
    assert report.reason == "no NVIDIA GPU found"


def test_gpus_from_driver_files_usable_with_a_cuda_build(tmp_path: Path) -> None:
    report = detect_gpus(driver_folder(tmp_path, ["NVIDIA H100 80GB HBM3"]), environ={}, cuda_build=True)

    assert report.devices == ["NVIDIA H100 80GB HBM3"]
    assert report.usable


@pytest.mark.parametrize(
    ("environ", "cuda_build", "reason"),
    [
        ({"CUDA_VISIBLE_DEVICES": ""}, True, "2 GPU(s) hidden by CUDA_VISIBLE_DEVICES"),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, True, "2 GPU(s) hidden by CUDA_VISIBLE_DEVICES"),
        ({}, False, "2 GPU(s), but TensorFlow here is a CPU-only build"),
    ],
)
def test_gpus_present_but_not_usable(
    tmp_path: Path, environ: dict[str, str], cuda_build: bool, reason: str
) -> None:
    report = detect_gpus(driver_folder(tmp_path, ["A", "B"]), environ=environ, cuda_build=cuda_build)

    assert report.devices == ["A", "B"]
    assert not report.usable and report.reason == reason


def test_installed_tensorflow_cpu_is_not_a_cuda_build() -> None:
    # The pinned stack installs tensorflow-cpu: its build info says no CUDA, read without importing it.
    assert tensorflow_has_cuda() is False


def test_forward_flops_of_mlp_and_cnn() -> None:
    mlp = [
        LayerSpec(type="Input", shape=[8, 8]),
        LayerSpec(type="Flatten"),
        LayerSpec(type="Dense", units=10),
    ]
    assert forward_flops(mlp, [8, 8]) == 2 * 64 * 10

    cnn = [
        LayerSpec(type="Conv2D", filters=4, kernel_size=3, padding="same"),
        LayerSpec(type="MaxPooling2D", pool_size=2),
        LayerSpec(type="GlobalAveragePooling2D"),
        LayerSpec(type="Dense", units=2),
    ]
    # conv: 28*28 outputs x 3*3 kernel x 1 channel x 4 filters; pooling 14x14x4; GAP -> 4; dense 4 -> 2.
    assert forward_flops(cnn, [28, 28]) == 2 * 28 * 28 * 9 * 4 + 2 * 4 * 2


def test_estimate_grows_with_epochs_and_is_lower_on_gpu() -> None:
    plan = load_plan(ROOT / "plan.yaml")
    layers = plan.model.layers

    cpu = estimate_training_seconds(layers, [8, 8], 1797, plan, "cpu")
    longer = plan.model_copy(update={"train": plan.train.model_copy(update={"epochs": 80})})

    assert 10 < cpu < 120
    assert estimate_training_seconds(layers, [8, 8], 1797, longer, "cpu") > cpu
    assert estimate_training_seconds(layers, [8, 8], 1797, plan, "gpu") < cpu
