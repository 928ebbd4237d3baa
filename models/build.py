"""Keras models from the plan: a Sequential stack of LayerSpecs, or a `module:function` builder.

The scaling that `prepare` fitted on the train split (``meta.scaling``) becomes the first layer after the
input, so the saved model takes raw inputs and serving can't drift from training. Model code here uses
Keras only (no ``tf.*``), so it runs on any Keras backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from config.plan import LayerSpec, ModelSection, OptimizerSection, TrainSection
from data.dataset import DatasetMeta

from .errors import ModelBuildError

__all__ = ["ModelBuildError", "build_model", "build_optimizer", "scaling_layer"]

# Keras's name for the plan's "accuracy" depends on the loss; compile() resolves it.
_ACCURACY_ALIASES = ("accuracy", "acc")


def build_model(model: ModelSection, meta: DatasetMeta, train: TrainSection) -> keras.Model:
    """Build and compile the plan's model.

    Args:
        model: the plan's model section (a layer stack or a builder).
        meta: the prepared dataset's meta: input shape, classes, fitted scaling.
        train: the plan's train section: optimizer, loss, metrics.

    Returns:
        A compiled Keras model taking raw inputs of shape ``(batch, *meta.input_shape)``.

    Raises:
        ModelBuildError: a layer, builder, scaling, optimizer or metric can't be used; names the field.
    """
    input_shape = tuple(int(d) for d in meta.input_shape)
    output_units = _output_units(train.loss, meta)
    if model.builder:
        built = _from_builder(model, input_shape, meta.num_classes, meta.scaling)
    else:
        built = _from_layers(model.layers, input_shape, meta.scaling)
    received = tuple(built.output_shape[1:]) if not isinstance(built.output_shape, list) else None
    if received != (output_units,):
        where = "model.builder" if model.builder else f"model.layers[{len(model.layers) - 1}]"
        raise ModelBuildError(
            f"{where}: Expected the model's output shape (None, {output_units}) for loss {train.loss!r} "
            f"with {meta.num_classes} classes. Received {built.output_shape}."
        )
    built.compile(
        optimizer=build_optimizer(train.optimizer),
        loss=train.loss,
        metrics=_metrics(train.metrics),
    )
    return built


def build_optimizer(optimizer: OptimizerSection) -> keras.optimizers.Optimizer:
    """The plan's optimizer with its learning rate schedule.

    Args:
        optimizer: the plan's train.optimizer section.

    Returns:
        A new Keras optimizer.
    """
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = optimizer.learning_rate
    if optimizer.schedule == "exponential":
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            optimizer.learning_rate, decay_steps=optimizer.decay_steps, decay_rate=optimizer.decay_rate
        )
    elif optimizer.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            optimizer.learning_rate, decay_steps=optimizer.decay_steps
        )
    if optimizer.name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=optimizer.momentum, nesterov=optimizer.nesterov)
    optimizers = {
        "adam": keras.optimizers.Adam,
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
        "adadelta": keras.optimizers.Adadelta,
    }
    return optimizers[optimizer.name](learning_rate)


def scaling_layer(scaling: dict[str, Any], input_shape: tuple[int, ...]) -> keras.layers.Layer | None:
    """The layer that applies ``prepare``'s fitted scaling, or None for ``method: none``.

    Both methods become a Normalization layer with fixed statistics: standard uses (mean, std**2),
    minmax uses (min, (max - min)**2), so ``(x - a) / sqrt(b)`` is the fitted transform. Statistics may be
    one value, one per channel (last axis) or one per feature (the whole input shape). A zero spread
    (a constant feature) divides by 1, not by 0.

    Args:
        scaling: ``meta.scaling``: {"method": "none"|"standard"|"minmax", ...arrays}.
        input_shape: the model's input shape without the batch axis.

    Returns:
        A Keras layer, or None.

    Raises:
        ModelBuildError: an unknown method, missing statistics or statistics of the wrong size.
    """
    method = scaling.get("method", "none")
    keys = {"standard": ("mean", "std"), "minmax": ("min", "max")}
    if method == "none":
        return None
    if method not in keys:
        raise ModelBuildError(
            f"meta.scaling.method: Expected one of none, standard, minmax. Received {method!r}."
        )
    missing = [key for key in keys[method] if key not in scaling]
    if missing:
        raise ModelBuildError(f"meta.scaling: {', '.join(missing)}: required for method {method!r}")
    first, second = (np.asarray(scaling[key], dtype="float64") for key in keys[method])
    spread = second if method == "standard" else second - first
    spread = np.where(spread > 0, spread, 1.0)
    size = first.size
    axis: int | tuple[int, ...] | None
    shape: tuple[int, ...]
    if size == 1:
        axis, shape = None, ()
    elif size == input_shape[-1]:
        axis, shape = -1, (input_shape[-1],)
    elif size == int(np.prod(input_shape)):
        axis, shape = tuple(range(1, len(input_shape) + 1)), input_shape
    else:
        raise ModelBuildError(
            f"meta.scaling.{keys[method][0]}: Expected 1, {input_shape[-1]} (per channel) or "
            f"{int(np.prod(input_shape))} (per feature) values for input shape {list(input_shape)}. "
            f"Received {size}."
        )
    return keras.layers.Normalization(
        axis=axis,
        mean=first.reshape(shape).astype("float32"),
        variance=(spread**2).reshape(shape).astype("float32"),
        name="scaling",
    )


def _output_units(loss: str, meta: DatasetMeta) -> int:
    if loss == "sparse_categorical_crossentropy":
        return meta.num_classes
    return 1  # binary_crossentropy: one sigmoid unit; mse: one regression output


def _from_layers(
    specs: list[LayerSpec], input_shape: tuple[int, ...], scaling: dict[str, Any]
) -> keras.Model:
    start = 0
    if specs and specs[0].type == "Input":
        planned = tuple(specs[0].shape or ())
        if planned != input_shape:
            raise ModelBuildError(
                f"model.layers[0].shape: Expected {list(input_shape)} (the prepared data's input_shape). "
                f"Received {list(planned)}."
            )
        start = 1
    stack = keras.Sequential(name="plan_model")
    stack.add(keras.Input(shape=input_shape, name="features"))
    scale = scaling_layer(scaling, input_shape)
    if scale is not None:
        stack.add(scale)
    mixed = keras.mixed_precision.global_policy().name.startswith("mixed")
    shape: tuple[int | None, ...] = (None, *input_shape)
    for index in range(start, len(specs)):
        spec = specs[index]
        if spec.type == "Input":
            raise ModelBuildError(f"model.layers[{index}]: Input may only be the first layer")
        last = index == len(specs) - 1
        try:
            # Under mixed precision the output stays float32, so softmax/loss are numerically safe.
            stack.add(_layer(spec, dtype="float32" if last and mixed else None))
            shape = stack.output_shape
        except Exception as error:  # Keras raises ValueError/TypeError with its own wording
            raise ModelBuildError(
                f"model.layers[{index}] ({spec.type}): can't follow output shape {shape}: {error}"
            ) from error
    return stack


def _layer(spec: LayerSpec, dtype: str | None) -> keras.layers.Layer:
    regularizer = _regularizer(spec)
    kwargs: dict[str, Any] = {"dtype": dtype} if dtype else {}
    if spec.type == "Dense":
        return keras.layers.Dense(
            spec.units, activation=spec.activation, kernel_regularizer=regularizer, **kwargs
        )
    if spec.type == "Conv2D":
        return keras.layers.Conv2D(
            spec.filters,
            spec.kernel_size,
            strides=spec.strides or 1,
            padding=spec.padding or "valid",
            activation=spec.activation,
            kernel_regularizer=regularizer,
            **kwargs,
        )
    if spec.type == "MaxPooling2D":
        return keras.layers.MaxPooling2D(
            spec.pool_size or 2, strides=spec.strides, padding=spec.padding or "valid", **kwargs
        )
    if spec.type == "Dropout":
        return keras.layers.Dropout(spec.rate, **kwargs)
    if spec.type == "Rescaling":
        return keras.layers.Rescaling(spec.scale, offset=spec.offset or 0.0, **kwargs)
    simple: dict[str, Callable[..., keras.layers.Layer]] = {
        "Flatten": keras.layers.Flatten,
        "GlobalAveragePooling2D": keras.layers.GlobalAveragePooling2D,
        "BatchNormalization": keras.layers.BatchNormalization,
    }
    return simple[spec.type](**kwargs)


def _regularizer(spec: LayerSpec) -> keras.regularizers.Regularizer | None:
    reg = spec.kernel_regularizer
    if reg is None:
        return None
    if reg.kind == "l1":
        return keras.regularizers.L1(reg.l1)
    if reg.kind == "l2":
        return keras.regularizers.L2(reg.l2)
    return keras.regularizers.L1L2(l1=reg.l1, l2=reg.l2)


def _from_builder(
    model: ModelSection, input_shape: tuple[int, ...], num_classes: int, scaling: dict[str, Any]
) -> keras.Model:
    builder = _import_builder(model.builder or "")
    try:
        built = builder(model, input_shape, num_classes)
    except Exception as error:
        raise ModelBuildError(
            f"model.builder: {model.builder} raised {type(error).__name__}: {error}"
        ) from error
    if not isinstance(built, keras.Model):
        raise ModelBuildError(
            f"model.builder: Expected {model.builder} to return a keras.Model. "
            f"Received {type(built).__name__}."
        )
    scale = scaling_layer(scaling, input_shape)
    if scale is None:
        return built
    inputs = keras.Input(shape=input_shape, name="features")
    return keras.Model(inputs, built(scale(inputs)), name=f"scaled_{built.name}")


def _import_builder(reference: str) -> Callable[..., Any]:
    module_name, _, function_name = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelBuildError(
            f"model.builder: can't import module {module_name!r} of {reference!r}: {error}"
        ) from error
    builder = getattr(module, function_name, None)
    if not callable(builder):
        raise ModelBuildError(
            f"model.builder: Expected module {module_name!r} to define a function {function_name!r}. "
            f"Received {type(builder).__name__ if builder is not None else 'no such name'}."
        )
    return builder


def _metrics(names: list[str]) -> list[str]:
    for index, name in enumerate(names):
        if name in _ACCURACY_ALIASES:
            continue
        try:
            keras.metrics.get(name)
        except ValueError as error:
            raise ModelBuildError(f"train.metrics[{index}]: unknown Keras metric {name!r}") from error
    return list(names)
