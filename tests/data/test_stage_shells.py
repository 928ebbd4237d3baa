"""The stage shells DVC calls (`python -m pipeline.stages <stage>`), run in-process on a temp root."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from data.dataset import Dataset, DatasetMeta
from pipeline.stages import STAGES, main


def _write_plan(root: Path, **data: Any) -> Path:
    plan = {
        "project": {"name": "shells", "goal": "tests"},
        "data": {
            "source": "sklearn:digits",
            "max_samples": 300,
            "min_samples_per_class": 5,
            "reference_size": 50,
        }
        | data,
        "model": {
            "layers": [
                {"type": "Input", "shape": [8, 8]},
                {"type": "Flatten"},
                {"type": "Dense", "units": 10},
            ]
        },
        "deploy": {"model_name": "shells"},
    }
    path = root / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIFECYCLE_ROOT", raising=False)
    return tmp_path


def test_data_stages_write_the_contracted_files(project):
    _write_plan(project)
    for stage in ("collect", "label", "prepare"):
        assert main([stage, "--plan", "plan.yaml"]) == 0, stage

    raw = Dataset.load(project / "data/raw", "samples")
    assert len(raw) == 300 and raw.meta.classes == [str(i) for i in range(10)]
    assert (project / "data/labeled/labeling_report.json").is_file()
    assert (project / "data/labeled/queue/queue.csv").read_text().startswith("sample_id,f0,")
    assert json.loads((project / "data/labeled/queue/labelstudio_tasks.json").read_text()) == []
    sizes = {name: len(Dataset.load(project / "data/prepared", name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 210, "val": 45, "test": 45}
    assert len(Dataset.load(project / "data/prepared", "reference")) == 50
    meta = DatasetMeta.from_json((project / "data/prepared/meta.json").read_text())
    assert meta.scaling == {"method": "none"} and meta.input_shape == [8, 8]
    report = json.loads((project / "data/prepared/prepare_report.json").read_text())
    assert report["sizes"]["train"] == 210 and sum(report["counts"]["test"].values()) == 45


def test_bad_labels_stop_the_stage_with_the_message_and_no_traceback(project, capsys):
    _write_plan(project, labeling={"annotations": ["data/annotations/batch.csv"]})
    (project / "data/annotations").mkdir(parents=True)
    (project / "data/annotations/batch.csv").write_text("sample_id,label\ndigits-00000,eleven\n")
    assert main(["collect"]) == 0

    assert main(["label"]) == 2

    err = capsys.readouterr().err
    assert "stage label failed:\ndata/annotations/batch.csv: unknown classes: expected one of" in err
    assert "row 1 (digits-00000: 'eleven')" in err
    assert "Traceback" not in err
    assert not (project / "data/labeled/samples.npz").exists()


def test_annotations_label_the_samples_and_the_report_says_so(project):
    _write_plan(project, labeling={"annotations": ["data/annotations/batch.csv"]})
    (project / "data/annotations").mkdir(parents=True)
    (project / "data/annotations/batch.csv").write_text(
        "sample_id,label,annotator\ndigits-00000,7,ann\ndigits-00000,7,bob\ndigits-00000,0,cat\n"
    )
    assert main(["collect"]) == main(["label"]) == 0

    labeled = Dataset.load(project / "data/labeled", "samples")
    assert labeled.labels[labeled.sample_ids.tolist().index("digits-00000")] == 7
    report = json.loads((project / "data/labeled/labeling_report.json").read_text())
    assert report["source_labels_replaced"] == ["digits-00000"]
    assert report["conflicts_resolved_by_majority"][0]["decided"] == "7"


def test_queue_dir_outside_the_label_output_is_refused(project, capsys):
    _write_plan(project, labeling={"queue_dir": "elsewhere"})
    assert main(["collect"]) == 0
    assert main(["label"]) == 2
    assert "plan.yaml: data.labeling.queue_dir: must be inside data/labeled" in capsys.readouterr().err


def test_bad_plan_exits_2_naming_the_field(project, capsys):
    _write_plan(project, split={"train": 0.9, "val": 0.2, "test": 0.1})
    assert main(["prepare"]) == 2
    assert "data.split: train + val + test must sum to 1, got 1.2" in capsys.readouterr().err


def test_undeclared_source_path_is_warned_about(project, write_image, caplog):
    for label in ("a", "b"):
        for i in range(5):
            write_image(project / "pics" / label / f"{i}.png", 40 * i + (label == "b"))
    _write_plan(project, source="images:pics", max_samples=None, min_samples_per_class=2)
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"collect": {"cmd": "x", "deps": ["data"]}}}))

    assert main(["collect"]) == 0

    assert "collect reads pics, which dvc.yaml does not list under stages.collect.deps" in caplog.text
    assert np.array_equal(np.unique(Dataset.load(project / "data/raw", "samples").labels), [0, 1])


def test_the_registry_holds_the_data_stages():
    assert {"collect", "label", "prepare"} <= set(STAGES)


def test_a_stage_before_its_input_exists_says_what_to_run(project, capsys):
    _write_plan(project)
    assert main(["prepare"]) == 2
    err = capsys.readouterr().err
    assert "data/labeled/samples.npz, data/labeled/meta.json not found: run the label stage first" in err
    assert "Traceback" not in err


def test_a_regression_table_goes_through_all_three_stages(project):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(60, 3))
    frame = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "price": x @ [1.0, 2.0, 3.0]}
    frame["price"][[4, 9]] = np.nan  # not priced yet: queued for labeling
    pd.DataFrame(frame).to_parquet(project / "houses.parquet")
    _write_plan(
        project,
        source="table:houses.parquet",
        target="price",
        task="regression",
        max_samples=None,
        scaling="standard",
        reference_size=10,
    )
    plan = yaml.safe_load((project / "plan.yaml").read_text())
    plan["train"] = {"loss": "mse", "metrics": ["mae"]}
    (project / "plan.yaml").write_text(yaml.safe_dump(plan))

    for stage in ("collect", "label", "prepare"):
        assert main([stage]) == 0, stage

    assert (project / "data/labeled/queue/queue.csv").read_text().splitlines()[0] == "sample_id,a,b,c"
    assert len((project / "data/labeled/queue/queue.csv").read_text().splitlines()) == 3
    train = Dataset.load(project / "data/prepared", "train")
    assert train.labels.dtype == np.float32 and not np.isnan(train.labels).any()
    assert np.asarray(train.meta.scaling["mean"]).shape == (3,)
    report = json.loads((project / "data/prepared/prepare_report.json").read_text())
    assert report["sizes"] == {"train": 40, "val": 9, "test": 9, "reference": 10}
    assert "target" in report and "counts" not in report
