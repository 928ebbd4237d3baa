"""What this machine offers for training, found without importing TensorFlow, and a rough time estimate."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from config.plan import LayerSpec, Plan

# Rough costs of Keras `fit` on small models, measured on a 2-core CPU; an estimate, not a promise.
STARTUP_SECONDS = 15.0
_STEP_SECONDS = {"cpu": 0.004, "gpu": 0.002}
_EPOCH_SECONDS = 0.1
_FLOPS_PER_SECOND = {"cpu": 5e9, "gpu": 2e12}


@dataclass(frozen=True)
class GpuReport:
    """GPUs this machine has, and whether TensorFlow here can use them."""

    devices: list[str]
    usable: bool
    reason: str


def detect_gpus(
    proc_dir: Path = Path("/proc/driver/nvidia/gpus"),
    environ: dict[str, str] | None = None,
    nvidia_smi: str | None = "nvidia-smi",
    cuda_build: bool | None = None,
) -> GpuReport:
    """Find NVIDIA GPUs (driver files, else ``nvidia-smi -L``) without importing TensorFlow.

    Args:
        proc_dir: where the NVIDIA driver lists GPUs, one folder per PCI address.
        environ: the environment (``CUDA_VISIBLE_DEVICES`` can hide GPUs); defaults to ``os.environ``.
        nvidia_smi: the ``nvidia-smi`` command to ask when the driver folder is absent; None not to ask.
        cuda_build: whether TensorFlow was built with CUDA; None reads it from the installed TensorFlow.

    Returns:
        The GPUs found, and whether TensorFlow here can use them, with the reason when not.
    """
    environ = dict(os.environ) if environ is None else environ
    devices = [_gpu_name(path) for path in sorted(proc_dir.iterdir())] if proc_dir.is_dir() else []
    if not devices and nvidia_smi and shutil.which(nvidia_smi):
        try:
            listing = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=10)
            devices = [line.strip() for line in listing.stdout.splitlines() if line.startswith("GPU")]
        except (OSError, subprocess.SubprocessError):
            devices = []
    if not devices:
        return GpuReport([], False, "no NVIDIA GPU found")
    if environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return GpuReport(devices, False, f"{len(devices)} GPU(s) hidden by CUDA_VISIBLE_DEVICES")
    if not (tensorflow_has_cuda() if cuda_build is None else cuda_build):
        return GpuReport(devices, False, f"{len(devices)} GPU(s), but TensorFlow here is a CPU-only build")
    return GpuReport(devices, True, f"{len(devices)} GPU(s): {', '.join(devices)}")


def _gpu_name(folder: Path) -> str:
    # The driver's `information` file has a line "Model: NVIDIA H100 ..."; the folder is the PCI address.
    information = folder / "information"
    if information.is_file():
        for line in information.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                return line.partition(":")[2].strip()
    return folder.name


def tensorflow_has_cuda() -> bool:
    """Whether the installed TensorFlow was built with CUDA, read from its build info without importing it."""
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return False
    build_info = Path(next(iter(spec.submodule_search_locations))) / "python/platform/build_info.py"
    return build_info.is_file() and "('is_cuda_build', True)" in build_info.read_text()


def estimate_training_seconds(
    layers: list[LayerSpec], input_shape: list[int], samples: int, plan: Plan, device: str
) -> float:
    """A rough upper bound on training time: every epoch run, per-step overhead plus the model's FLOPs."""
    n_train = max(1, int(samples * plan.data.split.train))
    n_val = max(1, int(samples * plan.data.split.val))
    steps = math.ceil(n_train / plan.train.batch_size)
    compute = 3 * forward_flops(layers, input_shape) * n_train / _FLOPS_PER_SECOND[device]
    validate = forward_flops(layers, input_shape) * n_val / _FLOPS_PER_SECOND[device]
    per_epoch = steps * _STEP_SECONDS[device] + compute + validate + _EPOCH_SECONDS
    return STARTUP_SECONDS + plan.train.epochs * per_epoch


def forward_flops(layers: list[LayerSpec], input_shape: list[int]) -> float:
    """Multiply-adds x2 of one sample's forward pass through a Sequential stack, from the layer specs."""
    shape = list(input_shape)
    flops = 0.0
    for layer in layers:
        if layer.type == "Input":
            shape = list(layer.shape or shape)
        elif layer.type == "Flatten":
            shape = [math.prod(shape)]
        elif layer.type == "Dense":
            flops += 2.0 * math.prod(shape) * (layer.units or 1)
            shape = [*shape[:-1], layer.units or 1]
        elif layer.type == "Conv2D":
            height, width, channels = _spatial(shape)
            kernel, stride = _pair(layer.kernel_size), _pair(layer.strides or 1)
            out_h = _out_size(height, kernel[0], stride[0], layer.padding)
            out_w = _out_size(width, kernel[1], stride[1], layer.padding)
            flops += 2.0 * out_h * out_w * kernel[0] * kernel[1] * channels * (layer.filters or 1)
            shape = [out_h, out_w, layer.filters or 1]
        elif layer.type == "MaxPooling2D":
            height, width, channels = _spatial(shape)
            pool = _pair(layer.pool_size or 2)
            stride = _pair(layer.strides or pool)
            out_h = _out_size(height, pool[0], stride[0], layer.padding)
            shape = [out_h, _out_size(width, pool[1], stride[1], layer.padding), channels]
        elif layer.type == "GlobalAveragePooling2D":
            shape = [shape[-1]]
        else:
            flops += math.prod(shape)
    return flops


def _spatial(shape: list[int]) -> tuple[int, int, int]:
    # Grey images come as (h, w): one channel.
    if len(shape) == 2:
        return shape[0], shape[1], 1
    height, width, channels = ([1, 1, 1] + shape)[-3:]
    return height, width, channels


def _pair(value: int | tuple[int, int] | None) -> tuple[int, int]:
    if value is None:
        return (1, 1)
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _out_size(size: int, window: int, stride: int, padding: str | None) -> int:
    if padding == "same":
        return max(1, math.ceil(size / stride))
    return max(1, (size - window) // stride + 1)
