"""The plan schema: the default plan loads, and every kind of broken field is reported by file and path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.plan import Plan, PlanError, load_plan, parse_plan

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default_raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "plan.yaml").read_text())


def write_plan(directory: Path, raw: Any) -> Path:
    path = directory / "plan.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_default_plan_loads_with_its_values() -> None:
    plan = load_plan(ROOT / "plan.yaml")

    assert isinstance(plan, Plan)
    assert plan.data.source == "sklearn:digits"
    assert plan.data.source_kind == "sklearn" and plan.data.source_arg == "digits"
    assert plan.data.classes == [str(digit) for digit in range(10)]
    assert plan.model.layers[0].type == "Input"
    assert plan.deploy.model_name == "digits-classifier"
    assert plan.success.min["accuracy"] == pytest.approx(0.95)


def test_plan_is_frozen_and_its_digest_is_stable(default_raw: dict[str, Any]) -> None:
    plan = parse_plan(default_raw)
    with pytest.raises(ValueError):
        plan.train.epochs = 3  # type: ignore[misc]

    changed = copy.deepcopy(default_raw)
    changed["train"]["epochs"] = 3
    assert plan.digest() == parse_plan(copy.deepcopy(default_raw)).digest()
    assert plan.digest() != parse_plan(changed).digest()


def test_sections_used_later_have_defaults(default_raw: dict[str, Any]) -> None:
    minimal = {key: default_raw[key] for key in ("project", "data", "model", "deploy")}

    plan = parse_plan(minimal)

    assert plan.resources.accelerator == "auto"
    assert plan.monitoring.alerts[0].kind == "file"
    assert plan.train.loss == "sparse_categorical_crossentropy"


def _set(path: str, value: Any):
    """A change to the default plan: set the dotted ``path`` (list indices as numbers) to ``value``."""

    def change(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _drop(path: str):
    def change(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[part]
        del node[last]

    return change


def _both(*changes):
    def change(raw: dict[str, Any]) -> None:
        for one in changes:
            one(raw)

    return change


# (id, change to the default plan, fragments the message must contain: the field path, expected and found)
INVALID_PLANS = [
    ("unknown-top-level-key", _set("trainer", {"epochs": 3}), ["trainer: unknown key"]),
    ("unknown-nested-key", _set("train.optimizer.lr", 0.1), ["train.optimizer.lr: unknown key", "0.1"]),
    ("missing-required-section", _drop("deploy"), ["deploy: required field is missing"]),
    ("missing-required-field", _drop("project.name"), ["project.name: required field is missing"]),
    ("wrong-type-int", _set("train.epochs", "many"), ["train.epochs: expected a valid integer", "'many'"]),
    ("wrong-type-list", _set("data.classes", "0123"), ["data.classes: expected a valid list", "'0123'"]),
    (
        "negative-learning-rate",
        _set("train.optimizer.learning_rate", -1),
        ["train.optimizer.learning_rate: must be > 0, got -1"],
    ),
    ("zero-batch-size", _set("train.batch_size", 0), ["train.batch_size: must be > 0, got 0"]),
    ("fraction-out-of-range", _set("monitoring.drift_share", 1.5), ["monitoring.drift_share: must be < 1"]),
    (
        "unknown-source-kind",
        _set("data.source", "s3:bucket"),
        ["data.source: expected one of sklearn:...", "table:...", "got 's3:bucket'"],
    ),
    (
        "unknown-sklearn-dataset",
        _set("data.source", "sklearn:iris"),
        ["data.source: expected sklearn:digits or sklearn:breast_cancer", "got 'sklearn:iris'"],
    ),
    (
        "source-without-argument",
        _set("data.source", "images:"),
        ["data.source: expected one of", "'images:'"],
    ),
    ("table-without-target", _set("data.source", "table:data.csv"), ["data: target: required"]),
    ("split-not-summing-to-one", _set("data.split.train", 0.8), ["data.split: ", "must sum to 1, got 1.1"]),
    ("dense-without-units", _set("model.layers.3", {"type": "Dense"}), ["model.layers.3: units: required"]),
    (
        "field-not-taken-by-layer",
        _set("model.layers.2", {"type": "Flatten", "units": 4}),
        ["model.layers.2: units: not taken by a Flatten layer"],
    ),
    (
        "unknown-layer-type",
        _set("model.layers.2", {"type": "Flattten"}),
        ["model.layers.2.type: expected 'Input'", "got 'Flattten'"],
    ),
    (
        "layers-and-builder",
        _set("model.builder", "my_models.cnn:build"),
        ["model: expected exactly one of layers", "got both"],
    ),
    (
        "neither-layers-nor-builder",
        _set("model.layers", []),
        ["model: expected exactly one of", "got neither"],
    ),
    (
        "unknown-success-metric",
        _set("success.min.accuracyy", 0.9),
        ["success.min: accuracyy: expected one of accuracy"],
    ),
    (
        "success-threshold-above-one",
        _set("success.min.accuracy", 1.5),
        ["success.min: accuracy: must be in (0, 1]"],
    ),
    (
        "webhook-without-url",
        _set("monitoring.alerts", [{"kind": "webhook"}]),
        ["monitoring.alerts.0: url: required for a webhook sink"],
    ),
    (
        "webhook-url-not-http",
        _set("monitoring.alerts", [{"kind": "webhook", "url": "ftp://x"}]),
        ["monitoring.alerts.0.url: String should match pattern", "'ftp://x'"],
    ),
    (
        "bad-cron",
        _set("monitoring.schedule.retrain_cron", "every monday"),
        ["monitoring.schedule.retrain_cron: expected a 5-field cron expression, got 'every monday'"],
    ),
    (
        "loss-not-fitting-task",
        _set("train.loss", "mse"),
        ["train.loss: 'mse' does not fit data.task 'classification'"],
    ),
    (
        "binary-loss-with-ten-classes",
        _set("train.loss", "binary_crossentropy"),
        ["train.loss: binary_crossentropy needs 2 classes", "has 10"],
    ),
    (
        "unknown-accelerator",
        _set("resources.accelerator", "tpu"),
        ["resources.accelerator: expected 'auto'", "'tpu'"],
    ),
    (
        "momentum-without-sgd",
        _set("train.optimizer.momentum", 0.9),
        ["train.optimizer: momentum and nesterov apply to sgd only, got name='adam'"],
    ),
    (
        "monitoring-windows-out-of-order",
        _both(_set("monitoring.window", 50), _set("monitoring.min_samples", 100)),
        ["monitoring: min_samples (100) must be <= window (50)"],
    ),
]


@pytest.mark.parametrize(
    ("change", "fragments"), [case[1:] for case in INVALID_PLANS], ids=[c[0] for c in INVALID_PLANS]
)
def test_invalid_plan_names_file_field_and_values(
    tmp_path: Path, default_raw: dict[str, Any], change, fragments: list[str]
) -> None:
    raw = copy.deepcopy(default_raw)
    change(raw)
    path = write_plan(tmp_path, raw)

    with pytest.raises(PlanError) as caught:
        load_plan(path)

    message = str(caught.value)
    assert caught.value.path == str(path)
    assert all(line.startswith(f"{path}: ") for line in message.splitlines()), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_every_broken_field_is_reported_at_once(tmp_path: Path, default_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(default_raw)
    raw["train"]["epochs"] = -3
    raw["deploy"]["surprise"] = True

    with pytest.raises(PlanError) as caught:
        load_plan(write_plan(tmp_path, raw))

    assert len(caught.value.problems) == 2
    assert any(problem.startswith("train.epochs: must be > 0, got -3") for problem in caught.value.problems)
    assert any(problem.startswith("deploy.surprise: unknown key") for problem in caught.value.problems)


def test_not_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("project: {name: x\n  goal: [unclosed\n")

    with pytest.raises(PlanError, match=r"plan\.yaml: not valid YAML at line \d+, column \d+: "):
        load_plan(path)


@pytest.mark.parametrize(
    ("text", "found"), [("", "got an empty file"), ("- a\n- b\n", "got list"), ("just text\n", "got str")]
)
def test_plan_that_is_not_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)

    with pytest.raises(PlanError) as caught:
        load_plan(path)

    assert str(caught.value) == f"{path}: expected a mapping of sections at the top level, {found}"


def test_missing_plan_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    with pytest.raises(PlanError) as caught:
        load_plan(path)

    assert str(caught.value) == f"{path}: can't read the plan: No such file or directory"


def test_parse_plan_names_the_given_file(default_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(default_raw)
    raw["train"]["epochs"] = 0

    with pytest.raises(PlanError, match=r"^configs/exp\.yaml: train\.epochs: must be > 0, got 0$"):
        parse_plan(raw, "configs/exp.yaml")
