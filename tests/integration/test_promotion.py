"""Promotion end to end through the `lifecycle` CLI, on a real MLflow store and real (tiny) trained models.

v1 is trained (good), v2 is the same network untrained (clearly worse), v3 is v1's model logged again
(identical on the test split, so within the champion margin). The gate must promote v1, refuse v2 without
moving the champion, take v2 only when forced with a reason, roll back, and accept v3.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from config.plan import parse_plan
from config.settings import Settings
from data.dataset import Dataset
from models.client import tracking_client
from pipeline.cli import app
from pipeline.results import GateSummary
from tests.support import band_images, tiny_meta, tiny_plan

PLAN = tiny_plan(
    "promo-project",
    "promo-model",
    train={"epochs": 4, "seed": 3},
    success={
        "min": {"accuracy": 0.6},
        "max": {"latency_p99_ms_batch1": 1000},
        "champion": {"metric": "accuracy", "margin": 0.01, "bootstrap_samples": 300, "confidence": 0.95},
    },
)
META = tiny_meta()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A project root with plan.yaml, data/prepared/{train,val,test}.npz and a private MLflow store."""
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(PLAN, sort_keys=False))
    splits = {
        "train": band_images(240, 1, META),
        "val": band_images(60, 2, META),
        "test": band_images(120, 3, META),
    }
    settings = Settings(root=tmp_path)
    for name, split in splits.items():
        split.save(settings.layout.prepared_dir, name)
    monkeypatch.setenv("LIFECYCLE_ROOT", str(tmp_path))
    return settings, splits


def register(settings: Settings, splits: dict[str, Dataset], result) -> str:
    from models.client import artifact_location
    from models.tracking import log_training_run

    plan = parse_plan(PLAN)
    version = log_training_run(
        tracking_client(settings), plan, result, META, plan_path=settings.root / "plan.yaml",
        root=settings.root, input_example=splits["train"].features[:2],
        artifact_location=artifact_location(settings),
    )  # fmt: skip
    return version.version


def test_gate_promotes_refuses_forces_rolls_back(project):
    from models.build import build_model
    from models.train import TrainResult, train_model

    settings, splits = project
    plan = parse_plan(PLAN)
    trained = train_model(
        lambda: build_model(plan.model, META, plan.train),
        splits["train"],
        splits["val"],
        plan.train,
        plan.resources,
    )
    untrained = TrainResult(build_model(plan.model, META, plan.train), {}, 0, "epochs", 0.0, "cpu")
    assert register(settings, splits, trained) == "1"
    assert register(settings, splits, untrained) == "2"
    assert register(settings, splits, trained) == "3"

    runner = CliRunner()
    plan_option = ["--plan", str(settings.root / "plan.yaml")]
    client = tracking_client(settings)

    def champion() -> str | None:
        version = client.get_registered_model("promo-model").aliases.get("champion")
        return None if version is None else str(version)

    def gate_report() -> dict:
        return json.loads((settings.layout.reports_dir / "gate.json").read_text())

    nothing = runner.invoke(app, ["rollback", *plan_option])
    assert nothing.exit_code == 2 and "earlier 'champion'" in nothing.output
    missing = runner.invoke(app, ["promote", "99", *plan_option])
    assert missing.exit_code == 2 and "v99" in missing.output
    refused = runner.invoke(app, ["promote", "2", "--force", *plan_option])
    assert refused.exit_code == 2 and "--force needs --reason" in refused.output
    assert champion() is None

    first = runner.invoke(app, ["promote", "1", *plan_option])
    assert first.exit_code == 0, first.output
    assert champion() == "1"
    assert gate_report()["passed"] is True
    assert gate_report()["checks"][-1]["detail"] == "no champion yet"
    markdown = (settings.layout.reports_dir / "gate.md").read_text()
    assert markdown.startswith("# Gate verdict: PASSED") and "- candidate: v1" in markdown
    run_1 = client.get_run(client.get_model_version("promo-model", "1").run_id)
    assert run_1.data.tags["gate.passed"] == "true"
    assert run_1.data.metrics["test_accuracy"] >= 0.6
    logged = [a.path for a in client.list_artifacts(run_1.info.run_id, "gate")]
    assert {"gate/gate.json", "gate/confusion_matrix.png", "gate/classification_report.txt"} <= set(logged)
    report = (settings.layout.reports_dir / "classification_report.txt").read_text()
    # a header, the 3 classes, the macro average and the accuracy
    assert "macro avg" in report and len(report.splitlines()) == 1 + 3 + 2

    worse = runner.invoke(app, ["promote", "2", *plan_option])
    assert worse.exit_code == 1, worse.output
    assert "gate failed" in worse.output
    assert champion() == "1"  # never moved on a fail
    report = gate_report()
    assert (
        report["passed"] is False and report["candidate_version"] == "2" and report["champion_version"] == "1"
    )
    champion_check = report["checks"][-1]
    assert champion_check["name"] == "champion_accuracy_difference" and champion_check["passed"] is False
    assert client.get_model_version("promo-model", "2").tags["gate.passed"] == "false"
    assert len([e for e in _ledger() if e.alias == "champion"]) == 1

    forced = runner.invoke(app, ["promote", "2", "--force", "--reason", "fire drill", *plan_option])
    assert forced.exit_code == 0, forced.output
    assert champion() == "2"

    rolled = runner.invoke(app, ["rollback", "--reason", "drill over", *plan_option])
    assert rolled.exit_code == 0, rolled.output
    assert champion() == "1"

    same = runner.invoke(app, ["promote", "3", *plan_option])  # identical outputs: within the margin
    assert same.exit_code == 0, same.output
    assert champion() == "3"
    assert gate_report()["checks"][-1]["value"] == 0.0

    status = runner.invoke(app, ["status", "--json", *plan_option])
    assert status.exit_code == 0, status.output
    document = json.loads(status.output)
    assert (document["champion"], document["challenger"]) == ("3", "3")
    assert [(v["version"], v["passed"]) for v in document["verdicts"]] == [
        ("3", True),
        ("2", False),
        ("1", True),
    ]
    moves = [(e["alias"], e["version"], e["action"], e["forced"]) for e in document["ledger"]]
    assert moves == [
        ("challenger", "1", "challenger", False),
        ("champion", "1", "promote", False),
        ("champion", "2", "promote", True),
        ("champion", "1", "rollback", False),
        ("challenger", "3", "challenger", False),
        ("champion", "3", "promote", False),
    ]
    assert document["ledger"][2]["reason"] == "fire drill"
    assert document["ledger"][1]["report_ref"].startswith("runs:/") and document["ledger"][1][
        "report_ref"
    ].endswith("gate/gate.json")
    assert document["monitoring"]["last_check"] is None  # no drift check has run in this project
    assert set(document["monitoring"]["next_runs"]) == {"monitor", "retrain"}

    readable = runner.invoke(app, ["status", *plan_option])
    assert readable.exit_code == 0, readable.output
    assert "champion v3" in readable.output and "last drift check: none yet" in readable.output


