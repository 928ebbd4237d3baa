"""Prepare: seeded stratified splits, scaling fitted on train only, the reference sample, the report."""

from __future__ import annotations

import numpy as np
import pytest

from data.prepare import fit_scaling, prepare, reference_sample, split_dataset
from data.validate import DataValidationError, validate_splits


@pytest.fixture
def labeled(make_dataset):
    return make_dataset([0] * 40 + [1] * 40 + [2] * 20)


def test_split_is_stratified_disjoint_and_complete(labeled, data_section):
    splits = split_dataset(labeled, data_section().split, "classification", "data/prepared")

    assert {name: len(part) for name, part in splits.items()} == {"train": 70, "val": 15, "test": 15}
    assert np.bincount(splits["train"].labels).tolist() == [28, 28, 14]
    assert np.bincount(splits["test"].labels).tolist() == [6, 6, 3]
    ids = np.concatenate([part.sample_ids for part in splits.values()])
    assert sorted(ids.tolist()) == sorted(labeled.sample_ids.tolist())
    validate_splits(splits, "data/prepared")


def test_split_is_deterministic_per_seed(labeled, data_section):
    first = split_dataset(labeled, data_section().split, "classification", "x")
    again = split_dataset(labeled, data_section().split, "classification", "x")
    other = split_dataset(labeled, data_section(split={"seed": 1}).split, "classification", "x")

    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(first[name].sample_ids, again[name].sample_ids)
    assert set(first["test"].sample_ids) != set(other["test"].sample_ids)


def test_a_class_too_small_to_stratify_is_reported(make_dataset, data_section):
    with pytest.raises(DataValidationError) as raised:
        split_dataset(make_dataset([0] * 20 + [1]), data_section().split, "classification", "data/prepared")
    message = str(raised.value)
    assert message.startswith("data/prepared: split: can't split 21 samples 0.7/0.15/0.15")
    assert "samples per class: 'a': 20, 'b': 1)" in message


def test_scaling_statistics_per_feature_in_the_input_shape():
    features = np.array([[[0, 2], [4, 6]], [[2, 2], [8, 6]]], dtype=np.float32)

    assert fit_scaling(features, "none") == {"method": "none"}
    standard = fit_scaling(features, "standard")
    assert standard == {"method": "standard", "mean": [[1, 2], [6, 6]], "std": [[1, 0], [2, 0]]}
    minmax = fit_scaling(features, "minmax")
    assert minmax == {"method": "minmax", "min": [[0, 2], [4, 6]], "max": [[2, 2], [8, 6]]}


def test_prepare_fits_scaling_on_train_only(labeled, data_section):
    result = prepare(labeled, data_section(scaling="standard", reference_size=30), "data/prepared")

    train = result.splits["train"]
    mean = np.asarray(train.meta.scaling["mean"])
    assert mean.shape == (2, 2)
    np.testing.assert_allclose(mean, train.features.mean(axis=0), rtol=1e-6)
    assert not np.allclose(mean, labeled.features.mean(axis=0), rtol=1e-6)  # not fitted on everything
    assert all(part.meta.scaling == train.meta.scaling for part in result.splits.values())
    # Arrays stay in source units: the model applies the scaling.
    assert train.features.max() > 10


def test_reference_sample_is_stratified_from_train(labeled, data_section):
    result = prepare(labeled, data_section(reference_size=30), "data/prepared")

    reference = result.splits["reference"]
    assert len(reference) == 30
    assert set(reference.sample_ids) <= set(result.splits["train"].sample_ids)
    assert np.bincount(reference.labels).tolist() == [12, 12, 6]
    assert len(reference_sample(result.splits["train"], 500, 0, "classification")) == 70  # all of train


def test_report_counts_per_class_per_split(labeled, data_section):
    report = prepare(labeled, data_section(reference_size=30, split={"seed": 3}), "data/prepared").report

    assert report["seed"] == 3
    assert report["sizes"] == {"train": 70, "val": 15, "test": 15, "reference": 30}
    assert report["counts"]["train"] == {"a": 28, "b": 28, "c": 14}
    assert sum(report["counts"]["val"].values()) == 15
