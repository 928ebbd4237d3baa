"""What drift is measured on: a compact per-sample frame, arrays in, DataFrame out.

- Tabular models: the input columns, plus the predicted class (or value) and the confidence.
- Image models: never the raw pixels (784 Evidently columns take minutes). Per-sample intensity statistics
  (mean, std, 10/50/90 % quantiles), the model's own penultimate-layer embedding projected on a few principal
  components fitted on the reference, and the predicted class and confidence.

The projection is fitted once on the reference (``fit_features``) and applied unchanged to every window
(``build_frame``), so the same sample always maps to the same row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from data.dataset import DatasetMeta

PREDICTED = "predicted"
CONFIDENCE = "confidence"
INTENSITY_COLUMNS = ("intensity_mean", "intensity_std", "intensity_q10", "intensity_q50", "intensity_q90")
EMBEDDING_PREFIX = "embedding_pc"

# A function from a batch of raw inputs to a 2-D array of embeddings (one row per sample).
Embedder = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Projection:
    """A PCA fitted on reference embeddings: ``(x - mean) @ components.T``."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d)

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """Project ``(n, d)`` embeddings onto the ``k`` fitted components; returns ``(n, k)``."""
        embeddings = np.asarray(embeddings, dtype="float64").reshape(len(embeddings), -1)
        if embeddings.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"Expected embeddings of width {self.mean.shape[0]} (as fitted on the reference). "
                f"Received width {embeddings.shape[1]}."
            )
        return (embeddings - self.mean) @ self.components.T


@dataclass(frozen=True)
class FeatureSpec:
    """How raw inputs become monitoring columns, fitted on the reference."""

    kind: str  # "image" or "tabular"
    task: str  # "classification" or "regression"
    input_columns: tuple[str, ...]  # tabular: the input column names
    projection: Projection | None = None  # image: the embedding PCA, None without an embedder

    @property
    def categorical_columns(self) -> list[str]:
        return [PREDICTED] if self.task == "classification" else []


def fit_projection(embeddings: np.ndarray, components: int) -> Projection:
    """Fit a PCA on reference embeddings (SVD, signs fixed so the largest loading is positive).

    Args:
        embeddings: ``(n, d)`` embeddings of the reference sample.
        components: how many principal components to keep (at most ``min(n, d)``).

    Returns:
        The fitted projection.
    """
    embeddings = np.asarray(embeddings, dtype="float64").reshape(len(embeddings), -1)
    if len(embeddings) < 2:
        raise ValueError(
            f"Expected at least 2 reference embeddings to fit a PCA. Received {len(embeddings)}."
        )
    if components < 1:
        raise ValueError(f"Expected components >= 1. Received {components}.")
    mean = embeddings.mean(axis=0)
    _, _, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
    kept = vt[: min(components, vt.shape[0])]
    signs = np.sign(kept[np.arange(len(kept)), np.abs(kept).argmax(axis=1)])
    return Projection(mean=mean, components=kept * np.where(signs == 0, 1.0, signs)[:, None])


def intensity_statistics(images: np.ndarray) -> pd.DataFrame:
    """Per-sample mean, std and 10/50/90 % quantiles over every pixel (and channel) of each image.

    Args:
        images: ``(n, h, w)`` or ``(n, h, w, c)`` in source units.

    Returns:
        One row per image, columns ``INTENSITY_COLUMNS``.
    """
    images = np.asarray(images, dtype="float32")
    # An explicit width: reshape(0, -1) can't infer it, and an empty window must give an empty frame.
    flat = images.reshape(len(images), int(np.prod(images.shape[1:])))
    quantiles = np.quantile(flat, [0.1, 0.5, 0.9], axis=1) if len(flat) else np.zeros((3, 0))
    values = [flat.mean(axis=1), flat.std(axis=1), *quantiles]
    return pd.DataFrame(dict(zip(INTENSITY_COLUMNS, values, strict=True)), dtype="float64")


def embedding_function(model: Any, *, batch_size: int = 1024) -> Embedder:
    """The model's penultimate-layer output as an embedder (a sub-model on ``model.layers[-2].output``).

    Args:
        model: a built functional or Sequential ``keras.Model``.
        batch_size: samples per call.

    Returns:
        A function ``(n, *input_shape) -> (n, d)``; backend-agnostic (``keras.ops``).
    """
    import keras

    if len(model.layers) < 2:
        raise ValueError(f"Expected a model with at least 2 layers. Received {len(model.layers)}.")
    sources = model.inputs
    sub = keras.Model(sources[0] if len(sources) == 1 else sources, model.layers[-2].output)
    width = int(np.prod(sub.output.shape[1:]))

    def embed(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype="float32")
        parts = [
            keras.ops.convert_to_numpy(sub(batch[start : start + batch_size], training=False))
            for start in range(0, len(batch), batch_size)
        ]
        return np.concatenate(parts).reshape(len(batch), -1) if parts else np.zeros((0, width))

    return embed


