"""Training: a seeded tf.data input pipeline, the plan's callbacks, and the accelerator the plan asks for.

tf.data appears here only, in the input pipeline (tf.distribute only in models/accelerator.py); the model
itself (models/build.py) is plain Keras, so it also trains on Keras's JAX backend, which reads tf.data too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import keras
import numpy as np

from config.plan import ResourcesSection, TrainSection
from data.dataset import Dataset

from .accelerator import Accelerator, select_accelerator

AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow at module level


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced: the trained model (best weights) and how it got there."""

    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    stopped_by: str  # "epochs", "early_stopping" or "time_budget"
    seconds: float
    accelerator: str
    best_epoch: int | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    samples_per_second: float = 0.0


def make_dataset(
    features: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle_buffer: int = 0, seed: int = 0
) -> Any:
    """The input pipeline: from_tensor_slices -> cache -> shuffle (seeded) -> batch -> prefetch.

    Args:
        features: input array, ``(n, *input_shape)``.
        labels: targets, ``(n,)``.
        batch_size: samples per batch.
        shuffle_buffer: 0 for no shuffling (validation), else the shuffle buffer size.
        seed: shuffle seed; the order is reproducible for a given seed.

    Returns:
        A ``tf.data.Dataset`` of ``(features, labels)`` batches.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).cache()
    if shuffle_buffer:
        dataset = dataset.shuffle(
            min(shuffle_buffer, len(features)), seed=seed, reshuffle_each_iteration=True
        )
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


class TimeBudget(keras.callbacks.Callback):
    """Stops training once ``minutes`` of wall time have passed (checked after every batch)."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        if minutes <= 0:
            raise ValueError(f"Expected minutes > 0. Received {minutes}.")
        self.seconds = minutes * 60.0
        self.clock = clock
        self.exhausted = False
        self._start = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = self.clock()
        self.exhausted = False

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.clock() - self._start >= self.seconds:
            self.exhausted = True
            self.model.stop_training = True


class EpochProgress(keras.callbacks.Callback):
    """Prints one readable line per epoch: losses and metrics, learning rate, epoch time and ETA."""

    def __init__(
        self, epochs: int, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
    ):
        super().__init__()
        self.epochs = epochs
        self.stream = stream
        self.clock = clock
        self._train_start = 0.0
        self._epoch_start = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._train_start = self.clock()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = self.clock()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = self.clock()
        done = epoch + 1
        eta = (now - self._train_start) / done * (self.epochs - done)
        values = "  ".join(f"{key} {float(value):.4g}" for key, value in (logs or {}).items())
        width = len(str(self.epochs))
        print(
            f"epoch {done:>{width}}/{self.epochs}  {values}  {now - self._epoch_start:.1f}s  ETA {eta:.0f}s",
            file=self.stream or sys.stdout,
            flush=True,
        )


def train_model(
    model: keras.Model | Callable[[], keras.Model],
    train_ds: Dataset,
    val_ds: Dataset,
    train: TrainSection,
    resources: ResourcesSection,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    *,
    accelerator: Accelerator | None = None,
    progress: TextIO | None = None,
) -> TrainResult:
    """Train a compiled model on the train split, validating on the val split.

    Seeds Keras (and TF op determinism), so the same plan, data and seed give the same metrics on CPU.

    Args:
        model: a compiled model, or a function building one. Pass a function for several GPUs or mixed
            precision: it is called inside the accelerator's scope.
        train_ds: the train split.
        val_ds: the validation split.
        train: the plan's train section (epochs, batch size, seed, callbacks).
        resources: the plan's resources section (accelerator, mixed precision, time budget).
        callbacks: extra Keras callbacks, run after the plan's.
        accelerator: where to train; default ``select_accelerator(resources)``.
        progress: where the per-epoch lines go (default stdout).

    Returns:
        The model with its best weights (when early stopping is on) and the run's record.
    """
    _seed_everything(train.seed)
    accelerator = accelerator or select_accelerator(resources)
    if callable(model) and not isinstance(model, keras.Model):
        with accelerator.scope():
            model = model()
    fit_train = make_dataset(
        train_ds.features, _targets(train_ds.labels, train.loss), train.batch_size,
        shuffle_buffer=train.shuffle_buffer, seed=train.seed,
    )  # fmt: skip
    fit_val = make_dataset(val_ds.features, _targets(val_ds.labels, train.loss), train.batch_size)
    budget = TimeBudget(resources.time_budget_minutes)
    early = _early_stopping(train)
    plan_callbacks = [cb for cb in (early, _reduce_lr(train), budget) if cb is not None]
    started = time.perf_counter()
    history = model.fit(
        fit_train,
        validation_data=fit_val,
        epochs=train.epochs,
        shuffle=False,  # the input pipeline shuffles, seeded
        callbacks=[*plan_callbacks, EpochProgress(train.epochs, progress), *callbacks],
        verbose=0,
    )
    seconds = time.perf_counter() - started
    record = {key: [float(v) for v in values] for key, values in history.history.items()}
    epochs_run = len(record.get("loss", []))
    stopped_by = "epochs"
    if budget.exhausted:
        stopped_by = "time_budget"
    elif early is not None and early.stopped_epoch > 0:
        stopped_by = "early_stopping"
    final = {
        f"final_{split}_{name}": float(value)
        for split, data in (("train", fit_train), ("val", fit_val))
        for name, value in model.evaluate(data, verbose=0, return_dict=True).items()
    }
    return TrainResult(
        model=model,
        history=record,
        epochs_run=epochs_run,
        stopped_by=stopped_by,
        seconds=seconds,
        accelerator=accelerator.describe(),
        best_epoch=(early.best_epoch + 1) if early is not None and early.best_weights is not None else None,
        final_metrics=final,
        samples_per_second=len(train_ds) * epochs_run / seconds if seconds > 0 else 0.0,
    )


def _seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _targets(labels: np.ndarray, loss: str) -> np.ndarray:
    return labels.astype("int32") if loss == "sparse_categorical_crossentropy" else labels.astype("float32")


def _early_stopping(train: TrainSection) -> keras.callbacks.EarlyStopping | None:
    spec = train.early_stopping
    if not spec.enabled:
        return None
    return keras.callbacks.EarlyStopping(
        monitor=spec.monitor, patience=spec.patience, min_delta=spec.min_delta, restore_best_weights=True
    )


def _reduce_lr(train: TrainSection) -> keras.callbacks.ReduceLROnPlateau | None:
    spec = train.reduce_lr
    # A learning-rate schedule owns the rate; ReduceLROnPlateau could not set it.
    if not spec.enabled or train.optimizer.schedule != "constant":
        return None
    return keras.callbacks.ReduceLROnPlateau(
        monitor=spec.monitor, factor=spec.factor, patience=spec.patience, min_lr=spec.min_lr
    )
