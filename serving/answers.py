"""The answers to prediction requests: request ids, one item per instance, the JSON bodies, and the record
the store keeps of them. No web code, no I/O: ``Service.answer`` calls ``answer_requests`` per model call."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from data.dataset import DatasetMeta
from serving.store.records import AnsweredRequest


@dataclass(frozen=True)
class Answers:
    """The answers to the requests one model call answered: a JSON body each, the store's record of all."""

    bodies: list[bytes]
    record: AnsweredRequest


def new_request_ids(count: int) -> list[str]:
    """``count`` request ids of 32 hex digits: the time in ms (12), then 80 random bits (20), like a UUIDv7
    without the dashes.

    Time-ordered ids land at the end of the store's request_id index instead of at random places in it: with
    random ids (uuid4) every insert into a large store read index pages from disk, which cost the writer
    ~40 us a prediction at 80 MB of predictions (bench/serve.py). The random bits come from ``os.urandom``.
    """
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    bits = os.urandom(10 * count).hex()
    return [stamp + bits[at : at + 20] for at in range(0, 20 * count, 20)]


def answer_requests(
    model_name: str,
    model_version: str,
    meta: DatasetMeta,
    batch: np.ndarray,
    outputs: np.ndarray,
    sizes: list[int],
    seconds: list[float],
) -> Answers:
    """Answer requests of ``sizes`` instances each, whose rows (one request after another in ``batch``) the
    model answered with ``outputs``, ``seconds`` after each came.

    A one-instance request's prediction carries the request's id; several instances get ``<id>-<i>``, so each
    can be sent feedback on its own.
    """
    request_ids = new_request_ids(len(sizes))
    if len(batch) == len(sizes):  # one instance per request, the common case
        ids = request_ids
    else:
        ids = []
        for request_id, size in zip(request_ids, sizes, strict=True):
            ids += [request_id] if size == 1 else [f"{request_id}-{i}" for i in range(size)]
    items, predicted, confidence = format_outputs(outputs, meta, ids)
    bodies: list[bytes] = []
    latency_ms: list[float] = []
    offset = 0
    for request_id, size, spent in zip(request_ids, sizes, seconds, strict=True):
        body = {
            "model_name": model_name,
            "model_version": model_version,
            "request_id": request_id,
            "predictions": items[offset : offset + size],
        }
        bodies.append(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
        latency_ms += [spent * 1000] * size
        offset += size
    record = AnsweredRequest(
        ids, model_name, model_version, batch, predicted, confidence, latency_ms, time.time()
    )
    return Answers(bodies, record)


def format_outputs(
    outputs: np.ndarray, meta: DatasetMeta, request_ids: list[str]
) -> tuple[list[dict[str, Any]], Any, Any]:
    """The answer per instance, and what the store keeps of it.

    Returns:
        (items, predicted, confidence): per instance a dict with class id, label, confidence, probabilities
        and request id (classification) or value and request id (regression); the predicted class ids (or
        values); the confidences (None for regression). Numbers in the items stay float32 (numpy) so the JSON
        shows them at the model's precision.
    """
    count = len(outputs)
    if meta.task == "regression":
        values = outputs.reshape(count, -1)[:, 0]
        items = [
            {"value": value, "request_id": request_id}
            for value, request_id in zip(values, request_ids, strict=True)
        ]
        return items, values, None
    probabilities = outputs.reshape(count, -1)
    if probabilities.shape[1] == 1:  # one sigmoid unit: P(class 1)
        probabilities = np.concatenate([1 - probabilities, probabilities], axis=1)
    classes = meta.classes
    items, predicted, confidence = [], [], []
    for row, request_id in zip(probabilities, request_ids, strict=True):
        class_id = int(row.argmax())
        probability = row[class_id]
        items.append(
            {
                "class_id": class_id,
                "label": classes[class_id] if class_id < len(classes) else str(class_id),
                "confidence": probability,
                "probabilities": row,
                "request_id": request_id,
            }
        )
        predicted.append(class_id)
        confidence.append(float(probability))
    return items, predicted, confidence