def fit_features(
    meta: DatasetMeta, reference: np.ndarray, *, components: int, embed: Embedder | None = None
) -> FeatureSpec:
    """Fit the monitoring features on the reference inputs.

    Args:
        meta: what the inputs mean (kind, task, feature names).
        reference: the champion's reference inputs, source units.
        components: principal components kept of the embedding (plan ``monitoring.embedding_components``).
        embed: the model's embedder for image inputs; None leaves the embedding out.

    Returns:
        The spec ``build_frame`` applies to the reference and to every window.
    """
    if meta.kind == "tabular":
        width = int(np.prod(meta.input_shape))
        names = tuple(meta.feature_names) or tuple(f"x{j}" for j in range(width))
        return FeatureSpec(kind="tabular", task=meta.task, input_columns=names)
    projection = fit_projection(embed(reference), components) if embed is not None else None
    return FeatureSpec(kind="image", task=meta.task, input_columns=(), projection=projection)


def build_frame(
    spec: FeatureSpec,
    inputs: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    *,
    embed: Embedder | None = None,
) -> pd.DataFrame:
    """The monitoring frame of a batch of inputs and what the model answered for them.

    Args:
        spec: the fitted spec (``fit_features``).
        inputs: ``(n, *input_shape)`` raw inputs, source units.
        predicted: ``(n,)`` predicted class ids (or values, for regression).
        confidence: ``(n,)`` probability of the predicted class (ignored for regression).
        embed: the embedder the spec's projection was fitted with (image specs with a projection).

    Returns:
        One row per sample: the input columns (tabular) or intensity statistics and embedding components
        (image), then ``predicted`` (int for classification) and ``confidence`` (classification only).
    """
    inputs = np.asarray(inputs)
    n = len(inputs)
    if len(predicted) != n or (spec.task == "classification" and len(confidence) != n):
        raise ValueError(
            f"Expected one prediction and confidence per input. Received {n} inputs, {len(predicted)} "
            f"predictions, {len(confidence)} confidences."
        )
    if spec.kind == "tabular":
        flat = inputs.reshape(n, -1).astype("float64")
        if flat.shape[1] != len(spec.input_columns):
            raise ValueError(
                f"Expected {len(spec.input_columns)} input columns ({', '.join(spec.input_columns[:5])}...). "
                f"Received {flat.shape[1]}."
            )
        frame = pd.DataFrame(flat, columns=list(spec.input_columns))
    else:
        frame = intensity_statistics(inputs)
        if spec.projection is not None:
            if embed is None:
                raise ValueError("Expected the embedder the projection was fitted with. Received none.")
            scores = (
                spec.projection.apply(embed(inputs)) if n else np.zeros((0, len(spec.projection.components)))
            )
            for j in range(scores.shape[1]):
                frame[f"{EMBEDDING_PREFIX}{j + 1}"] = scores[:, j]
    if spec.task == "classification":
        frame[PREDICTED] = np.asarray(predicted).astype("int64")
        frame[CONFIDENCE] = np.asarray(confidence, dtype="float64")
    else:
        frame[PREDICTED] = np.asarray(predicted, dtype="float64")
    return frame


def predict_outputs(predict: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, task: str) -> tuple:
    """Predicted class and confidence (or value) from a model's output function.

    Args:
        predict: ``(n, *input_shape) -> (n, num_classes)`` probabilities, ``(n, 1)`` sigmoid or values.
        inputs: the batch.
        task: ``classification`` or ``regression``.

    Returns:
        ``(predicted, confidence)``; confidence is NaN for regression.
    """
    outputs = np.asarray(predict(inputs), dtype="float64").reshape(len(inputs), -1)
    if task == "regression":
        return outputs[:, 0], np.full(len(inputs), np.nan)
    if outputs.shape[1] == 1:  # a sigmoid: probability of class 1
        positive = outputs[:, 0]
        predicted = (positive >= 0.5).astype("int64")
        return predicted, np.where(predicted == 1, positive, 1 - positive)
    return outputs.argmax(axis=1).astype("int64"), outputs.max(axis=1)
