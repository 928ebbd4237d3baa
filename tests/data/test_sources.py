"""Each source loads from a small fixture in its real format; failures name the file and what to do."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.dataset import UNLABELED
from data.sources import SourceError, cap_stratified, keras_datasets_dir, load_source


def test_digits_is_the_real_bundled_set(data_section, tmp_path):
    dataset = load_source(data_section(), tmp_path)

    assert dataset.features.shape == (1797, 8, 8)
    assert dataset.features.dtype == np.float32
    assert dataset.features.min() == 0 and dataset.features.max() == 16
    assert dataset.labels.dtype == np.int64 and set(dataset.labels.tolist()) == set(range(10))
    assert dataset.sample_ids[0] == "digits-00000" and len(set(dataset.sample_ids)) == 1797
    assert dataset.meta.classes == [str(i) for i in range(10)]
    assert dataset.meta.input_shape == [8, 8] and dataset.meta.kind == "image"


def test_breast_cancer_is_tabular_binary(data_section, tmp_path):
    dataset = load_source(data_section(source="sklearn:breast_cancer"), tmp_path)

    assert dataset.features.shape == (569, 30)
    assert dataset.meta.kind == "tabular"
    assert dataset.meta.classes == ["malignant", "benign"]
    assert dataset.meta.feature_names[0] == "mean radius"
    assert np.bincount(dataset.labels).tolist() == [212, 357]


def test_plan_classes_rename_the_source_classes(data_section, tmp_path):
    dataset = load_source(data_section(source="sklearn:breast_cancer", classes=["bad", "good"]), tmp_path)
    assert dataset.meta.classes == ["bad", "good"]
    assert np.bincount(dataset.labels).tolist() == [212, 357]


def test_plan_classes_in_another_order_remap_the_ids(data_section, tmp_path):
    dataset = load_source(
        data_section(source="sklearn:breast_cancer", classes=["benign", "malignant"]), tmp_path
    )
    assert dataset.meta.classes == ["benign", "malignant"]
    assert np.bincount(dataset.labels).tolist() == [357, 212]


def test_plan_classes_of_another_count_are_refused(data_section, tmp_path):
    with pytest.raises(SourceError, match=r"data.classes: sklearn:digits has 10 classes .* the plan names 3"):
        load_source(data_section(classes=["a", "b", "c"]), tmp_path)


def test_max_samples_caps_stratified_and_stably(data_section, tmp_path):
    data = data_section(max_samples=300)
    first, second = load_source(data, tmp_path), load_source(data, tmp_path)

    assert len(first) == 300
    np.testing.assert_array_equal(first.sample_ids, second.sample_ids)
    counts = np.bincount(first.labels, minlength=10)
    assert counts.min() >= 29 and counts.max() <= 31  # each class keeps its ~10% share
    assert list(first.sample_ids) == sorted(first.sample_ids)  # source order kept
    # The cap never depends on the split seed: prepare re-splits the same samples.
    reseeded = load_source(data_section(max_samples=300, split={"seed": 7}), tmp_path)
    np.testing.assert_array_equal(first.sample_ids, reseeded.sample_ids)


def test_cap_keeps_the_unlabeled_share(make_dataset):
    dataset = make_dataset([0] * 60 + [1] * 30 + [UNLABELED] * 10)
    capped = cap_stratified(dataset, 50)
    assert np.unique(capped.labels, return_counts=True)[1].tolist() == [5, 30, 15]


# --- images:DIR ---


def test_image_folder_loads_classes_unlabeled_and_ids(data_section, image_folder, tmp_path):
    dataset = load_source(data_section(source="images:images"), tmp_path)  # relative to the root

    assert dataset.meta.classes == ["cat", "dog"]
    assert dataset.features.shape == (8, 4, 6) and dataset.features.dtype == np.float32
    by_id = dict(zip(dataset.sample_ids.tolist(), dataset.labels.tolist(), strict=True))
    assert by_id["cat/c0.png"] == 0 and by_id["dog/d2.jpg"] == 1 and by_id["unlabeled/u1.png"] == UNLABELED
    index = dataset.sample_ids.tolist().index("dog/d1.png")
    assert np.all(dataset.features[index] == 101)


def test_image_folder_resizes_and_reads_rgb(data_section, image_folder, tmp_path):
    dataset = load_source(
        data_section(source=f"images:{image_folder}", image_size=[3, 5], color_mode="rgb"), tmp_path
    )
    assert dataset.features.shape == (8, 3, 5, 3)
    assert dataset.meta.input_shape == [3, 5, 3]
    cat = dataset.features[dataset.sample_ids.tolist().index("cat/c0.png")]
    assert cat[0, 0].tolist() == [10, 10, 10]  # grey files read as RGB


def test_image_folder_of_mixed_sizes_needs_image_size(data_section, image_folder, write_image, tmp_path):
    write_image(image_folder / "cat" / "big.png", 3, size=(10, 10))
    with pytest.raises(SourceError, match=r"images have different sizes .*set data.image_size"):
        load_source(data_section(source=f"images:{image_folder}"), tmp_path)
    resized = load_source(data_section(source=f"images:{image_folder}", image_size=[4, 6]), tmp_path)
    assert resized.features.shape == (9, 4, 6)


def test_image_folder_errors_name_the_problem(data_section, image_folder, tmp_path):
    with pytest.raises(SourceError, match=r"images folder .*nowhere does not exist"):
        load_source(data_section(source="images:nowhere"), tmp_path)
    (image_folder / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match=r"broken.png: not a readable image"):
        load_source(data_section(source=f"images:{image_folder}"), tmp_path)


# --- table:PATH ---


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "width": [1.0, 2.0, 3.0, 4.0, 5.0],
            "height": [5, 4, 3, 2, 1],
            "kind": ["small", "large", None, "small", "large"],
        }
    )


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_table_loads_csv_and_parquet(data_section, tmp_path, suffix):
    path = tmp_path / f"shapes.{suffix}"
    _frame().to_csv(path, index=False) if suffix == "csv" else _frame().to_parquet(path, index=False)

    dataset = load_source(data_section(source=f"table:shapes.{suffix}", target="kind"), tmp_path)

    assert dataset.meta.kind == "tabular" and dataset.meta.feature_names == ["width", "height"]
    assert dataset.features.shape == (5, 2) and dataset.features.dtype == np.float32
    assert dataset.meta.classes == ["large", "small"]  # sorted unique
    assert dataset.labels.tolist() == [1, 0, UNLABELED, 1, 0]  # the empty target is unlabeled
    assert dataset.sample_ids.tolist() == ["row-1", "row-2", "row-3", "row-4", "row-5"]


def test_table_maps_labels_through_plan_classes_and_keeps_its_ids(data_section, tmp_path):
    frame = _frame().assign(sample_id=[f"id{i}" for i in range(5)])
    frame.to_csv(tmp_path / "t.csv", index=False)
    dataset = load_source(
        data_section(source="table:t.csv", target="kind", classes=["small", "large"]), tmp_path
    )
    assert dataset.labels.tolist() == [0, 1, UNLABELED, 0, 1]
    assert dataset.sample_ids.tolist() == ["id0", "id1", "id2", "id3", "id4"]
    assert dataset.features.shape == (5, 2)  # sample_id is not a feature


def test_table_integer_labels_are_ids_into_plan_classes(data_section, tmp_path):
    pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, None]}).to_csv(tmp_path / "t.csv", index=False)
    dataset = load_source(data_section(source="table:t.csv", target="y", classes=["no", "yes"]), tmp_path)
    assert dataset.labels.tolist() == [0, 1, UNLABELED]


def test_table_errors_name_the_file_column_and_rows(data_section, tmp_path):
    _frame().to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(
        SourceError, match=r"data.target: .*t.csv has no column 'label'; its columns are width"
    ):
        load_source(data_section(source="table:t.csv", target="label"), tmp_path)
    with pytest.raises(SourceError, match=r"labels large are not in data.classes .* \(rows 2, 5\)"):
        load_source(data_section(source="table:t.csv", target="kind", classes=["small", "tiny"]), tmp_path)
    _frame().assign(colour=["red"] * 5).to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(SourceError, match=r"feature columns must be numeric, got text in colour"):
        load_source(data_section(source="table:text.csv", target="kind"), tmp_path)
    with pytest.raises(SourceError, match=r"table file .*missing.csv does not exist"):
        load_source(data_section(source="table:missing.csv", target="kind"), tmp_path)


def test_table_regression_targets_are_floats_with_nan_unlabeled(data_section, tmp_path):
    pd.DataFrame({"x": [1, 2, 3], "price": [1.5, None, 3.0]}).to_csv(tmp_path / "t.csv", index=False)
    dataset = load_source(data_section(source="table:t.csv", target="price", task="regression"), tmp_path)
    assert dataset.labels.dtype == np.float32
    assert dataset.labels[0] == 1.5 and np.isnan(dataset.labels[1])


# --- keras:mnist / keras:fashion_mnist: the Keras cache layout ---


def test_mnist_reads_the_keras_cache_file(data_section, tmp_path):
    cache = tmp_path / "keras-home" / "datasets"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(
        cache / "mnist.npz",
        x_train=rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
        y_train=np.array([0, 1, 2, 3, 4, 5], dtype=np.uint8),
        x_test=rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8),
        y_test=np.array([6, 7, 8, 9], dtype=np.uint8),
    )
    environ = {"KERAS_HOME": str(tmp_path / "keras-home")}

    dataset = load_source(data_section(source="keras:mnist"), tmp_path, environ=environ)

    assert dataset.features.shape == (10, 28, 28) and dataset.features.dtype == np.float32
    assert dataset.labels.tolist() == list(range(10))
    assert dataset.sample_ids[0] == "mnist-train-00000" and dataset.sample_ids[-1] == "mnist-test-00003"


def _idx(path: Path, payload: np.ndarray, header: int) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(b"\0" * header + payload.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_the_keras_idx_files(data_section, tmp_path):
    folder = tmp_path / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    _idx(folder / "train-labels-idx1-ubyte.gz", np.array([0, 9, 3]), 8)
    _idx(folder / "train-images-idx3-ubyte.gz", np.full((3, 28, 28), 7), 16)
    _idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([5]), 8)
    _idx(folder / "t10k-images-idx3-ubyte.gz", np.full((1, 28, 28), 250), 16)

    dataset = load_source(
        data_section(source="keras:fashion_mnist"), tmp_path, environ={"KERAS_HOME": str(tmp_path)}
    )

    assert dataset.features.shape == (4, 28, 28)
    assert dataset.labels.tolist() == [0, 9, 3, 5]
    assert dataset.meta.classes[9] == "Ankle boot"
    assert dataset.features[3].max() == 250


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("keras:mnist", r"missing .*/datasets/mnist.npz; put mnist.npz \(from https://\S+mnist.npz\) at "),
        ("keras:fashion_mnist", r"missing .*fashion-mnist/train-labels-idx1-ubyte.gz, .*t10k-images-idx3"),
    ],
)
def test_offline_keras_without_cache_says_which_files_go_where(data_section, tmp_path, source, expected):
    with pytest.raises(SourceError, match=expected) as raised:
        load_source(data_section(source=source), tmp_path, environ={"KERAS_HOME": str(tmp_path / "empty")})
    assert str(tmp_path / "empty" / "datasets") in str(raised.value)
    assert "KERAS_HOME" in str(raised.value)


def test_keras_cache_defaults_to_home_dot_keras():
    assert keras_datasets_dir({}) == Path("~/.keras/datasets").expanduser()
    assert keras_datasets_dir({"KERAS_HOME": "/x/y"}) == Path("/x/y/datasets")
