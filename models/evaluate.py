"""Testing a model on the held-out split: metrics, confusion matrix, size and in-process latency.

``evaluate_predictions`` and ``metric_value`` are pure functions on arrays. ``predict_outputs`` and
``measure_latency`` call the model directly through one compiled function (never ``model.predict``, which
costs ~75 ms a call here). ``write_evaluation`` writes the evaluate stage's files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data.dataset import Dataset, write_npz

LATENCY_WARMUP_CALLS = 5
LATENCY_CALLS = {1: 200, 64: 50}  # timed calls per batch size; other sizes get 30
BYTES_PER_MB = 1_000_000


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class ids from model outputs: argmax of softmax rows, or ``p >= 0.5`` for one sigmoid column."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return (outputs.reshape(-1) >= 0.5).astype("int64")
    return outputs.argmax(axis=-1).astype("int64")


def positive_scores(outputs: np.ndarray) -> np.ndarray:
    """The score of class 1 for a binary model: the sigmoid output, or softmax column 1."""
    outputs = np.asarray(outputs)
    return outputs.reshape(-1) if outputs.ndim == 1 or outputs.shape[-1] == 1 else outputs[:, 1]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``matrix[actual, predicted]`` counts, shape (num_classes, num_classes)."""
    index = np.asarray(y_true, dtype="int64") * num_classes + np.asarray(y_pred, dtype="int64")
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _per_class(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    true_positive = np.diag(matrix).astype("float64")
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    # A class never predicted (or absent) scores 0, like scikit-learn's zero_division=0.
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return precision, recall, f1, support


def metric_value(name: str, y_true: np.ndarray, outputs: np.ndarray, num_classes: int) -> float:
    """One named metric of outputs against targets (the gate's bootstrap recomputes it per resample).

    Args:
        name: accuracy, macro_precision, macro_recall, macro_f1, roc_auc, mae, mse or r2.
        y_true: class ids, or regression targets.
        outputs: model outputs (probabilities, or regression values).
        num_classes: number of classes (ignored for regression metrics).

    Returns:
        The metric's value.
    """
    y_true = np.asarray(y_true)
    if name in ("mae", "mse", "r2"):
        predicted = np.asarray(outputs, dtype="float64").reshape(-1)
        error = predicted - y_true.astype("float64").reshape(-1)
        if name == "mae":
            return float(np.abs(error).mean())
        if name == "mse":
            return float((error**2).mean())
        variance = float(((y_true - y_true.mean()) ** 2).sum())
        return 1.0 - float((error**2).sum()) / variance if variance > 0 else 0.0
    if name == "roc_auc":
        from sklearn.metrics import roc_auc_score

        if len(np.unique(y_true)) < 2:
            return float("nan")
        return float(roc_auc_score(y_true, positive_scores(outputs)))
    y_pred = predicted_classes(outputs)
    if name == "accuracy":
        return float((y_pred == y_true).mean())
    precision, recall, f1, _ = _per_class(confusion_matrix(y_true, y_pred, num_classes))
    values = {"macro_precision": precision, "macro_recall": recall, "macro_f1": f1}
    if name not in values:
        raise ValueError(
            f"Expected one of accuracy, {', '.join(values)}, roc_auc, mae, mse, r2. Received: {name!r}"
        )
    return float(values[name].mean())


def evaluate_predictions(
    y_true: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], task: str
) -> dict[str, Any]:
    """Test metrics from targets and model outputs.

    Args:
        y_true: class ids ``0..len(classes)-1`` (classification) or targets (regression), shape (n,).
        probabilities: model outputs: (n, num_classes) softmax, (n,) or (n, 1) sigmoid, or regression values.
        classes: class names in id order (empty for regression).
        task: "classification" or "regression".

    Returns:
        Classification: accuracy, macro_precision, macro_recall, macro_f1, roc_auc (binary only), confusion
        (list of rows, actual x predicted), per_class {name: {precision, recall, f1, support}}, n.
        Regression: mae, mse, r2, n.
    """
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    if len(y_true) != len(probabilities):
        raise ValueError(
            f"Expected one output row per target. "
            f"Received {len(probabilities)} outputs for {len(y_true)} targets."
        )
    if task == "regression":
        return {name: metric_value(name, y_true, probabilities, 0) for name in ("mae", "mse", "r2")} | {
            "n": len(y_true)
        }
    if task != "classification":
        raise ValueError(f"Expected task 'classification' or 'regression'. Received: {task!r}")
    num_classes = len(classes)
    y_pred = predicted_classes(probabilities)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    precision, recall, f1, support = _per_class(matrix)
    metrics: dict[str, Any] = {
        "accuracy": float((y_pred == y_true).mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
    }
    if num_classes == 2:
        metrics["roc_auc"] = metric_value("roc_auc", y_true, probabilities, 2)
    metrics["n"] = len(y_true)
    metrics["confusion"] = matrix.tolist()
    metrics["per_class"] = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return metrics


def compiled_call(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> model(x, training=False)`` as numpy, compiled once: a ``tf.function`` on the TensorFlow
    backend (one trace per input shape), the direct call elsewhere (JAX ops are jitted already)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        function = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    else:

        def function(x: Any) -> Any:
            return model(x, training=False)

    return lambda x: keras.ops.convert_to_numpy(function(np.asarray(x, dtype="float32")))


def predict_outputs(model: Any, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Model outputs for all rows, in batches, through one compiled call.

    Args:
        model: a Keras model.
        features: raw inputs, shape (n, *input_shape).
        batch_size: rows per call.

    Returns:
        The outputs, float32, one row per input row.
    """
    call = compiled_call(model)
    parts = [call(features[start : start + batch_size]) for start in range(0, len(features), batch_size)]
    return np.concatenate(parts).astype("float32") if parts else np.zeros((0,), "float32")


def measure_latency(model: Any, sample: np.ndarray, batch_sizes: Sequence[int] = (1, 64)) -> dict[str, float]:
    """In-process inference latency of a direct compiled model call, after warm-up.

    Args:
        model: a Keras model.
        sample: some raw input rows; tiled to each batch size.
        batch_sizes: the batch sizes to time.

    Returns:
        ``latency_p50_ms_batch<b>`` and ``latency_p99_ms_batch<b>`` for each batch size, in milliseconds.
    """
    if len(sample) == 0:
        raise ValueError("Expected at least one sample row to time the model. Received: 0 rows.")
    call = compiled_call(model)
    results: dict[str, float] = {}
    for size in batch_sizes:
        batch = np.resize(np.asarray(sample, dtype="float32"), (size, *np.shape(sample)[1:]))
        for _ in range(LATENCY_WARMUP_CALLS):  # traces the function, fills caches
            call(batch)
        timings = []
        for _ in range(LATENCY_CALLS.get(size, 30)):
            started = time.perf_counter()
            call(batch)
            timings.append((time.perf_counter() - started) * 1000)
        results[f"latency_p50_ms_batch{size}"] = float(np.percentile(timings, 50))
        results[f"latency_p99_ms_batch{size}"] = float(np.percentile(timings, 99))
    return results


def model_size_mb(path: Path) -> float:
    """The saved model file's size in MB (10^6 bytes)."""
    return Path(path).stat().st_size / BYTES_PER_MB


def write_evaluation(
    reports_dir: Path,
    metrics: dict[str, Any],
    *,
    classes: Sequence[str],
    y_true: np.ndarray,
    outputs: np.ndarray,
    sample_ids: np.ndarray,
) -> dict[str, Path]:
    """Write the evaluate stage's files.

    Args:
        reports_dir: the folder (``reports/``).
        metrics: flat numbers plus ``per_class`` / ``confusion`` from ``evaluate_predictions`` (and latency,
            size).
        classes: class names in id order (empty for regression).
        y_true: test targets.
        outputs: test outputs of the model.
        sample_ids: test sample ids.

    Returns:
        ``{"metrics": metrics.json, "confusion": confusion.csv, "predictions": predictions_test.npz}``.
    """
    reports_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": reports_dir / "metrics.json",
        "confusion": reports_dir / "confusion.csv",
        "predictions": reports_dir / "predictions_test.npz",
    }
    # DVC metrics: flat numbers plus nested per_class; the matrix itself goes to the plot file.
    document = {key: value for key, value in metrics.items() if key != "confusion"}
    paths["metrics"].write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    lines = ["actual,predicted"]
    if classes:
        predicted = predicted_classes(outputs)
        lines += [f"{classes[int(a)]},{classes[int(p)]}" for a, p in zip(y_true, predicted, strict=True)]
    paths["confusion"].write_text("\n".join(lines) + "\n")
    write_npz(
        paths["predictions"],
        {"outputs": np.asarray(outputs), "labels": np.asarray(y_true), "sample_ids": sample_ids.astype(str)},
    )
    return paths


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(outputs, labels, sample_ids)`` from a ``predictions_test.npz``."""
    with np.load(path, allow_pickle=False) as arrays:
        return arrays["outputs"], arrays["labels"], arrays["sample_ids"]


def evaluate_model(model: Any, test: Dataset, model_path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Everything the evaluate stage measures on the test split.

    Args:
        model: the loaded Keras model.
        test: the test split (raw inputs; the model scales them itself).
        model_path: the saved ``.keras`` file (for its size).

    Returns:
        ``(metrics, outputs)``: ``evaluate_predictions`` plus latency and ``model_size_mb``; the outputs.
    """
    outputs = predict_outputs(model, test.features)
    classes = test.meta.classes if test.meta.task == "classification" else []
    metrics = evaluate_predictions(test.labels, outputs, classes, test.meta.task)
    metrics.update(measure_latency(model, test.features[:64]))
    metrics["model_size_mb"] = model_size_mb(model_path)
    return metrics, outputs
