"""build_model: each layer kind from plan YAML, scaling in the model, builders, errors naming the field."""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from config.plan import ModelSection, OptimizerSection, PlanError, TrainSection, parse_plan
from models.build import ModelBuildError, build_model, build_optimizer, scaling_layer

CONV_PLAN = """
model:
  layers:
    - {type: Input, shape: [8, 8, 1]}
    - {type: Rescaling, scale: 0.0625, offset: -0.5}
    - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, activation: leaky_relu,
       kernel_regularizer: {kind: l2, l2: 0.001}}
    - {type: BatchNormalization}
    - {type: MaxPooling2D, pool_size: 2}
    - {type: Conv2D, filters: 6, kernel_size: [3, 3], strides: 1, activation: elu,
       kernel_regularizer: {kind: l1, l1: 0.0001}}
    - {type: GlobalAveragePooling2D}
    - {type: Dropout, rate: 0.25}
    - {type: Dense, units: 12, activation: gelu, kernel_regularizer: {kind: l1_l2, l1: 0.0001, l2: 0.001}}
    - {type: Dense, units: 8, activation: tanh}
    - {type: Flatten}
    - {type: Dense, units: 3, activation: softmax}
"""


def model_section(text: str) -> ModelSection:
    return ModelSection.model_validate(yaml.safe_load(textwrap.dedent(text))["model"])


def image_meta(tiny_meta, shape=(8, 8, 1), scaling=None):
    return replace(tiny_meta, input_shape=list(shape), scaling=scaling or {"method": "none"})


def test_every_layer_kind_builds_from_yaml_with_the_right_shapes(tiny_meta):
    model = build_model(model_section(CONV_PLAN), image_meta(tiny_meta), TrainSection())

    shapes = [tuple(layer.output.shape) for layer in model.layers]
    assert shapes == [
        (None, 8, 8, 1),  # Rescaling
        (None, 8, 8, 4),  # Conv2D same
        (None, 8, 8, 4),  # BatchNormalization
        (None, 4, 4, 4),  # MaxPooling2D
        (None, 2, 2, 6),  # Conv2D valid 3x3
        (None, 6),  # GlobalAveragePooling2D
        (None, 6),
        (None, 12),
        (None, 8),
        (None, 8),  # Flatten of a flat tensor
        (None, 3),
    ]
    conv, dense = model.layers[1], model.layers[7]
    assert conv.activation.__name__ == "leaky_relu"
    assert dense.activation.__name__ == "gelu"
    assert isinstance(conv.kernel_regularizer, keras.regularizers.L2)
    assert isinstance(dense.kernel_regularizer, keras.regularizers.L1L2)
    assert model.layers[6].rate == 0.25
    assert model.optimizer is not None and model.loss == "sparse_categorical_crossentropy"
    # Regularizers add their penalties to the loss.
    model(np.zeros((1, 8, 8, 1), "float32"))
    assert len(model.losses) == 3


def test_saved_keras_file_gives_identical_predictions(tiny_meta, tmp_path):
    meta = image_meta(tiny_meta, scaling={"method": "standard", "mean": [3.0], "std": [2.0]})
    model = build_model(model_section(CONV_PLAN), meta, TrainSection())
    inputs = np.random.default_rng(0).uniform(0, 16, (5, 8, 8, 1)).astype("float32")
    model.fit(inputs, np.array([0, 1, 2, 0, 1]), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")

    loaded = keras.models.load_model(tmp_path / "model.keras")

    np.testing.assert_array_equal(np.asarray(loaded(inputs)), np.asarray(model(inputs)))
    assert loaded.layers[0].name == "scaling"


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [
        ({"method": "standard", "mean": [2.0] * 64, "std": [4.0] * 63 + [0.0]}, lambda x: (x - 2) / 4),
        ({"method": "minmax", "min": [0.0] * 64, "max": [16.0] * 64}, lambda x: x / 16),
        ({"method": "standard", "mean": 8.0, "std": 2.0}, lambda x: (x - 8) / 2),
    ],
)
def test_fitted_scaling_is_the_first_layer_and_takes_raw_inputs(tiny_meta, scaling, expected):
    meta = replace(tiny_meta, scaling=scaling)
    plan_model = ModelSection(layers=[{"type": "Flatten"}, {"type": "Dense", "units": 3}])  # no Input layer

    model = build_model(plan_model, meta, TrainSection())

    raw = np.random.default_rng(1).uniform(0, 16, (4, 8, 8)).astype("float32")
    scaled = np.asarray(model.get_layer("scaling")(raw))
    want = expected(raw)
    if scaling["method"] == "standard" and np.ndim(scaling["std"]):
        want[:, 7, 7] = raw[:, 7, 7] - 2  # a zero spread divides by 1, never by 0
    np.testing.assert_allclose(scaled, want, rtol=1e-5, atol=1e-5)
    assert model.input_shape == (None, 8, 8)


