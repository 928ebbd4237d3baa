"""Monitoring fixtures: real digits, a small trained Keras model, its monitoring frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from data.dataset import DatasetMeta


@dataclass(frozen=True)
class Digits:
    images: np.ndarray  # (n, 8, 8) float32, 0..16
    labels: np.ndarray
    meta: DatasetMeta


@pytest.fixture(scope="session")
def digits() -> Digits:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(images))
    meta = DatasetMeta(
        source="sklearn:digits",
        kind="image",
        task="classification",
        classes=[str(i) for i in range(10)],
        input_shape=[8, 8],
    )
    return Digits(images[order].reshape(-1, 8, 8).astype("float32"), labels[order].astype("int64"), meta)


@pytest.fixture(scope="session")
def digits_model(digits: Digits) -> Any:
    """The plan's MLP (Rescaling, Flatten, Dense, Dropout, Dense softmax), trained for 3 epochs."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Rescaling(1 / 16),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.images[:1000], digits.labels[:1000], epochs=3, batch_size=64, verbose=0)
    return model


def brighter_noisier(images: np.ndarray, seed: int = 1) -> np.ndarray:
    """Digits as a worse scanner would send them: brighter, with noise, clipped to the 0..16 range."""
    rng = np.random.default_rng(seed)
    return np.clip(images * 1.3 + 3 + rng.normal(0, 2, images.shape), 0, 16).astype("float32")


@pytest.fixture(scope="session")
def shift():
    """The shift function (fixtures are how tests here share helpers: no test packages)."""
    return brighter_noisier


@pytest.fixture(scope="session")
def monitor(digits: Digits, digits_model: Any):
    """``(frame_of(images), reference_frame)``: the model's monitoring frame, fitted on 500 digits."""
    from monitoring.features import build_frame, embedding_function, fit_features, predict_outputs

    embed = embedding_function(digits_model)
    reference = digits.images[:500]
    spec = fit_features(digits.meta, reference, components=3, embed=embed)

    def frame_of(images: np.ndarray):
        outputs = predict_outputs(lambda x: digits_model(x, training=False), images, "classification")
        return build_frame(spec, images, *outputs, embed=embed)

    return frame_of, frame_of(reference)
