"""Export a Keras model to ONNX and check that ONNX Runtime answers like Keras.

Serving measured both ways of calling a model (see ``bench/serve.py``): ONNX Runtime on the exported graph
is the fast path; a compiled direct Keras call is the fallback when export or the check fails.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

ONNX_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The model could not be exported, or the export does not answer like the Keras model."""


def export_onnx(keras_model: Any, path: str | Path) -> Path:
    """Write ``keras_model`` as an ONNX file (``model.export(format="onnx")``, tf2onnx underneath).

    Args:
        keras_model: a built Keras model (called once here on zeros when it never was: Keras needs that).
        path: the ``.onnx`` file to write (parent folders are created).

    Returns:
        The written path.

    Raises:
        ExportError: the model has no input shape, or the export failed (the message carries the cause).
    """
    path = Path(path)
    inputs = getattr(keras_model, "inputs", None)
    if not getattr(keras_model, "built", False) or not inputs:
        raise ExportError(
            "Expected a built Keras model with a known input shape. "
            f"Received: {type(keras_model).__name__} with built={getattr(keras_model, 'built', None)}."
        )
    if not getattr(keras_model, "_called", True):
        # A model fresh from load_model has never been called; Keras's exporter needs one call.
        shape = tuple(1 if dim is None else dim for dim in inputs[0].shape)
        keras_model(np.zeros(shape, dtype="float32"), training=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    import keras

    try:
        # tf2onnx prints its progress to stdout; keep the service's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            if keras.backend.backend() == "tensorflow":
                _export_tensorflow(keras_model, path)
            else:
                keras_model.export(str(path), format="onnx", verbose=False)
    except Exception as error:  # noqa: BLE001 - any exporter failure means "use the fallback"
        raise ExportError(f"ONNX export of {keras_model.name!r} to {path} failed: {error}") from error
    return path


def _export_tensorflow(keras_model: Any, path: Path) -> None:
    """What ``model.export(format="onnx")`` does on TensorFlow, plus one fix: tensors the traced function
    captures as constants (a Normalization layer's fixed mean and variance, which is how ``prepare``'s
    scaling travels in the model) come out of tf2onnx as extra graph *inputs*, so ONNX Runtime asks for
    them. They are folded back in here as initializers with their values."""
    import onnx
    import tf2onnx
    from keras.src import tree
    from keras.src.export.export_utils import get_input_signature, make_tf_tensor_spec
    from keras.src.export.onnx import get_concrete_fn
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    signature = tree.map_structure(make_tf_tensor_spec, get_input_signature(keras_model))
    function = get_concrete_fn(keras_model, signature)
    patch_tf2onnx()
    proto, _ = tf2onnx.convert.from_function(function, signature)
    graph = function.get_concrete_function(*signature).graph
    constants = {
        inner.name: outer.numpy() for outer, inner in graph.captures if outer.dtype.name != "resource"
    }
    for graph_input in list(proto.graph.input):
        if graph_input.name in constants:
            value = np.asarray(constants[graph_input.name])
            proto.graph.initializer.append(onnx.numpy_helper.from_array(value, graph_input.name))
            proto.graph.input.remove(graph_input)
    onnx.save(proto, str(path))


def onnx_session(path: str | Path, *, threads: int = 1) -> Any:
    """An ONNX Runtime inference session on ``path``, CPU, ``threads`` intra-op threads.

    One intra-op thread per session: serving runs several requests at once on few cores, and ORT's own
    thread pool would fight the request threads for them.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_onnx_matches(
    session: Any, keras_outputs: np.ndarray, inputs: np.ndarray, *, tolerance: float = ONNX_TOLERANCE
) -> float:
    """Run ``session`` on ``inputs`` and compare with what Keras answered for them.

    Args:
        session: an ONNX Runtime session.
        keras_outputs: the Keras model's outputs for ``inputs``.
        inputs: float32 input batch.
        tolerance: largest allowed absolute difference.

    Returns:
        The largest absolute difference.

    Raises:
        ExportError: the outputs differ by more than ``tolerance`` (or have another shape).
    """
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: np.asarray(inputs, dtype="float32")})[0]
    if outputs.shape != keras_outputs.shape:
        raise ExportError(
            f"Expected ONNX outputs of shape {keras_outputs.shape} like Keras. Received: {outputs.shape}."
        )
    difference = float(np.max(np.abs(outputs - keras_outputs))) if outputs.size else 0.0
    if not difference <= tolerance:
        raise ExportError(
            f"Expected ONNX outputs within {tolerance:g} of Keras. Received: max difference {difference:g}."
        )
    return difference
