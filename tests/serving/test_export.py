"""ONNX export of plan-built models: ONNX Runtime answers like Keras (within 1e-5), or the export says why."""

from __future__ import annotations

import numpy as np
import pytest

from models.export import ExportError, check_onnx_matches, export_onnx, onnx_session


def test_export_with_scaling_inside_the_model_matches_keras(local_models, tmp_path):
    import keras

    # A model fresh from load_model (never called) with prepare's scaling as a Normalization layer: the
    # case Keras's own exporter leaves with its mean/variance as extra ONNX inputs.
    model = keras.saving.load_model(local_models["1"].model_path, safe_mode=True, compile=False)
    path = export_onnx(model, tmp_path / "nested" / "model.onnx")
    session = onnx_session(path)
    assert [graph_input.name for graph_input in session.get_inputs()] == ["features"]
    batch = np.random.default_rng(0).uniform(0, 16, size=(16, 8, 8)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(batch, training=False))
    assert check_onnx_matches(session, expected, batch) <= 1e-5
    one = session.run(None, {"features": batch[:1]})[0]  # any batch size
    np.testing.assert_allclose(one, expected[:1], atol=1e-5)


def test_a_mismatch_is_an_export_error(local_models, tmp_path):
    import keras

    model = keras.saving.load_model(local_models["2"].model_path, safe_mode=True, compile=False)
    session = onnx_session(export_onnx(model, tmp_path / "model.onnx"))
    batch = np.ones((2, 8, 8), dtype="float32")
    wrong = keras.ops.convert_to_numpy(model(batch)) + 1e-3
    with pytest.raises(ExportError, match="within 1e-05 of Keras. Received: max difference"):
        check_onnx_matches(session, wrong, batch)
    with pytest.raises(ExportError, match=r"of shape \(2, 4\)"):
        check_onnx_matches(session, np.zeros((2, 4), "float32"), batch)


def test_a_model_without_input_shape_is_refused(tmp_path):
    import keras

    model = keras.Sequential([keras.layers.Dense(2)])  # never built
    with pytest.raises(ExportError, match="Expected a built Keras model"):
        export_onnx(model, tmp_path / "model.onnx")