def test_scaling_errors_name_the_field():
    with pytest.raises(ModelBuildError, match=r"meta.scaling.method: Expected one of none, standard, minmax"):
        scaling_layer({"method": "robust"}, (8, 8))
    with pytest.raises(ModelBuildError, match=r"meta.scaling: std: required"):
        scaling_layer({"method": "standard", "mean": [0.0]}, (8, 8))
    with pytest.raises(ModelBuildError, match=r"meta.scaling.mean: Expected 1, 8 .* or 64 .* Received 5"):
        scaling_layer({"method": "standard", "mean": [0.0] * 5, "std": [1.0] * 5}, (8, 8))
    assert scaling_layer({"method": "none"}, (8, 8)) is None


def test_input_layer_must_match_the_data(tiny_meta):
    plan_model = ModelSection(layers=[{"type": "Input", "shape": [28, 28]}, {"type": "Dense", "units": 3}])
    with pytest.raises(ModelBuildError) as error:
        build_model(plan_model, tiny_meta, TrainSection())
    assert str(error.value) == (
        "model.layers[0].shape: Expected [8, 8] (the prepared data's input_shape). Received [28, 28]."
    )


def test_a_layer_that_cannot_follow_names_its_index(tiny_meta):
    plan_model = ModelSection(
        layers=[
            {"type": "Flatten"},
            {"type": "Conv2D", "filters": 2, "kernel_size": 3},
            {"type": "Dense", "units": 3},
        ]
    )
    with pytest.raises(
        ModelBuildError, match=re.escape("model.layers[1] (Conv2D): can't follow output shape")
    ):
        build_model(plan_model, tiny_meta, TrainSection())


def test_output_units_must_fit_the_classes(tiny_meta):
    plan_model = ModelSection(layers=[{"type": "Flatten"}, {"type": "Dense", "units": 10}])
    with pytest.raises(
        ModelBuildError, match=re.escape("model.layers[1]: Expected the model's output shape (None, 3)")
    ):
        build_model(plan_model, tiny_meta, TrainSection())


def test_bad_layer_specs_in_the_plan_name_the_field():
    raw = yaml.safe_load(Path("plan.yaml").read_text())
    raw["model"]["layers"][3] = {"type": "Dense", "activation": "relu"}
    raw["model"]["layers"][4] = {"type": "Dropout", "rate": 0.2, "units": 4}
    with pytest.raises(PlanError) as error:
        parse_plan(raw, "plan.yaml")
    text = str(error.value)
    assert "plan.yaml: model.layers.3: units: required for a Dense layer" in text
    assert "model.layers.4: units: not taken by a Dropout layer" in text


def test_unknown_metric_names_its_index(tiny_meta):
    plan_model = ModelSection(layers=[{"type": "Flatten"}, {"type": "Dense", "units": 3}])
    with pytest.raises(ModelBuildError, match=re.escape("train.metrics[1]: unknown Keras metric 'acuracy'")):
        build_model(plan_model, tiny_meta, TrainSection(metrics=["accuracy", "acuracy"]))


