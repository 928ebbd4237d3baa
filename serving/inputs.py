"""Request inputs checked against what the model was trained on: pure functions on numbers, no web code.

Every rejection is an ``InputError`` whose message says what was wrong, where, and what was expected; the
routes turn it into a 4xx. Images are decoded by ``decode_image``, the one preprocessing path shared with
the ``images:`` data source, so online and offline inputs are the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from data.dataset import DatasetMeta

# Source units when no data says otherwise (data/dataset.py): digits 0..16, 8-bit images 0..255.
_SOURCE_RANGES = {"sklearn:digits": (0.0, 16.0), "keras:": (0.0, 255.0), "images:": (0.0, 255.0)}


class InputError(ValueError):
    """An input the model can't take. ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 422):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class FeatureRange:
    """The trained range of the inputs, widened by ``tolerance`` (absolute, per feature or global)."""

    low: np.ndarray  # broadcastable to one instance
    high: np.ndarray
    tolerance: np.ndarray
    origin: str  # where the range came from, for messages and /v1/model

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(lowest allowed, highest allowed, their overall min, their overall max), computed once."""
        low = np.asarray(self.low - self.tolerance, "float64")
        high = np.asarray(self.high + self.tolerance, "float64")
        return low, high, float(low.min()), float(high.max())

    def describe(self) -> dict[str, Any]:
        return {
            "low": float(np.min(self.low)),
            "high": float(np.max(self.high)),
            "tolerance": float(np.max(self.tolerance)),
            "origin": self.origin,
        }


def trained_range(
    meta: DatasetMeta, reference: np.ndarray | None = None, *, tolerance: float = 0.1
) -> FeatureRange | None:
    """The range inputs may take: the training data's min/max, widened by ``tolerance`` of its span.

    Images get one range for all pixels (a pixel that was always 0 in training may still light up);
    tables get one per column. Taken from, in order: the reference sample (drawn from the train split),
    a ``minmax`` scaling fitted on train, a ``standard`` scaling (mean +/- 6 std), the source's units.

    Args:
        meta: the model's dataset meta.
        reference: reference-sample features in source units, or None.
        tolerance: share of the span allowed beyond each end.

    Returns:
        The range, or None when nothing says what it was (then no range check is made).
    """
    image = meta.kind == "image"
    shape = tuple(meta.input_shape)
    scaling = meta.scaling or {}
    low = high = None
    if reference is not None and len(reference) and tuple(reference.shape[1:]) == shape:
        low, high = (reference.min(), reference.max()) if image else (reference.min(0), reference.max(0))
        origin = "reference sample"
    elif scaling.get("method") == "minmax" and "min" in scaling and "max" in scaling:
        low, high = np.asarray(scaling["min"], "float64"), np.asarray(scaling["max"], "float64")
        origin = "minmax scaling fitted on train"
    elif scaling.get("method") == "standard" and "mean" in scaling and "std" in scaling:
        mean, std = np.asarray(scaling["mean"], "float64"), np.asarray(scaling["std"], "float64")
        low, high = mean - 6 * std, mean + 6 * std
        origin = "standard scaling fitted on train (mean +/- 6 std)"
    else:
        for prefix, (low_value, high_value) in _SOURCE_RANGES.items():
            if meta.source.startswith(prefix):
                low, high = np.float64(low_value), np.float64(high_value)
                origin = f"source units of {meta.source}"
                break
    if low is None or high is None:
        return None
    low, high = np.asarray(low, "float64"), np.asarray(high, "float64")
    if image:
        low, high = np.asarray(low.min()), np.asarray(high.max())
    elif low.size == int(np.prod(shape)):
        low, high = low.reshape(shape), high.reshape(shape)
    span = np.maximum(high - low, 1e-6)
    return FeatureRange(low=low, high=high, tolerance=tolerance * span, origin=origin)


def to_batch(
    instances: Any, input_shape: list[int], max_batch_size: int, *, check_finite: bool = True
) -> np.ndarray:
    """Turn a JSON ``instances`` list into a float32 batch of the model's input shape.

    Args:
        check_finite: reject NaN and infinity here; False when ``check_range`` follows (it rejects them too,
            within the two reductions it makes anyway).

    Raises:
        InputError: not a list, empty, too many instances, a non-number, a ragged or wrongly shaped
            instance, NaN or infinity; the message names the instance and position.
    """
    shape = list(input_shape)
    if not isinstance(instances, list):
        raise InputError(f"instances: expected a list of instances, got {_kind(instances)}")
    if not instances:
        raise InputError(f"instances: expected 1 to {max_batch_size} instances, got an empty list")
    if len(instances) > max_batch_size:
        raise InputError(
            f"instances: expected at most {max_batch_size} instances per request (deploy.max_batch_size), "
            f"got {len(instances)}; split the batch"
        )
    try:
        array = np.asarray(instances)
    except (ValueError, TypeError, OverflowError):
        array = None
    if array is None or array.dtype.kind not in "iuf":
        raise InputError(_first_problem(instances, shape))
    if list(array.shape[1:]) != shape:
        raise InputError(
            f"instances: expected each instance of shape {shape} (the model's input), "
            f"got {list(array.shape[1:])}"
        )
    with np.errstate(over="ignore"):  # beyond float32: becomes inf, rejected by the finite check
        batch = array.astype("float32")
    if check_finite:
        _check_finite(batch)
    return batch


def validate_instances(
    instances: Any, input_shape: list[int], max_batch_size: int, feature_range: FeatureRange | None
) -> np.ndarray:
    """The service's whole check of JSON instances: a float32 batch of the input shape, finite, in range.

    Raises:
        InputError: what was wrong (see ``to_batch`` and ``check_range``).
    """
    batch = to_batch(instances, input_shape, max_batch_size, check_finite=False)
    check_range(batch, feature_range)  # rejects NaN and infinity too
    return batch


def _check_finite(batch: np.ndarray) -> None:
    finite = np.isfinite(batch)
    if not finite.all():
        row, *where = (int(i) for i in np.argwhere(~finite)[0])
        raise InputError(
            f"instances[{row}]: {batch[(row, *where)]} at {where}; "
            "expected finite numbers (no NaN or infinity)"
        )


def check_range(batch: np.ndarray, feature_range: FeatureRange | None) -> None:
    """Reject NaN, infinity and values outside the trained range (plus tolerance).

    Raises:
        InputError: naming the first offending instance, position, value and the allowed range (or that
            it isn't finite).
    """
    if feature_range is None:
        _check_finite(batch)
        return
    low, high, lowest, highest = feature_range.bounds
    if low.ndim == 0 and float(batch.min()) >= lowest and float(batch.max()) <= highest:
        return  # one range for every value: two reductions decide it (NaN or inf fails them too)
    _check_finite(batch)
    outside = (batch < low) | (batch > high)
    if outside.any():
        row, *where = (int(i) for i in np.argwhere(outside)[0])
        index = tuple(where) if np.ndim(low) else ()
        raise InputError(
            f"instances[{row}]: value {float(batch[(row, *where)]):g} at {where} is outside "
            "the trained range "
            f"[{float(np.asarray(low)[index]):g}, {float(np.asarray(high)[index]):g}] "
            f"({feature_range.origin}, with tolerance); expected inputs like the training data"
        )


def decode_image(content: bytes, image_size: tuple[int, int], color_mode: str) -> np.ndarray:
    """Decode an uploaded image exactly as the ``images:`` source decodes training files.

    Args:
        content: the file's bytes (PNG, JPEG, ...).
        image_size: (height, width).
        color_mode: "grayscale" or "rgb".

    Returns:
        ``(height, width)`` for grayscale, ``(height, width, 3)`` for rgb, float32.

    Raises:
        InputError: the bytes are not an image Pillow can decode.
    """
    from data.images import ImageDecodeError
    from data.images import decode_image as decode_training_image

    try:
        return decode_training_image(content, image_size, color_mode)
    except ImageDecodeError as error:
        raise InputError(
            f"expected an image file (PNG, JPEG, ...), got {len(content)} bytes Pillow can't decode: {error}"
        ) from None


def image_geometry(meta: DatasetMeta) -> tuple[tuple[int, int], str]:
    """((height, width), color mode) of an image model's input, from its meta.

    Raises:
        InputError: the model does not take images (status 400).
    """
    shape = list(meta.input_shape)
    if meta.kind != "image" or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
        raise InputError(
            f"this model takes {meta.kind} input of shape {shape}, not images; send JSON to /v1/predict",
            status=400,
        )
    mode = "rgb" if len(shape) == 3 and shape[2] == 3 else "grayscale"
    return (shape[0], shape[1]), mode


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", dict: "an object", list: "a list"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _first_problem(instances: list[Any], shape: list[int]) -> str:
    """Walk the nested lists to the first value that is not a number or is out of shape."""

    def walk(value: Any, expected: list[int], path: str) -> str | None:
        if not expected:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"{path}: expected a number, got {_kind(value)} ({value!r:.40})"
            return None
        if not isinstance(value, list):
            return f"{path}: expected a list of {expected[0]}, got {_kind(value)}"
        if len(value) != expected[0]:
            return f"{path}: expected {expected[0]} values (instance shape {shape}), got {len(value)}"
        for index, item in enumerate(value):
            problem = walk(item, expected[1:], f"{path}[{index}]")
            if problem:
                return problem
        return None

    for row, instance in enumerate(instances):
        problem = walk(instance, shape, f"instances[{row}]")
        if problem:
            return problem
    return f"instances: expected numbers in instances of shape {shape}"
