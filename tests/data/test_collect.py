"""collect(): the plan's source plus the production feedback monitoring exported to data/feedback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from config.layout import ProjectLayout
from data.collect import collect, ensure_feedback_dir
from data.dataset import Dataset, DatasetMeta
from data.sources import SourceError
from data.validate import DataValidationError

DIGITS = [str(i) for i in range(10)]
FILE = "data/raw/samples.npz"


def _feedback(n: int = 3, *, shape: tuple[int, ...] = (8, 8), classes: list[str] | None = None) -> Dataset:
    """What monitoring exports: the champion's meta (scaling fitted), ids ``feedback-<request_id>``."""
    meta = DatasetMeta(
        source="sklearn:digits",
        kind="image",
        task="classification",
        classes=classes or DIGITS,
        input_shape=list(shape),
        scaling={"method": "standard", "mean": [1.0], "std": [2.0]},
    )
    features = np.random.default_rng(3).uniform(0, 16, (n, *shape)).astype("float32")
    ids = np.array([f"feedback-req{i}" for i in range(n)])
    return Dataset(features, np.arange(n, dtype="int64") % 10, ids, meta)


@pytest.fixture
def section(data_section):
    return data_section(max_samples=40)


def test_collect_appends_the_exported_feedback(tmp_path: Path, section):
    source = collect(section, ProjectLayout.at(tmp_path), FILE)
    feedback = _feedback()
    feedback.save(ensure_feedback_dir(ProjectLayout.at(tmp_path)), "samples")

    merged = collect(section, ProjectLayout.at(tmp_path), FILE)

    assert len(merged) == len(source) + 3
    assert merged.sample_ids[-3:].tolist() == ["feedback-req0", "feedback-req1", "feedback-req2"]
    np.testing.assert_array_equal(merged.features[-3:], feedback.features)
    assert merged.labels[-3:].tolist() == [0, 1, 2] and merged.labels.dtype == np.int64
    assert merged.meta == source.meta  # the source's meta: no scaling carried over from the champion
    assert len(set(merged.sample_ids.tolist())) == len(merged)


def test_an_empty_feedback_folder_changes_nothing(tmp_path: Path, section):
    folder = ensure_feedback_dir(ProjectLayout.at(tmp_path))
    assert [p.name for p in folder.iterdir()] == [".keep"]
    assert len(collect(section, ProjectLayout.at(tmp_path), FILE)) == 40


@pytest.mark.parametrize(
    ("feedback", "rule", "detail"),
    [
        (_feedback(shape=(4, 4)), "input shape", "expected (8, 8) like the source, got (4, 4)"),
        (_feedback(classes=[f"c{i}" for i in range(10)]), "classes", "expected ['0', '1'"),
        (replace(_feedback(2), sample_ids=np.array(["feedback-a"] * 2)), "sample ids", "feedback-a"),
        (replace(_feedback(1), sample_ids=np.array(["digits-00003"])), "sample ids", "already in the source"),
    ],
)
def test_feedback_that_does_not_fit_the_source_is_refused(tmp_path, section, feedback, rule, detail):
    feedback.save(tmp_path / "data/feedback", "samples")
    with pytest.raises(DataValidationError) as caught:
        collect(section, ProjectLayout.at(tmp_path), FILE)
    assert caught.value.file == "data/feedback/samples.npz"
    assert rule in caught.value.rules
    assert detail in str(caught.value)


def test_a_regression_feedback_for_a_classification_plan_is_refused(tmp_path, section):
    feedback = _feedback()
    regression = replace(feedback, meta=replace(feedback.meta, task="regression", classes=[]))
    regression.save(tmp_path / "data/feedback", "samples")
    with pytest.raises(DataValidationError, match="task: expected 'classification' like the source"):
        collect(section, ProjectLayout.at(tmp_path), FILE)


def test_an_unreadable_feedback_file_names_it(tmp_path, section):
    folder = ensure_feedback_dir(ProjectLayout.at(tmp_path))
    (folder / "samples.npz").write_bytes(b"not a zip")
    (folder / "meta.json").write_text(_feedback().meta.to_json())
    with pytest.raises(SourceError, match=r"data/feedback/samples.npz: expected a feedback dataset"):
        collect(section, ProjectLayout.at(tmp_path), FILE)