def test_binary_and_regression_heads(tiny_meta):
    plan_model = ModelSection(
        layers=[{"type": "Flatten"}, {"type": "Dense", "units": 1, "activation": "sigmoid"}]
    )
    binary = build_model(
        plan_model, replace(tiny_meta, classes=["no", "yes"]), TrainSection(loss="binary_crossentropy")
    )
    assert binary.output_shape == (None, 1)
    regression = build_model(
        ModelSection(layers=[{"type": "Flatten"}, {"type": "Dense", "units": 1}]),
        replace(tiny_meta, task="regression", classes=[]),
        TrainSection(loss="mse", metrics=["mae"]),
    )
    assert regression.output_shape == (None, 1)


@pytest.mark.parametrize(
    ("spec", "kind", "check"),
    [
        ({"name": "sgd", "momentum": 0.9, "nesterov": True}, keras.optimizers.SGD, lambda o: o.nesterov),
        ({"name": "adam"}, keras.optimizers.Adam, lambda o: True),
        ({"name": "rmsprop", "schedule": "exponential", "decay_steps": 10, "decay_rate": 0.5},
         keras.optimizers.RMSprop,
         lambda o: float(o._learning_rate(10)) == pytest.approx(5e-4)),
        ({"name": "adagrad", "schedule": "cosine", "decay_steps": 10}, keras.optimizers.Adagrad,
         lambda o: float(o._learning_rate(10)) == pytest.approx(0.0)),
        ({"name": "adadelta", "learning_rate": 0.5}, keras.optimizers.Adadelta,
         lambda o: float(o.learning_rate) == pytest.approx(0.5)),
    ],
)  # fmt: skip
def test_optimizers_and_schedules(spec, kind, check):
    optimizer = build_optimizer(OptimizerSection(**spec))
    assert isinstance(optimizer, kind)
    assert check(optimizer)


def test_builder_function_gets_the_plan_and_shapes_and_scaling_is_prepended(tiny_meta, tmp_path, monkeypatch):
    (tmp_path / "my_builders.py").write_text(
        textwrap.dedent(
            """
            import keras

            def residual(plan_model, input_shape, num_classes):
                inputs = keras.Input(shape=input_shape)
                x = keras.layers.Flatten()(inputs)
                h = keras.layers.Dense(64, activation="relu")(x)
                x = keras.layers.Add()([x, h])
                return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))

            def not_a_model(plan_model, input_shape, num_classes):
                return "nope"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    model = build_model(ModelSection(builder="my_builders:residual"), tiny_meta, TrainSection())

    assert model.output_shape == (None, 3)
    assert model.layers[1].name == "scaling"  # tiny_meta carries standard scaling
    with pytest.raises(
        ModelBuildError,
        match="model.builder: Expected my_builders:not_a_model to return a keras.Model. Received str.",
    ):
        build_model(ModelSection(builder="my_builders:not_a_model"), tiny_meta, TrainSection())
    with pytest.raises(
        ModelBuildError, match="model.builder: Expected module 'my_builders' to define a function 'missing'"
    ):
        build_model(ModelSection(builder="my_builders:missing"), tiny_meta, TrainSection())
    with pytest.raises(
        ModelBuildError, match="model.builder: can't import module 'no_such_module' of 'no_such_module:f'"
    ):
        build_model(ModelSection(builder="no_such_module:f"), tiny_meta, TrainSection())


def test_mixed_precision_keeps_the_output_float32(tiny_meta):
    plan_model = ModelSection(
        layers=[
            {"type": "Flatten"},
            {"type": "Dense", "units": 8},
            {"type": "Dense", "units": 3, "activation": "softmax"},
        ]
    )
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(plan_model, tiny_meta, TrainSection())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[-2].compute_dtype == "float16"
    assert model.layers[-1].compute_dtype == "float32"


def test_model_code_is_backend_agnostic():
    tree = ast.parse((Path(__file__).parents[2] / "models" / "build.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        (node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    }
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "tensorflow" not in imported and "jax" not in imported and "torch" not in imported
    assert "tf" not in names