def _ledger():
    from models.registry import read_ledger

    return read_ledger(tracking_client(Settings()), "promo-model")


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_flow_gate_step_promotes_then_refuses_without_moving(project, monkeypatch):
    """The lifecycle flow's steps: the train and evaluate stage shells, then the gate task (run as a plain
    function; the flow itself is a Prefect wrapper around these)."""
    from models.registry import alias_version, read_ledger
    from pipeline.flows import gate_and_promote
    from pipeline.stages import evaluate_stage, train_stage

    settings, _ = project
    client = tracking_client(settings)
    plan = parse_plan(PLAN)
    train_stage(plan, settings)
    evaluate_stage(plan, settings)
    metrics = json.loads((settings.layout.reports_dir / "metrics.json").read_text())
    assert (
        metrics["accuracy"] >= 0.6 and metrics["latency_p50_ms_batch1"] > 0 and metrics["model_size_mb"] > 0
    )
    assert set(metrics["per_class"]) == {"0", "1", "2"}

    progress = Lines()
    logger = logging.getLogger("lifecycle")
    monkeypatch.setattr(logger, "handlers", [progress])
    monkeypatch.setattr(logger, "level", logging.INFO)
    monkeypatch.setattr(logger, "disabled", False)
    first = gate_and_promote.fn(plan, settings)
    assert first == GateSummary(
        version="1", passed=True, moved=True, champion="1", failures=[],
        report=settings.layout.reports_dir / "gate.md", report_ref=first.report_ref,
    )  # fmt: skip
    assert any(line.startswith("gate: v1 PASSED; champion is v1") for line in progress.lines)
    assert "gate: [pass] accuracy" in " ".join(progress.lines)
    again = gate_and_promote.fn(plan, settings)  # DVC skipped train: the same version, already champion
    assert again.passed and again.champion == "1"
    assert len(read_ledger(client, "promo-model")) == 2  # challenger + champion, no duplicate moves

    strict = parse_plan(
        {**PLAN, "train": {**PLAN["train"], "seed": 4}, "success": {"max": {"model_size_mb": 1e-6}}}
    )
    train_stage(strict, settings)
    evaluate_stage(strict, settings)
    failed = gate_and_promote.fn(strict, settings)
    assert (failed.version, failed.passed, failed.moved, failed.champion) == (
        "2",
        False,
        False,
        "1",
    )
    assert failed.failures == ["model_size_mb"]
    assert any(line.startswith("gate: v2 FAILED; champion not moved") for line in progress.lines)
    assert alias_version(client, "promo-model") == "1"
    assert alias_version(client, "promo-model", "challenger") == "1"
    assert len(read_ledger(client, "promo-model")) == 2
    assert json.loads((settings.layout.reports_dir / "gate.json").read_text())["passed"] is False
