"""Viability checks, each on small real plans and datasets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from config.plan import Plan, parse_plan
from config.settings import Settings
from data.dataset import Dataset, DatasetMeta
from pipeline.resources import GpuReport
from pipeline.viability import (
    Check,
    ViabilityReport,
    check_accelerator,
    check_alert_sinks,
    check_annotations,
    check_baseline,
    check_builder,
    check_samples_per_class,
    check_time_budget,
    check_viability,
    class_counts,
)

ROOT = Path(__file__).resolve().parents[2]
NO_GPU = GpuReport([], False, "no NVIDIA GPU found")
ONE_GPU = GpuReport(["NVIDIA H100"], True, "1 GPU(s): NVIDIA H100")


@pytest.fixture(scope="module")
def default_raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "plan.yaml").read_text())


def plan_with(raw: dict[str, Any], **sections: dict[str, Any]) -> Plan:
    """The default plan with some sections' keys replaced."""
    raw = copy.deepcopy(raw)
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return parse_plan(raw)


def dataset(labels: list[int], classes: list[str]) -> Dataset:
    n = len(labels)
    meta = DatasetMeta(source="test", kind="tabular", task="classification", classes=classes, input_shape=[3])
    return Dataset(
        features=np.zeros((n, 3), np.float32),
        labels=np.asarray(labels, np.int64),
        sample_ids=np.asarray([f"s{i}" for i in range(n)]),
        meta=meta,
    )


def test_report_is_viable_only_without_failed_errors() -> None:
    warning = Check("time budget", False, "too slow", "warning")
    failed = Check("baseline", False, "target too low")
    passed = Check("data source", True, "fine")

    assert ViabilityReport([passed, warning]).viable
    report = ViabilityReport([passed, warning, failed])
    assert not report.viable
    assert report.failures == [failed] and report.warnings == [warning]
    assert [c["status"] for c in report.to_dict()["checks"]] == ["ok", "warning", "failed"]
    assert str(report).splitlines()[-1] == "not viable: 1 check(s) failed"


def test_class_counts_name_classes_skip_unlabeled_and_follow_the_cap(default_raw: dict[str, Any]) -> None:
    data = dataset([0, 0, 0, 1, -1, -1, 2, 2], ["a", "b", "c"])
    plan = plan_with(default_raw, data={"classes": ["a", "b", "c"]})

    assert class_counts(data, plan.data) == {"a": 3, "b": 1, "c": 2}
    capped = plan_with(default_raw, data={"classes": ["a", "b", "c"], "max_samples": 4})
    assert class_counts(data, capped.data) == {"a": 1, "b": 0, "c": 1}


def test_samples_per_class_below_minimum_names_the_classes(default_raw: dict[str, Any]) -> None:
    plan = plan_with(default_raw, data={"min_samples_per_class": 5})

    check = check_samples_per_class({"cat": 9, "dog": 3, "bird": 4}, plan.data)

    assert not check.ok and check.severity == "error"
    assert check.detail == "data.min_samples_per_class is 5, got 'dog': 3, 'bird': 4"
    assert check_samples_per_class({"cat": 9, "dog": 5}, plan.data).ok


def test_samples_short_but_annotations_pending_is_a_warning(default_raw: dict[str, Any]) -> None:
    plan = plan_with(default_raw, data={"labeling": {"annotations": ["labels.csv"]}})

    check = check_samples_per_class({"cat": 60, "dog": 3}, plan.data, unlabeled=200)

    assert check.status == "warning"
    assert "200 unlabeled samples may get labels" in check.detail


@pytest.mark.parametrize(
    ("target", "counts", "ok"),
    [
        (0.95, {"a": 50, "b": 50}, True),
        (0.6, {"benign": 357, "malignant": 212}, False),
        (0.5, {"a": 5, "b": 5}, False),
    ],
)
def test_accuracy_target_at_or_below_majority_baseline_is_flagged(
    default_raw: dict[str, Any], target: float, counts: dict[str, int], ok: bool
) -> None:
    plan = plan_with(default_raw, success={"min": {"accuracy": target}})

    check = check_baseline(counts, plan.success)

    assert check.ok is ok
    if not ok:
        assert "at or below the majority-class baseline" in check.detail
        assert f"always answering {max(counts, key=counts.__getitem__)!r} meets it" in check.detail


def test_baseline_without_accuracy_target_is_information(default_raw: dict[str, Any]) -> None:
    plan = plan_with(default_raw, success={"min": {"macro_f1": 0.9}})

    check = check_baseline({"benign": 357, "malignant": 212}, plan.success)

    assert check.ok and check.severity == "info"
    assert "'benign' is 62.7%" in check.detail


@pytest.mark.parametrize(
    ("accelerator", "gpus", "ok", "fragment"),
    [
        ("gpu", NO_GPU, False, "resources.accelerator is 'gpu', but no NVIDIA GPU found"),
        ("gpu", ONE_GPU, True, "NVIDIA H100"),
        ("auto", NO_GPU, True, "auto -> cpu"),
        ("auto", ONE_GPU, True, "auto -> gpu"),
        ("cpu", ONE_GPU, True, "cpu ("),
    ],
)
def test_accelerator(
    default_raw: dict[str, Any], accelerator: str, gpus: GpuReport, ok: bool, fragment: str
) -> None:
    plan = plan_with(default_raw, resources={"accelerator": accelerator})

    check = check_accelerator(plan.resources, gpus)

    assert check.ok is ok
    assert fragment in check.detail


