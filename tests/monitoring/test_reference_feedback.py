"""The champion's pinned reference from a DVC cache layout; feedback export; the labeling queue's choice."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from config.layout import ProjectLayout
from data.dataset import Dataset, DatasetMeta
from monitoring.drift import DriftResult, FeatureDrift
from monitoring.feedback import export_feedback, feedback_dataset, labeling_queue
from monitoring.reference import ReferenceError, load_reference

META = DatasetMeta(
    source="sklearn:digits", kind="image", task="classification", classes=[str(i) for i in range(10)],
    input_shape=[8, 8],
)  # fmt: skip


def cache(root, content: bytes) -> str:
    md5 = hashlib.md5(content).hexdigest()
    path = root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return md5


def reference(n: int, value: float) -> Dataset:
    ids = np.array([f"r{i}" for i in range(n)])
    return Dataset(np.full((n, 8, 8), value, dtype="float32"), np.zeros(n, dtype="int64"), ids, META)


def test_the_pinned_reference_comes_from_the_dvc_cache_not_the_workspace(tmp_path):
    reference(5, 1.0).save(tmp_path / "pinned", "reference")
    pinned = cache(tmp_path, (tmp_path / "pinned" / "reference.npz").read_bytes())
    manifest = json.dumps(
        [{"md5": "0" * 32, "relpath": "train.npz"}, {"md5": pinned, "relpath": "reference.npz"}]
    )
    directory = cache(tmp_path, manifest.encode()) + ".dir"
    (tmp_path / ".dvc/cache/files/md5" / directory[:2] / directory[2:]).write_text(manifest)
    reference(7, 9.0).save(tmp_path / "data" / "prepared", "reference")  # the workspace moved on since

    dataset, source = load_reference(
        ProjectLayout.at(tmp_path), json.dumps({"data/prepared": directory}), META
    )

    assert len(dataset) == 5 and float(dataset.features.max()) == 1.0
    assert source.startswith("dvc cache .dvc/cache/files/md5/")


def test_without_the_cached_version_the_workspace_reference_is_used(tmp_path, caplog):
    reference(7, 9.0).save(tmp_path / "data" / "prepared", "reference")

    dataset, source = load_reference(
        ProjectLayout.at(tmp_path), json.dumps({"data/prepared": "ab" * 16 + ".dir"}), META
    )

    assert len(dataset) == 7 and source == "workspace data/prepared/reference.npz"
    assert "not in the DVC cache" in caplog.text


def test_no_reference_at_all_says_what_to_run(tmp_path):
    with pytest.raises(ReferenceError, match="Run `dvc pull` or the prepare stage"):
        load_reference(ProjectLayout.at(tmp_path), None, META)


def window(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": [f"q{i}" for i in range(n)],
            "features": [np.full((8, 8), float(i), dtype="float32") for i in range(n)],
            "predicted": np.arange(n) % 10,
            "confidence": np.linspace(0.9, 0.4, n),
            "label": [3.0, np.nan, 5.0, np.nan, np.nan, np.nan][:n],
            "model_version": ["1"] * n,
        }
    )


def test_feedback_dataset_keeps_labeled_rows_and_writes_the_data_phase_format(tmp_path):
    rows = pd.concat([window(), window().iloc[[0]].assign(label=4.0)], ignore_index=True)  # q0 relabeled

    dataset = feedback_dataset(rows, META)
    path = export_feedback(dataset, tmp_path / "data/feedback")

    assert sorted(dataset.sample_ids.tolist()) == ["feedback-q0", "feedback-q2"]
    assert dict(zip(dataset.sample_ids, dataset.labels.tolist(), strict=True)) == {
        "feedback-q2": 5,
        "feedback-q0": 4,
    }
    assert path == tmp_path / "data/feedback/samples.npz"
    loaded = Dataset.load(tmp_path / "data/feedback", "samples")
    assert loaded.features.shape == (2, 8, 8) and loaded.meta == META


def test_feedback_with_an_unknown_class_is_refused():
    with pytest.raises(ValueError, match=r"class ids 0..9. Received \[12\]"):
        feedback_dataset(window().assign(label=[12.0] + [np.nan] * 5), META)


def test_labeling_queue_takes_least_confident_and_most_drifted_unlabeled_rows():
    rows = window()
    frame = pd.DataFrame({"intensity_mean": [0.0, 0.0, 0.0, 9.0, 0.1, 0.0], "confidence": rows["confidence"]})
    reference_frame = pd.DataFrame({"intensity_mean": [0.0, 0.1, -0.1, 0.05], "confidence": [0.9] * 4})
    result = DriftResult(
        6, 4, 1, True, 1.0, 0.3, (FeatureDrift("intensity_mean", 0.001, "K-S p_value", 0.05, True),)
    )

    chosen = labeling_queue(rows, frame, reference_frame, result, size=3)

    # unlabeled: 1, 3, 4, 5; least confident first is 5; furthest out on intensity_mean is 3
    assert chosen.tolist()[:2] == [5, 3]
    assert len(chosen) == 3 and set(chosen) <= {1, 3, 4, 5}
