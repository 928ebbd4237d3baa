"""What the store keeps, and the one ``bytes`` entry each record travels as to the writer.

An entry is a ``marshal`` of plain values (features as float32 bytes), made on the thread that records it: the
request's arrays and lists are then freed where they were made, and what waits in the writer's queue (or
crosses the pipe to the writer process) is one small object per request.
"""

from __future__ import annotations

import functools
import itertools
import json
import marshal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

REQUEST, FEEDBACK = 1, 2  # the kinds of entry


@dataclass(frozen=True)
class PredictionRecord:
    """One answered prediction (one instance of a request)."""

    request_id: str
    model_version: str
    features: np.ndarray  # the raw input instance, source units
    predicted: int | float  # class id, or the value for regression
    confidence: float  # probability of the predicted class (NaN for regression)
    latency_ms: float = 0.0
    model_name: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class AnsweredRequest(NamedTuple):
    """The requests one model call answered, stored as one entry however many instances they had.

    Row ``i`` of ``features`` was answered with ``predicted[i]`` (class id, or the value for regression) and
    ``confidence[i]`` (None for regression); it is stored under ``request_ids[i]``, with ``latency_ms`` (one
    for every row, or row ``i``'s in a list).
    """

    request_ids: list[str]
    model_name: str
    model_version: str
    features: np.ndarray  # (instances, *input shape), raw source units
    predicted: np.ndarray | list[int] | list[float]
    confidence: np.ndarray | list[float] | None
    latency_ms: float | list[float]
    created_at: datetime | float  # aware UTC, or Unix seconds


def encode_request(answered: AnsweredRequest) -> bytes:
    """The store entry of an answered request.

    Raises:
        ValueError: not one id, prediction (and confidence, latency) per instance, or features that aren't
            numbers; the message says which.
    """
    return encode_requests([answered])


def encode_requests(answered: list[AnsweredRequest]) -> bytes:
    """One store entry for several answered requests (those of one loop pass, see ``serving.recorder``).

    Raises:
        ValueError: as ``encode_request``; nothing of the list is encoded.
    """
    return marshal.dumps((REQUEST, [_request_values(request) for request in answered]))


def _request_values(answered: AnsweredRequest) -> tuple[Any, ...]:
    features = answered.features
    if features.dtype != np.float32 or not features.flags.c_contiguous:
        features = np.ascontiguousarray(features, dtype="float32")
    count = len(features)
    ids, predicted, confidence = answered.request_ids, answered.predicted, answered.confidence
    if len(ids) != count or len(predicted) != count or (confidence is not None and len(confidence) != count):
        raise ValueError(
            f"Expected one request id, prediction and confidence per instance ({count}). Received: "
            f"{len(ids)} ids, {len(predicted)} predictions, "
            f"{'no' if confidence is None else len(confidence)} confidences."
        )
    latency = answered.latency_ms
    if isinstance(latency, list):
        if len(latency) != count:
            raise ValueError(f"Expected one latency per instance ({count}). Received: {len(latency)}.")
    else:
        latency = float(latency)
    created = answered.created_at
    return (
        [str(request_id) for request_id in ids],
        str(answered.model_name),
        str(answered.model_version),
        features.shape[1:],
        features.tobytes(),
        *_plain(predicted),
        None if confidence is None else _plain(confidence)[1],
        latency,
        created if isinstance(created, float) else created.timestamp(),
    )


def encode_record(record: PredictionRecord) -> bytes:
    """The store entry of one prediction record."""
    classification = isinstance(record.predicted, int | np.integer)
    return encode_request(
        AnsweredRequest(
            request_ids=[record.request_id],
            model_name=record.model_name,
            model_version=str(record.model_version),
            features=np.asarray(record.features)[None],
            predicted=np.asarray([record.predicted], dtype="int64" if classification else "float64"),
            confidence=np.asarray([record.confidence], dtype="float64"),
            latency_ms=float(record.latency_ms),
            created_at=record.created_at,
        )
    )


def encode_feedback(request_id: str, label: float) -> bytes:
    """The store entry of a true label that arrived for a prediction."""
    return marshal.dumps((FEEDBACK, str(request_id), float(label), time.time()))


def decode(entry: bytes) -> tuple[Any, ...]:
    """An entry's values: ``(REQUEST, [a tuple per request])`` or ``(FEEDBACK, request_id, label, time)``.

    Raises:
        ValueError: not an entry (EOFError, TypeError and ValueError of ``marshal`` alike).
    """
    try:
        decoded = marshal.loads(entry)
    except (EOFError, TypeError, ValueError) as error:
        raise ValueError(f"not a store entry: {error}") from None
    if not isinstance(decoded, tuple) or not decoded or decoded[0] not in (REQUEST, FEEDBACK):
        raise ValueError(f"not a store entry: {type(decoded).__name__}")
    return decoded


def request_rows(decoded: tuple[Any, ...], bind_time: Callable[[datetime], Any]) -> list[tuple[Any, ...]]:
    """One row per instance of a decoded request entry, in ``schema.PREDICTION_COLUMNS`` order."""
    return [row for request in decoded[1] for row in _rows(request, bind_time)]


def _rows(request: tuple[Any, ...], bind_time: Callable[[datetime], Any]) -> list[tuple[Any, ...]]:
    ids, name, version, shape, blob, classes, predicted, confidence, latency, created = request
    count = len(ids)
    size = len(blob) // count
    blobs = [blob] if count == 1 else [blob[i * size : (i + 1) * size] for i in range(count)]
    class_ids: Iterable[int | None]
    values: Iterable[float | None]
    if classes:
        class_ids, values = [int(value) for value in predicted], itertools.repeat(None)
    else:
        class_ids, values = itertools.repeat(None), [float(value) for value in predicted]
    probabilities: Iterable[float | None] = (
        itertools.repeat(None)
        if confidence is None
        else [None if value != value else value for value in confidence]  # NaN: NULL
    )
    latencies = latency if type(latency) is list else itertools.repeat(latency)
    created_at = bind_time(utc(created))
    shape_text = _shape_text(tuple(shape))
    return [
        (request_id, created_at, name, version, features, shape_text, class_id, value, probability, spent)
        for request_id, features, class_id, value, probability, spent in zip(
            ids, blobs, class_ids, values, probabilities, latencies, strict=False
        )
    ]


def utc(timestamp: float) -> datetime:
    """Unix seconds as a naive UTC datetime (how the tables store time)."""
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None)


def _plain(values: np.ndarray | list[Any]) -> tuple[bool, list[Any]]:
    """(whether they are whole numbers, the values as a list of Python numbers)."""
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "iub", values.tolist()
    plain = [value.item() if isinstance(value, np.generic) else value for value in values]
    return bool(plain) and isinstance(plain[0], int) and not isinstance(plain[0], bool), plain


@functools.cache
def _shape_text(shape: tuple[int, ...]) -> str:
    return json.dumps(list(shape))
