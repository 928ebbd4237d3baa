"""Each validation rule, with the message: the file, the samples (ids and rows) and the rule broken."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from data.dataset import UNLABELED, Dataset
from data.validate import (
    DataValidationError,
    deduplicate,
    listing,
    validate_dataset,
    validate_splits,
)

FILE = "data/labeled/samples.npz"


def _check(dataset, data, **kwargs) -> DataValidationError:
    with pytest.raises(DataValidationError) as raised:
        validate_dataset(dataset, data, FILE, **kwargs)
    return raised.value


@pytest.fixture
def data(data_section):
    return data_section(min_samples_per_class=2)


def test_good_data_passes(make_dataset, data):
    validate_dataset(make_dataset([0, 0, 1, 1, 2, 2]), data, FILE)


def test_shape_against_meta(make_dataset, data):
    dataset = make_dataset([0, 0, 1, 1, 2, 2])
    error = _check(replace(dataset, features=dataset.features.reshape(6, 4)), data)
    assert str(error) == f"{FILE}: shape: expected features of shape (n, 2, 2) as meta.json says, got (6, 4)"


def test_dtypes(make_dataset, data):
    dataset = make_dataset([0, 0, 1, 1, 2, 2])
    error = _check(
        replace(
            dataset, features=dataset.features.astype(np.float64), labels=dataset.labels.astype(np.int32)
        ),
        data,
    )
    assert error.rules == ["dtype", "dtype"]
    assert "expected float32 features, got float64" in str(error)
    assert "expected int64 labels for classification, got int32" in str(error)


def test_nan_and_inf_name_the_samples_and_rows(make_dataset, data):
    dataset = make_dataset([0, 0, 1, 1, 2, 2])
    dataset.features[1, 0, 0] = np.nan
    dataset.features[4, 1, 1] = np.inf
    error = _check(dataset, data)
    assert str(error) == (
        f"{FILE}: non-finite values: 2 samples hold NaN or inf: sample ids s1, s4 (rows 1, 4)"
    )


def test_value_range_by_source(make_dataset, data):
    dataset = make_dataset([0, 0, 1, 1, 2, 2])
    dataset.features[2, 0, 0] = 17.0
    error = _check(dataset, data)
    assert error.rules == ["value range"]
    assert "expected features in [0, 16] for sklearn:digits, 1 samples fall outside (min 0" in str(error)
    assert "max 17): sample ids s2 (rows 2)" in str(error)
    # 8-bit images may hold 17; tables hold anything finite.
    validate_dataset(replace(dataset, meta=replace(dataset.meta, source="images:x")), data, FILE)
    validate_dataset(replace(dataset, meta=replace(dataset.meta, source="table:t.csv")), data, FILE)


def test_label_ids_must_be_classes(make_dataset, data):
    error = _check(make_dataset([0, 0, 1, 1, 2, 2, 5]), data)
    assert "label range: expected class ids 0..2, got 5: sample ids s6 (rows 6)" in str(error)


def test_repeated_sample_ids(make_dataset, data):
    dataset = make_dataset([0, 0, 1, 1, 2, 2])
    dataset.sample_ids[3] = "s0"
    error = _check(dataset, data)
    assert str(error) == f"{FILE}: unique sample ids: 1 rows repeat an id: sample ids s0 (rows 3)"


def test_unlabeled_samples_may_not_train(make_dataset, data):
    dataset = make_dataset([0, 0, 1, 1, 2, 2, UNLABELED])
    error = _check(dataset, data)
    assert str(error) == f"{FILE}: unlabeled samples: 1 samples have no label: sample ids s6 (rows 6)"
    validate_dataset(dataset, data, FILE, labeled=False)  # raw data may hold them


def test_duplicate_samples(make_dataset, data):
    dataset = make_dataset([0, 0, 1, 1, 2, 2])
    dataset.features[5] = dataset.features[1]
    error = _check(dataset, data)
    assert str(error) == (
        f"{FILE}: duplicate samples: 1 groups of samples have identical features: "
        "sample ids s1, s5 (rows 1, 5)"
    )
    validate_dataset(dataset, data, FILE, labeled=False)  # raw data may hold them


def test_min_samples_per_class(make_dataset, data_section):
    error = _check(make_dataset([0, 0, 0, 1, 1, 2]), data_section(min_samples_per_class=3))
    assert str(error) == f"{FILE}: min samples per class: data.min_samples_per_class is 3, got 'b': 2, 'c': 1"


def test_every_broken_rule_is_reported_at_once(make_dataset, data):
    dataset = make_dataset([0, 0, 1, 1, 2, UNLABELED])
    dataset.features[0, 0, 0] = np.nan
    error = _check(dataset, data)
    assert error.rules == ["non-finite values", "unlabeled samples", "min samples per class"]
    assert all(line.startswith(f"{FILE}: ") for line in str(error).splitlines())


def test_long_listings_are_cut_after_ten():
    assert listing(list(range(25))) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 15 more"
    assert listing(["a"]) == "a"


def test_same_label_duplicates_are_dropped_with_a_report(make_dataset, data):
    dataset = make_dataset([0, 1, 0, 2, 0])
    dataset.features[2] = dataset.features[0]
    dataset.features[4] = dataset.features[0]

    kept, report = deduplicate(dataset, data, FILE)

    assert kept.sample_ids.tolist() == ["s0", "s1", "s3"]
    assert report == [{"kept": "s0", "dropped": ["s2", "s4"], "label": "a"}]


def test_duplicates_with_different_labels_are_an_error(make_dataset, data):
    dataset = make_dataset([0, 1, 2, 2])
    dataset.features[3] = dataset.features[1]
    with pytest.raises(DataValidationError) as raised:
        deduplicate(dataset, data, FILE)
    assert str(raised.value) == (
        f"{FILE}: conflicting duplicates: 1 groups of identical samples carry different labels: "
        "s1 (b), s3 (c); give them one label in a data.labeling.annotations file"
    )


def _splits(make_dataset) -> dict[str, Dataset]:
    return {
        "train": make_dataset([0, 1, 2], seed=1),
        "val": replace(make_dataset([0, 1], seed=2), sample_ids=np.array(["v0", "v1"])),
        "test": replace(make_dataset([0, 1], seed=3), sample_ids=np.array(["t0", "t1"])),
    }


def test_disjoint_splits_pass(make_dataset):
    validate_splits(_splits(make_dataset), "data/prepared")


def test_leakage_by_id(make_dataset):
    splits = _splits(make_dataset)
    splits["test"].sample_ids[1] = "s2"
    with pytest.raises(DataValidationError) as raised:
        validate_splits(splits, "data/prepared")
    assert str(raised.value) == "data/prepared: leakage: 1 sample ids in both train and test: s2"


def test_leakage_by_content(make_dataset):
    splits = _splits(make_dataset)
    splits["val"].features[1] = splits["train"].features[0]
    with pytest.raises(DataValidationError) as raised:
        validate_splits(splits, "data/prepared")
    assert str(raised.value) == (
        "data/prepared: leakage: 1 val samples have features identical to a train sample: "
        "sample ids v1 (rows 1)"
    )