def test_time_budget_within_and_beyond(default_raw: dict[str, Any]) -> None:
    fits = check_time_budget(plan_with(default_raw), [8, 8], 1797, NO_GPU)
    assert fits.ok and "for 40 epochs on cpu, budget 10.0 min" in fits.detail

    slow = plan_with(default_raw, train={"epochs": 5000}, resources={"time_budget_minutes": 1})
    beyond = check_time_budget(slow, [8, 8], 1797, NO_GPU)
    assert beyond.status == "warning"
    assert "training stops at the budget near epoch" in beyond.detail


def test_builder_must_import_and_be_callable(tmp_path: Path, default_raw: dict[str, Any]) -> None:
    (tmp_path / "viability_builder_ok.py").write_text(
        "def build(plan, input_shape, num_classes):\n    return None\n"
    )
    (tmp_path / "viability_builder_broken.py").write_text("import not_a_module_anywhere\n")
    layerless = {"layers": [], "builder": "viability_builder_ok:build"}

    assert check_builder(plan_with(default_raw, model=layerless).model, tmp_path).ok
    missing_function = check_builder(
        plan_with(default_raw, model={**layerless, "builder": "viability_builder_ok:make"}).model, tmp_path
    )
    assert not missing_function.ok
    assert "expected a function make in viability_builder_ok, got nothing" in missing_function.detail
    broken = check_builder(
        plan_with(default_raw, model={**layerless, "builder": "viability_builder_broken:build"}).model,
        tmp_path,
    )
    assert not broken.ok and "No module named 'not_a_module_anywhere'" in broken.detail
    assert check_builder(plan_with(default_raw).model, tmp_path) is None


def test_alert_sinks_must_be_writable(tmp_path: Path, default_raw: dict[str, Any]) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir()
    good = plan_with(default_raw, monitoring={"alerts": [{"kind": "file", "path": "var/new/alerts.jsonl"}]})
    bad = plan_with(
        default_raw,
        monitoring={
            "alerts": [
                {"kind": "file", "path": "a-file/alerts.jsonl"},
                {"kind": "file", "path": "a-folder"},
                {"kind": "webhook", "url": "https://hooks.example/x"},
            ]
        },
    )

    assert check_alert_sinks(good.monitoring, tmp_path).ok
    check = check_alert_sinks(bad.monitoring, tmp_path)
    assert not check.ok
    assert "monitoring.alerts.0.path" in check.detail and "monitoring.alerts.1.path" in check.detail
    assert "alerts.2" not in check.detail


def test_missing_annotation_files_are_named(tmp_path: Path, default_raw: dict[str, Any]) -> None:
    (tmp_path / "round1.csv").write_text("sample_id,label\n")
    plan = plan_with(default_raw, data={"labeling": {"annotations": ["round1.csv", "round2.json"]}})

    check = check_annotations(plan.data.labeling, tmp_path)

    assert check is not None and not check.ok
    assert check.detail == "data.labeling.annotations: file(s) not found: round2.json"
    assert check_annotations(plan_with(default_raw).data.labeling, tmp_path) is None


def test_default_plan_is_viable_with_every_check(tmp_path: Path, default_raw: dict[str, Any]) -> None:
    report = check_viability(parse_plan(copy.deepcopy(default_raw)), Settings(root=tmp_path))

    assert report.viable, str(report)
    assert [check.name for check in report.checks] == [
        "data source",
        "data checks",
        "samples per class",
        "baseline",
        "time budget",
        "accelerator",
        "alert sinks",
    ]
    assert report.checks[0].detail == "sklearn:digits: 1797 samples (1797 labeled), input shape 8x8"


def test_table_with_nan_fails_the_data_checks_naming_rows(
    tmp_path: Path, default_raw: dict[str, Any]
) -> None:
    rows = ["a,b,label"] + [f"{i % 7}.5,{i % 5},{'yes' if i % 2 else 'no'}" for i in range(40)]
    rows[4] = "nan,1,no"
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    plan = plan_with(
        default_raw,
        data={
            "source": "table:table.csv",
            "target": "label",
            "classes": ["no", "yes"],
            "min_samples_per_class": 5,
        },
        model={
            "layers": [
                {"type": "Input", "shape": [2]},
                {"type": "Dense", "units": 2, "activation": "softmax"},
            ]
        },
        success={"min": {"accuracy": 0.8}},
    )

    report = check_viability(plan, Settings(root=tmp_path))

    assert not report.viable
    assert [check.name for check in report.failures] == ["data checks"]
    assert "table:table.csv: non-finite values" in report.failures[0].detail
    assert "(rows 3)" in report.failures[0].detail


def test_unreadable_source_fails_and_skips_the_data_checks(
    tmp_path: Path, default_raw: dict[str, Any]
) -> None:
    plan = plan_with(default_raw, data={"source": "images:photos"})

    report = check_viability(plan, Settings(root=tmp_path))

    assert not report.viable
    assert report.checks[0].name == "data source" and not report.checks[0].ok
    assert "photos" in report.checks[0].detail
    assert "samples per class" not in [check.name for check in report.checks]
