"""Monitoring features: compact columns, a PCA fitted once on the reference, never raw pixels."""

from __future__ import annotations

import numpy as np
import pytest

from data.dataset import DatasetMeta
from monitoring.features import (
    CONFIDENCE,
    INTENSITY_COLUMNS,
    PREDICTED,
    build_frame,
    embedding_function,
    fit_features,
    fit_projection,
    intensity_statistics,
    predict_outputs,
)


def test_intensity_statistics_per_image():
    images = np.stack([np.zeros((8, 8)), np.arange(64).reshape(8, 8)]).astype("float32")

    frame = intensity_statistics(images)

    assert list(frame.columns) == list(INTENSITY_COLUMNS)
    assert frame.loc[0].tolist() == [0, 0, 0, 0, 0]
    assert frame.loc[1, "intensity_mean"] == pytest.approx(31.5)
    assert frame.loc[1, "intensity_q50"] == pytest.approx(31.5)
    assert frame.loc[1, "intensity_q90"] == pytest.approx(np.quantile(np.arange(64), 0.9))


def test_an_empty_window_gives_an_empty_frame_not_an_error():
    frame = intensity_statistics(np.zeros((0, 8, 8), dtype="float32"))

    assert list(frame.columns) == list(INTENSITY_COLUMNS) and len(frame) == 0


def test_projection_keeps_the_main_direction():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5
    points = rng.normal(size=(200, 1)) * 10 * direction + rng.normal(size=(200, 3)) * 0.1

    projection = fit_projection(points, 2)

    assert projection.components.shape == (2, 3)
    assert abs(projection.components[0] @ direction) == pytest.approx(1, abs=1e-3)
    assert projection.apply(points).shape == (200, 2)
    with pytest.raises(ValueError, match="width 3"):
        projection.apply(np.zeros((4, 5)))


def test_image_frame_has_statistics_embedding_and_prediction_not_pixels(digits, digits_model):
    embed = embedding_function(digits_model)
    reference = digits.images[:300]
    spec = fit_features(digits.meta, reference, components=3, embed=embed)
    predicted, confidence = predict_outputs(
        lambda x: digits_model(x, training=False), reference, "classification"
    )

    frame = build_frame(spec, reference, predicted, confidence, embed=embed)

    assert list(frame.columns) == [
        *INTENSITY_COLUMNS,
        "embedding_pc1",
        "embedding_pc2",
        "embedding_pc3",
        PREDICTED,
        CONFIDENCE,
    ]
    assert len(frame) == 300 and frame[PREDICTED].dtype.kind == "i"
    assert frame[CONFIDENCE].between(0, 1).all()
    # the reference's own components are centred: the PCA was fitted on it
    assert frame["embedding_pc1"].mean() == pytest.approx(0, abs=1e-4)
    assert frame["embedding_pc1"].var() >= frame["embedding_pc3"].var()


def test_embedding_is_the_penultimate_layer(digits, digits_model):
    import keras

    embed = embedding_function(digits_model)
    expected = keras.Model(digits_model.inputs[0], digits_model.layers[-2].output)(digits.images[:5])

    assert np.allclose(embed(digits.images[:5]), keras.ops.convert_to_numpy(expected), atol=1e-6)
    assert embed(digits.images[:5]).shape == (5, 32)


def test_tabular_frame_keeps_input_columns():
    meta = DatasetMeta(
        source="table:x.csv", kind="tabular", task="classification", classes=["a", "b"], input_shape=[2],
        feature_names=["age", "income"],
    )  # fmt: skip
    inputs = np.array([[30, 1.5], [40, 2.5]], dtype="float32")
    spec = fit_features(meta, inputs, components=3)

    frame = build_frame(spec, inputs, np.array([0, 1]), np.array([0.9, 0.6]))

    assert list(frame.columns) == ["age", "income", PREDICTED, CONFIDENCE]
    assert frame["income"].tolist() == [1.5, 2.5]
    with pytest.raises(ValueError, match="Expected 2 input columns"):
        build_frame(spec, np.zeros((2, 3)), np.array([0, 1]), np.array([0.9, 0.6]))


def test_misaligned_predictions_are_refused(digits):
    spec = fit_features(digits.meta, digits.images[:10], components=2)

    with pytest.raises(ValueError, match="Received 10 inputs, 9 predictions"):
        build_frame(spec, digits.images[:10], np.zeros(9), np.zeros(10))


def test_predict_outputs_for_softmax_sigmoid_and_regression():
    softmax = predict_outputs(
        lambda x: np.array([[0.2, 0.8], [0.7, 0.3]]), np.zeros((2, 1)), "classification"
    )
    sigmoid = predict_outputs(lambda x: np.array([[0.9], [0.2]]), np.zeros((2, 1)), "classification")
    values = predict_outputs(lambda x: np.array([[1.5], [2.5]]), np.zeros((2, 1)), "regression")

    assert softmax[0].tolist() == [1, 0] and np.allclose(softmax[1], [0.8, 0.7])
    assert sigmoid[0].tolist() == [1, 0] and np.allclose(sigmoid[1], [0.9, 0.8])
    assert values[0].tolist() == [1.5, 2.5] and np.isnan(values[1]).all()
