"""Input checks and image decoding: pure functions on arrays and bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from data.dataset import DatasetMeta
from serving.inputs import InputError, check_range, decode_image, image_geometry, to_batch, trained_range


def meta(**fields) -> DatasetMeta:
    values = {
        "source": "table:x.csv", "kind": "tabular", "task": "classification", "classes": ["a", "b"],
        "input_shape": [3], "feature_names": ["x", "y", "z"],
    }  # fmt: skip
    values.update(fields)
    return DatasetMeta(**values)


def test_range_from_the_reference_sample_is_per_column_for_tables():
    reference = np.array([[0, 10, -1], [2, 20, 1]], dtype="float32")
    found = trained_range(meta(), reference, tolerance=0.5)
    np.testing.assert_array_equal(found.low, [0, 10, -1])
    np.testing.assert_array_equal(found.tolerance, [1, 5, 1])
    check_range(np.array([[-0.9, 24.9, 1.9]], "float32"), found)
    with pytest.raises(
        InputError, match=r"instances\[1\]: value 25.5 at \[1\] is outside the trained range \[5, 25\]"
    ):
        check_range(np.array([[0, 10, 0], [0, 25.5, 0]], "float32"), found)


def test_range_for_images_is_one_for_all_pixels():
    reference = np.zeros((4, 2, 2), "float32")
    reference[0, 0, 0] = 16
    found = trained_range(meta(kind="image", input_shape=[2, 2]), reference, tolerance=0.1)
    assert found.low.shape == () and float(found.high) == 16
    check_range(np.full((1, 2, 2), 17.5, "float32"), found)  # any pixel may use the whole range
    with pytest.raises(InputError, match="outside the trained range"):
        check_range(np.full((1, 2, 2), 17.7, "float32"), found)


def test_range_falls_back_to_scaling_then_source_units_then_none():
    minmax = meta(scaling={"method": "minmax", "min": [0, 0, 0], "max": [1, 2, 4]})
    assert trained_range(minmax).origin == "minmax scaling fitted on train"
    standard = trained_range(meta(scaling={"method": "standard", "mean": [0, 0, 0], "std": [1, 1, 2]}))
    np.testing.assert_array_equal(standard.high, [6, 6, 12])
    digits = trained_range(meta(source="sklearn:digits", kind="image", input_shape=[8, 8]))
    assert digits.describe() == {
        "low": 0.0,
        "high": 16.0,
        "tolerance": 1.6,
        "origin": "source units of sklearn:digits",
    }
    assert trained_range(meta()) is None
    check_range(np.full((1, 3), 1e9, "float32"), None)  # nothing known: nothing refused


def test_to_batch_shapes_and_types():
    batch = to_batch([[1, 2, 3], [4.5, 5, 6]], [3], 4)
    assert batch.dtype == np.float32 and batch.shape == (2, 3)
    with pytest.raises(InputError, match=r"instances: expected a list of instances, got an object"):
        to_batch({"a": 1}, [3], 4)
    with pytest.raises(InputError, match=r"instances\[1\]\[2\]: expected a number, got a string \('7'\)"):
        to_batch([[1, 2, 3], [1, 2, "7"]], [3], 4)
    with pytest.raises(
        InputError, match=r"instances\[0\]: expected 3 values \(instance shape \[3\]\), got 2"
    ):
        to_batch([[1, 2], [1, 2, 3]], [3], 4)


def png(array: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array.astype("uint8"), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_image_converts_and_resizes_like_training():
    rgb = np.random.default_rng(0).integers(0, 256, size=(12, 10, 3))
    grey = decode_image(png(rgb, "RGB"), (8, 6), "grayscale")
    assert grey.shape == (8, 6) and grey.dtype == np.float32 and grey.min() >= 0 and grey.max() <= 255
    colour = decode_image(png(rgb, "RGB"), (12, 10), "rgb")
    np.testing.assert_array_equal(colour, rgb.astype("float32"))  # right size already: untouched
    with pytest.raises(InputError, match="expected an image file .*got 9 bytes Pillow can't decode"):
        decode_image(b"not a png", (8, 8), "grayscale")


def test_image_geometry_from_the_meta():
    assert image_geometry(meta(kind="image", input_shape=[28, 28])) == ((28, 28), "grayscale")
    assert image_geometry(meta(kind="image", input_shape=[32, 32, 3])) == ((32, 32), "rgb")
    with pytest.raises(InputError, match="takes tabular input of shape \\[3\\], not images") as error:
        image_geometry(meta())
    assert error.value.status == 400


@pytest.mark.parametrize("units", [10, 1], ids=["softmax", "sigmoid"])
def test_one_instance_is_answered_as_its_row_in_a_batch_would_be(units):
    from serving.answers import format_outputs

    meta = DatasetMeta("x", "table", "classification", [f"c{i}" for i in range(max(units, 2))], [3])
    outputs = np.random.default_rng(0).random((4, units)).astype("float32")
    batch_items, batch_predicted, batch_confidence = format_outputs(outputs, meta, ["a", "b", "c", "d"])
    for i, request_id in enumerate("abcd"):
        (item,), predicted, confidence = format_outputs(outputs[i : i + 1], meta, [request_id])
        assert item["class_id"] == batch_items[i]["class_id"] and item["label"] == batch_items[i]["label"]
        assert item["confidence"] == batch_items[i]["confidence"] and item["confidence"].dtype == np.float32
        np.testing.assert_array_equal(item["probabilities"], batch_items[i]["probabilities"])
        assert predicted == [batch_predicted[i]] and confidence == [batch_confidence[i]]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("ranged", ["global", "per-column", "none"])
def test_the_range_check_rejects_what_isnt_finite_as_to_batch_does(bad, ranged):
    reference = np.array([[0, 10, -1], [2, 20, 1]], dtype="float32")
    kind = "image" if ranged == "global" else "tabular"
    found = None if ranged == "none" else trained_range(meta(kind=kind), reference)
    batch = to_batch([[1.0, 15.0, 0.0], [1.0, 15.0, 0.0]], [3], 8, check_finite=False)
    batch[1, 2] = bad
    with pytest.raises(InputError, match=r"instances\[1\]: .* at \[2\]; expected finite numbers") as raised:
        check_range(batch, found)
    with pytest.raises(InputError) as direct:
        to_batch(batch.tolist(), [3], 8)
    assert str(raised.value) == str(direct.value)
