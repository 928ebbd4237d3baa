"""Where training runs: CPU, one GPU, or MirroredStrategy over several, with optional mixed precision.

tf.distribute appears here (device placement), never in model code; on other Keras backends the strategy is
None and the backend's own device placement applies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras

from config.plan import ResourcesSection

from .errors import AcceleratorError

__all__ = ["Accelerator", "AcceleratorError", "select_accelerator"]


@dataclass(frozen=True)
class Accelerator:
    """Where training runs. ``strategy`` is a tf.distribute strategy, or None for the default device."""

    kind: str  # "cpu" or "gpu"
    devices: int
    mixed_precision: bool
    strategy: Any = None

    def describe(self) -> str:
        """A short label for run tags: ``cpu``, ``gpu``, ``gpu x2 mirrored+mixed_float16``."""
        label = self.kind if self.devices <= 1 else f"{self.kind} x{self.devices} mirrored"
        return f"{label}+mixed_float16" if self.mixed_precision else label

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build (and compile) the model inside this scope: the dtype policy and strategy apply to it."""
        previous = keras.mixed_precision.global_policy()
        if self.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            with self.strategy.scope() if self.strategy is not None else contextlib.nullcontext():
                yield
        finally:
            keras.mixed_precision.set_global_policy(previous)


def select_accelerator(resources: ResourcesSection) -> Accelerator:
    """Pick the device(s) for ``resources.accelerator``.

    Args:
        resources: the plan's resources section.

    Returns:
        The accelerator: CPU, one GPU, or MirroredStrategy over several GPUs.

    Raises:
        AcceleratorError: ``gpu`` was asked for and no GPU is visible.
    """
    gpus = _visible_gpus()
    if resources.accelerator == "cpu":
        if not gpus or _hide_gpus():
            return Accelerator(kind="cpu", devices=1, mixed_precision=False)
        import tensorflow as tf  # GPUs already initialised: pin the work to the CPU instead

        return Accelerator(
            kind="cpu", devices=1, mixed_precision=False, strategy=tf.distribute.OneDeviceStrategy("/cpu:0")
        )
    if resources.accelerator == "gpu" and not gpus:
        raise AcceleratorError(
            "resources.accelerator: Expected at least one visible GPU for accelerator 'gpu'. Received none "
            f"(Keras backend {keras.backend.backend()!r}). Set it to 'auto' or 'cpu', or check the "
            "CUDA install and CUDA_VISIBLE_DEVICES."
        )
    if not gpus:
        return Accelerator(kind="cpu", devices=1, mixed_precision=False)
    strategy = None
    if len(gpus) > 1 and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    return Accelerator(
        kind="gpu", devices=len(gpus), mixed_precision=resources.mixed_precision, strategy=strategy
    )


def _visible_gpus() -> list[Any]:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return list(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    return []


def _hide_gpus() -> bool:
    """Hide GPUs from TensorFlow; False when it's too late (already initialised) or not TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        return False
    return True
