"""POST /v1/predict/image: uploads are preprocessed exactly like the ``images:`` training source."""

from __future__ import annotations

import io

import numpy as np
import pytest


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An ``images:`` source folder: 3 class folders of 12x10 grey PNGs (resized to 8x8 by the plan)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for label in ("a", "b", "c"):
        (folder / label).mkdir()
        for index in range(3):
            pixels = rng.integers(0, 256, size=(12, 10)).astype("uint8")
            Image.fromarray(pixels, mode="L").save(folder / label / f"{index}.png")
    return folder


@pytest.fixture(scope="module")
def image_model(image_folder, tmp_path_factory, serving_plan):
    """An image model trained on nothing, its meta from the real ``images:`` loader, saved like a version."""
    import keras

    from config.plan import DataSection, ModelSection
    from data.images import load_image_folder
    from models.build import build_model

    data = DataSection(source=f"images:{image_folder}", image_size=(8, 8), color_mode="grayscale")
    dataset = load_image_folder(image_folder, data)
    layers = ModelSection(
        layers=[
            {"type": "Input", "shape": [8, 8]},
            {"type": "Rescaling", "scale": 1 / 255},
            {"type": "Flatten"},
            {"type": "Dense", "units": 3, "activation": "softmax"},
        ]
    )
    keras.utils.set_random_seed(3)
    model = build_model(layers, dataset.meta, serving_plan.train)
    return dataset, model


def test_upload_answers_exactly_as_the_training_loader_would(
    make_client, make_source, image_folder, image_model, tmp_path
):
    import keras

    from models.lineage import file_sha256
    from models.registry import ResolvedModel
    from serving.store.reader import PredictionReader

    dataset, model = image_model
    path = tmp_path / "image-model" / "model.keras"
    path.parent.mkdir()
    model.save(path)
    resolved = ResolvedModel(
        name="tiny-images", version="1", run_id="r", alias="champion", model_path=path,
        sha256=file_sha256(path), meta=dataset.meta, input_example=dataset.features[:2], metrics={},
    )  # fmt: skip
    client = make_client(source=make_source(models={"1": resolved}))
    names = list(dataset.sample_ids[:4])
    files = [("files", (name, (image_folder / name).read_bytes(), "image/png")) for name in names]
    response = client.post("/v1/predict/image", files=files)
    assert response.status_code == 200, response.text
    online = np.array([item["probabilities"] for item in response.json()["predictions"]])
    offline = keras.ops.convert_to_numpy(model(dataset.features[:4], training=False))
    np.testing.assert_allclose(online, offline, atol=1e-5)
    client.get("/metrics")  # the service's own read of what it answered: the records are handed on first
    client.app.state.service.writer.flush()
    with PredictionReader(f"sqlite:///{tmp_path / 'var' / 'predictions.db'}") as reader:
        stored = reader.window(10)
    for features, expected in zip(stored["features"], dataset.features[:4], strict=True):
        np.testing.assert_array_equal(features, expected)  # the same arrays, bit for bit

    corrupt = client.post("/v1/predict/image", files=[("files", ("x.png", b"\x89PNG broken", "image/png"))])
    assert corrupt.status_code == 422
    assert "files[0]: expected an image file (PNG, JPEG, ...)" in corrupt.json()["detail"]
    empty = client.post("/v1/predict/image", files=[])
    assert empty.status_code == 422
    too_many = [
        ("files", (f"{i}.png", (image_folder / names[0]).read_bytes(), "image/png")) for i in range(9)
    ]
    assert "at most 8 images" in client.post("/v1/predict/image", files=too_many).json()["detail"]


def test_image_route_refuses_models_that_take_no_images(make_client):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    client = make_client()  # the 8x8 digits-like model takes images: make it tabular to check the refusal
    service = client.app.state.service
    from dataclasses import replace

    tabular = replace(service.predictor.current.meta, kind="tabular")
    service.predictor.current = replace(service.predictor.current, meta=tabular)
    response = client.post("/v1/predict/image", files=[("files", ("a.png", buffer.getvalue(), "image/png"))])
    assert response.status_code == 400
    assert "not images; send JSON to /v1/predict" in response.json()["detail"]
