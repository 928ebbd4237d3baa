"""Labeling: the queue out, labels back in (CSV and Label Studio), conflicts, unknowns and missing labels."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from data.dataset import UNLABELED
from data.label import apply_labels, class_balance, label_dataset, resolve_labels
from data.labelfiles import Annotation, export_queue, read_annotations
from data.validate import DataValidationError

FILE = "data/labeled/samples.npz"


def _csv(path, rows, header=("sample_id", "label", "annotator")):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _vote(sample_id, label, annotator="", where="row 1"):
    return Annotation(sample_id, label, annotator, "labels.csv", where)


def test_queue_round_trip_through_csv(make_dataset, data_section, tmp_path):
    raw = make_dataset([0, 0, 0, 1, 1, 1, 2, 2, 2, UNLABELED, UNLABELED])
    queue = raw.take(raw.labels == UNLABELED)
    export_queue(queue, tmp_path / "queue")

    with (tmp_path / "queue" / "queue.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["sample_id"] for row in rows] == ["s9", "s10"]
    assert list(rows[0]) == ["sample_id", "f0", "f1", "f2", "f3"]  # the features, flattened
    assert float(rows[1]["f3"]) == pytest.approx(float(raw.features[10, 1, 1]))

    # An annotator fills in the queue and the labels come back in.
    labels = _csv(
        tmp_path / "labels.csv", [[rows[0]["sample_id"], "c", "ann"], [rows[1]["sample_id"], "a", "ann"]]
    )
    result = label_dataset(raw, read_annotations(labels), data_section(min_samples_per_class=3), FILE)

    assert len(result.labeled) == 11 and len(result.queue) == 0
    by_id = dict(zip(result.labeled.sample_ids.tolist(), result.labeled.labels.tolist(), strict=True))
    assert by_id["s9"] == 2 and by_id["s10"] == 0
    assert result.report["annotations"]["annotators"] == ["ann"]
    assert result.report["class_balance"]["counts"] == {"a": 4, "b": 3, "c": 4}


def test_queue_for_an_image_folder_points_at_the_files(make_dataset, tmp_path):
    queue = replace(make_dataset([UNLABELED]), sample_ids=np.array(["unlabeled/u0.png"]))
    export_queue(queue, tmp_path, image_dir="data/images")

    assert (tmp_path / "queue.csv").read_text().splitlines() == [
        "sample_id,image",
        "unlabeled/u0.png,data/images/unlabeled/u0.png",
    ]
    tasks = json.loads((tmp_path / "labelstudio_tasks.json").read_text())
    assert tasks == [{"data": {"sample_id": "unlabeled/u0.png", "image": "data/images/unlabeled/u0.png"}}]
    config = (tmp_path / "labelstudio_config.xml").read_text()
    assert '<Image name="image" value="$image"/>' in config and '<Choice value="c"/>' in config


def test_label_studio_export_is_read(tmp_path):
    export = [
        {
            "id": 11,
            "data": {"sample_id": "s1"},
            "annotations": [
                {
                    "completed_by": {"email": "ann@x"},
                    "result": [{"type": "choices", "value": {"choices": ["b"]}}],
                },
                {"completed_by": 7, "result": [{"value": {"choices": ["c"]}}]},
                {"completed_by": 8, "was_cancelled": True, "result": [{"value": {"choices": ["a"]}}]},
            ],
        },
        {"id": 12, "data": {"sample_id": "s2"}, "annotations": []},  # not labeled yet: no annotation
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))

    annotations = read_annotations(path, "export.json")

    assert [(a.sample_id, a.label, a.annotator, a.where) for a in annotations] == [
        ("s1", "b", "ann@x", "task 1 (id 11)"),
        ("s1", "c", "7", "task 1 (id 11)"),
    ]


def test_missing_labels_are_caught_in_csv_and_label_studio(tmp_path):
    path = _csv(tmp_path / "labels.csv", [["s1", "a", ""], ["s2", "", "ann"], ["", "b", ""]])
    with pytest.raises(DataValidationError) as raised:
        read_annotations(path, "labels.csv")
    assert str(raised.value) == "labels.csv: missing labels: 2 entries have no label: row 2 (s2), row 3"

    export = [{"id": 5, "data": {"sample_id": "s1"}, "annotations": [{"completed_by": 1, "result": []}]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    with pytest.raises(
        DataValidationError, match=r"missing labels: 1 entries have no label: task 1 \(id 5\) \(s1\)"
    ):
        read_annotations(tmp_path / "export.json")


def test_label_file_format_errors(tmp_path):
    path = _csv(tmp_path / "labels.csv", [["s1", "a"]], header=("id", "class"))
    with pytest.raises(
        DataValidationError, match=r"expected columns sample_id,label\[,annotator\], got id,class"
    ):
        read_annotations(path)
    (tmp_path / "labels.txt").write_text("s1 a")
    with pytest.raises(
        DataValidationError, match=r"expected a .csv or Label Studio .json export, got '.txt'"
    ):
        read_annotations(tmp_path / "labels.txt")


def test_conflicts_are_resolved_by_majority_and_ties_reported():
    annotations = [
        _vote("s1", "a", "ann"),
        _vote("s1", "b", "bob"),
        _vote("s1", "a", "cat"),
        _vote("s2", "a", "ann"),
        _vote("s2", "c", "bob"),
        _vote("s3", "1", "ann"),  # a class id is a label too
    ]
    resolution = resolve_labels(annotations, ["a", "b", "c"], {"s1", "s2", "s3"})

    assert resolution.labels == {"s1": 0, "s3": 1}
    assert resolution.conflicts == [
        {"sample_id": "s1", "votes": {"ann": "a", "bob": "b", "cat": "a"}, "decided": "a"}
    ]
    assert resolution.ties == [{"sample_id": "s2", "votes": {"ann": "a", "bob": "c"}}]


def test_an_annotators_later_label_replaces_their_earlier_one():
    resolution = resolve_labels([_vote("s1", "a", "ann"), _vote("s1", "b", "ann")], ["a", "b"], {"s1"})
    assert resolution.labels == {"s1": 1} and resolution.conflicts == []


def test_unknown_classes_and_sample_ids_are_errors():
    annotations = [_vote("s1", "zebra", where="row 1"), _vote("s9", "a", where="row 2")]
    with pytest.raises(DataValidationError) as raised:
        resolve_labels(annotations, ["a", "b"], {"s1"})
    assert str(raised.value).splitlines() == [
        "labels.csv: unknown classes: expected one of ['a', 'b'], got 1: row 1 (s1: 'zebra')",
        "labels.csv: unknown sample ids: not in the collected data, got 1: row 2 (s9)",
    ]


def test_annotations_replace_source_labels_and_say_so(make_dataset):
    raw = make_dataset([0, 1, UNLABELED])
    merged, changed = apply_labels(
        raw, resolve_labels([_vote("s0", "b"), _vote("s2", "c")], ["a", "b", "c"], {"s0", "s2"})
    )
    assert merged.labels.tolist() == [1, 1, 2]
    assert changed == ["s0"]
    assert raw.labels.tolist() == [0, 1, UNLABELED]  # the input is not modified


def test_ties_stay_in_the_queue(make_dataset, data_section):
    raw = make_dataset([0, 0, 1, 1, 2, 2, UNLABELED])
    result = label_dataset(
        raw, [_vote("s6", "a", "ann"), _vote("s6", "b", "bob")], data_section(min_samples_per_class=2), FILE
    )
    assert result.queue.sample_ids.tolist() == ["s6"]
    assert result.report["ties_left_unlabeled"] == [{"sample_id": "s6", "votes": {"ann": "a", "bob": "b"}}]


def test_label_stage_drops_same_label_duplicates_and_validates(make_dataset, data_section):
    raw = make_dataset([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    raw.features[6] = raw.features[3]
    data = data_section(min_samples_per_class=3)

    result = label_dataset(raw, [], data, FILE)

    assert "s6" not in result.labeled.sample_ids
    assert result.report["duplicates_dropped"] == {
        "groups": 1,
        "samples": 1,
        "detail": [{"kept": "s3", "dropped": ["s6"], "label": "b"}],
    }
    # Class "c" has no samples: the labeled set fails validation, naming the rule.
    with pytest.raises(DataValidationError, match=r"min samples per class: .* is 3, got 'c': 0"):
        label_dataset(make_dataset([0, 0, 0, 1, 1, 1]), [], data, FILE)


def test_class_balance(make_dataset):
    balance = class_balance(make_dataset([0, 0, 0, 0, 1, 1, 2]))
    assert balance["counts"] == {"a": 4, "b": 2, "c": 1}
    assert balance["shares"]["a"] == pytest.approx(4 / 7, abs=1e-4)
    assert balance["imbalance_ratio"] == 4.0


def test_conflicting_duplicates_are_fixed_by_an_annotation(make_dataset, data_section):
    raw = make_dataset([0, 0, 1, 1, 2, 2, 1])
    raw.features[6] = raw.features[0]
    data = data_section(min_samples_per_class=2)
    with pytest.raises(DataValidationError, match=r"conflicting duplicates: .*s0 \(a\), s6 \(b\)"):
        label_dataset(raw, [], data, FILE)

    result = label_dataset(raw, [_vote("s6", "a", "ann")], data, FILE)

    assert "s6" not in result.labeled.sample_ids
    assert result.report["source_labels_replaced"] == ["s6"]
    assert result.report["duplicates_dropped"]["detail"] == [{"kept": "s0", "dropped": ["s6"], "label": "a"}]
