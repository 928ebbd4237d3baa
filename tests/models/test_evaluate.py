"""Test metrics on hand-made arrays, latency of a real (tiny) model, and the evaluate stage's files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from models.evaluate import (
    confusion_matrix,
    evaluate_predictions,
    measure_latency,
    metric_value,
    predict_outputs,
    read_predictions,
    write_evaluation,
)


def one_hot(classes: list[int], k: int) -> np.ndarray:
    return np.eye(k, dtype="float32")[classes]


def test_classification_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = [0, 1, 1, 1, 2, 0]  # class 0: P 1/2 R 1/2; class 1: P 2/3 R 1; class 2: P 1 R 1/2
    metrics = evaluate_predictions(y_true, one_hot(y_pred, 3), ["a", "b", "c"], "classification")

    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert metrics["macro_recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    f1 = [0.5, 2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5]
    assert metrics["macro_f1"] == pytest.approx(np.mean(f1))
    assert metrics["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": f1[1], "support": 2}
    )
    assert metrics["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert "roc_auc" not in metrics
    assert metrics["n"] == 6


def test_matches_scikit_learn_on_random_outputs():
    from sklearn.metrics import f1_score, precision_score, recall_score

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    outputs = rng.dirichlet(np.ones(4), 200)
    y_pred = outputs.argmax(1)
    metrics = evaluate_predictions(y_true, outputs, list("abcd"), "classification")
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["macro_precision"] == pytest.approx(precision_score(y_true, y_pred, average="macro"))
    assert metrics["macro_recall"] == pytest.approx(recall_score(y_true, y_pred, average="macro"))


def test_never_predicted_class_scores_zero_not_nan():
    metrics = evaluate_predictions(
        np.array([0, 1, 2]), one_hot([0, 1, 1], 3), ["a", "b", "c"], "classification"
    )
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert np.isfinite(metrics["macro_f1"])


def test_binary_roc_auc_from_sigmoid_and_softmax():
    y_true = np.array([0, 0, 1, 1])
    sigmoid = np.array([[0.1], [0.4], [0.35], [0.8]])  # one of four pairs misordered: AUC 0.75
    metrics = evaluate_predictions(y_true, sigmoid, ["neg", "pos"], "classification")
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(3 / 4)  # 0.35 < 0.5 is predicted negative
    softmax = np.concatenate([1 - sigmoid, sigmoid], axis=1)
    assert metric_value("roc_auc", y_true, softmax, 2) == pytest.approx(0.75)


def test_regression_metrics():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([[1.5], [2.0], [2.0], [4.0]])
    metrics = evaluate_predictions(y_true, predicted, [], "regression")
    assert metrics["mae"] == pytest.approx((0.5 + 0 + 1 + 0) / 4)
    assert metrics["mse"] == pytest.approx((0.25 + 1) / 4)
    assert metrics["r2"] == pytest.approx(1 - 1.25 / 5.0)


def test_errors_say_what_was_expected():
    with pytest.raises(ValueError, match="Received 2 outputs for 3 targets"):
        evaluate_predictions(np.array([0, 1, 0]), one_hot([0, 1], 2), ["a", "b"], "classification")
    with pytest.raises(ValueError, match="Received: 'ranking'"):
        evaluate_predictions(np.array([0]), one_hot([0], 2), ["a", "b"], "ranking")
    with pytest.raises(ValueError, match="Received: 'top5'"):
        metric_value("top5", np.array([0]), one_hot([0], 2), 2)


def test_confusion_matrix_counts_actual_by_predicted():
    assert confusion_matrix(np.array([1, 1, 0]), np.array([0, 1, 0]), 2).tolist() == [[1, 0], [1, 1]]


@pytest.fixture
def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    return model


def test_predict_outputs_match_direct_call_in_batches(tiny_model):
    x = np.random.default_rng(1).uniform(0, 16, (70, 8, 8)).astype("float32")
    outputs = predict_outputs(tiny_model, x, batch_size=32)
    assert outputs.shape == (70, 3)
    np.testing.assert_allclose(outputs, keras.ops.convert_to_numpy(tiny_model(x)), atol=1e-6)


def test_measure_latency_reports_each_batch_size(tiny_model):
    sample = np.zeros((5, 8, 8), "float32")
    latency = measure_latency(tiny_model, sample, batch_sizes=(1, 64))
    assert set(latency) == {
        "latency_p50_ms_batch1", "latency_p99_ms_batch1", "latency_p50_ms_batch64", "latency_p99_ms_batch64",
    }  # fmt: skip
    assert all(value > 0 for value in latency.values())
    assert latency["latency_p99_ms_batch1"] >= latency["latency_p50_ms_batch1"]
    with pytest.raises(ValueError, match="0 rows"):
        measure_latency(tiny_model, sample[:0])


def test_write_evaluation_files(tmp_path: Path):
    y_true = np.array([0, 1, 1])
    outputs = one_hot([0, 0, 1], 2)
    metrics = evaluate_predictions(y_true, outputs, ["cat", "dog"], "classification")
    paths = write_evaluation(
        tmp_path, metrics, classes=["cat", "dog"], y_true=y_true, outputs=outputs,
        sample_ids=np.array(["a", "b", "c"]),
    )  # fmt: skip

    document = json.loads(paths["metrics"].read_text())
    assert document["accuracy"] == pytest.approx(2 / 3)
    assert document["per_class"]["dog"]["recall"] == pytest.approx(0.5)
    assert "confusion" not in document  # the matrix is the plot file, not a metric
    with paths["confusion"].open() as stream:
        assert list(csv.DictReader(stream)) == [
            {"actual": "cat", "predicted": "cat"},
            {"actual": "dog", "predicted": "cat"},
            {"actual": "dog", "predicted": "dog"},
        ]
    stored_outputs, labels, ids = read_predictions(paths["predictions"])
    np.testing.assert_array_equal(stored_outputs, outputs)
    np.testing.assert_array_equal(labels, y_true)
    assert ids.tolist() == ["a", "b", "c"]
    first = paths["predictions"].read_bytes()
    write_evaluation(tmp_path, metrics, classes=["cat", "dog"], y_true=y_true, outputs=outputs,
                     sample_ids=np.array(["a", "b", "c"]))  # fmt: skip
    assert paths["predictions"].read_bytes() == first  # same content, same bytes (DVC hashes stay put)
