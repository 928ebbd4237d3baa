"""The gate's pure decision: thresholds, the paired bootstrap against the champion, the diagnosis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from config.plan import SuccessSection
from models.evaluate import evaluate_predictions
from models.gate import diagnose, judge, paired_bootstrap, render_markdown

CLASSES = ["a", "b", "c"]


def outputs_with_accuracy(y_true: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """One-hot outputs right on an ``accuracy`` share of shuffled rows, wrong (next class) elsewhere."""
    rng = np.random.default_rng(seed)
    predicted = y_true.copy()
    wrong = rng.permutation(len(y_true))[: round(len(y_true) * (1 - accuracy))]
    predicted[wrong] = (predicted[wrong] + 1) % len(CLASSES)
    return np.eye(len(CLASSES), dtype="float32")[predicted]


@pytest.fixture
def y_true() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 3, 400)


def verdict_for(y_true, candidate, champion, success: SuccessSection, **extra):
    metrics = evaluate_predictions(y_true, candidate, CLASSES, "classification")
    metrics.update(extra.pop("metrics", {}))
    return judge(
        metrics, success, y_true=y_true, candidate_outputs=candidate, champion_outputs=champion,
        num_classes=3, candidate_version="2", champion_version="1" if champion is not None else None, **extra,
    )  # fmt: skip


def test_good_model_passes_every_check(y_true):
    success = SuccessSection(min={"accuracy": 0.9, "macro_f1": 0.9}, max={"latency_p99_ms_batch1": 50})
    candidate = outputs_with_accuracy(y_true, 0.97, 1)
    verdict = verdict_for(y_true, candidate, None, success, metrics={"latency_p99_ms_batch1": 2.0})
    assert verdict.passed
    assert [check.name for check in verdict.checks] == [
        "accuracy", "macro_f1", "latency_p99_ms_batch1", "champion_accuracy_difference",
    ]  # fmt: skip
    accuracy = verdict.checks[0]
    assert (accuracy.value, accuracy.threshold, accuracy.direction) == (
        pytest.approx(0.97, abs=0.003),
        0.9,
        ">=",
    )
    assert verdict.checks[-1].detail == "no champion yet"


def test_impossible_threshold_fails_naming_the_check(y_true):
    success = SuccessSection(min={"accuracy": 1.0}, max={"latency_p99_ms_batch1": 0.001})
    verdict = verdict_for(y_true, outputs_with_accuracy(y_true, 0.97, 1), None, success,
                          metrics={"latency_p99_ms_batch1": 2.0})  # fmt: skip
    assert not verdict.passed
    assert [check.name for check in verdict.failures] == ["accuracy", "latency_p99_ms_batch1"]
    assert "**FAIL**" in render_markdown(verdict)


def test_unmeasured_metric_fails_not_passes(y_true):
    verdict = verdict_for(
        y_true, outputs_with_accuracy(y_true, 0.97, 1), None, SuccessSection(min={"roc_auc": 0.8})
    )
    assert not verdict.passed
    assert verdict.failures[0].detail == "roc_auc was not measured"


def test_clearly_worse_than_champion_fails(y_true):
    success = SuccessSection(min={"accuracy": 0.5})
    champion = outputs_with_accuracy(y_true, 0.97, 1)
    candidate = outputs_with_accuracy(y_true, 0.85, 2)  # 12 points worse, far beyond a 0.01 margin
    verdict = verdict_for(y_true, candidate, champion, success)
    check = verdict.checks[-1]
    assert not verdict.passed and not check.passed
    assert check.value == pytest.approx(-0.12, abs=0.01)
    assert check.threshold == -0.01
    assert "CI [" in check.detail and "v1" in check.detail


def test_within_the_margin_passes(y_true):
    success = SuccessSection(min={"accuracy": 0.5})
    champion = outputs_with_accuracy(y_true, 0.95, 1)
    candidate = outputs_with_accuracy(y_true, 0.945, 2)  # half a point worse: not clearly beyond 0.01
    verdict = verdict_for(y_true, candidate, champion, success)
    assert verdict.passed
    assert verdict.checks[-1].value == pytest.approx(-0.005, abs=0.003)


def test_paired_bootstrap_is_paired_and_seeded(y_true):
    champion = outputs_with_accuracy(y_true, 0.9, 1)
    same = paired_bootstrap(
        "accuracy", y_true, champion, champion, num_classes=3, samples=200, confidence=0.95
    )
    assert same == (0.0, 0.0, 0.0)  # identical models differ on no resample: pairing, not two point values
    candidate = outputs_with_accuracy(y_true, 0.8, 2)
    first = paired_bootstrap(
        "accuracy", y_true, candidate, champion, num_classes=3, samples=300, confidence=0.9
    )
    again = paired_bootstrap(
        "accuracy", y_true, candidate, champion, num_classes=3, samples=300, confidence=0.9
    )
    assert first == again
    point, low, high = first
    assert low < point < high < 0
    # The general path (any metric) agrees with the vectorised accuracy path on a macro metric's sign.
    f1 = paired_bootstrap("macro_f1", y_true, candidate, champion, num_classes=3, samples=100, confidence=0.9)
    assert f1[2] < 0
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap(
            "accuracy", y_true[:5], candidate, champion, num_classes=3, samples=10, confidence=0.9
        )


def test_diagnosis_overfitting_underfitting_weakest_classes():
    success = SuccessSection(min={"accuracy": 0.9})
    per_class = {"a": {"f1": 0.9}, "b": {"f1": 0.4}, "c": {"f1": 0.7}, "d": {"f1": 0.95}}
    overfit = diagnose({"accuracy": [0.8, 0.99], "val_accuracy": [0.75, 0.85]}, per_class, success)
    assert overfit.overfitting and not overfit.underfitting
    assert overfit.train_val_gap == pytest.approx(0.14)
    assert [row["class"] for row in overfit.weakest_classes] == ["b", "c", "a"]
    assert "overfitting: train-val gap on accuracy 0.140 at epoch 2" in overfit.notes[0]
    under = diagnose({"accuracy": [0.5, 0.6], "val_accuracy": [0.5, 0.58]}, per_class, success)
    assert under.underfitting and not under.overfitting
    assert any(note.startswith("underfitting") for note in under.notes)
    kept = diagnose(
        {"accuracy": [0.9, 0.95, 0.99], "val_accuracy": [0.9, 0.93, 0.92], "val_loss": [0.5, 0.3, 0.4]},
        {}, success, best_epoch=2,
    )  # fmt: skip
    assert kept.train_val_gap == pytest.approx(0.02) and not kept.overfitting
    assert kept.notes[0].startswith("no overfitting: train-val gap on accuracy 0.020 at epoch 2")
    assert "val loss rose after epoch 2" in " ".join(kept.notes)


def test_verdict_serialises(y_true):
    verdict = verdict_for(y_true, outputs_with_accuracy(y_true, 0.95, 1), None, SuccessSection())
    document = json.loads(verdict.to_json())
    assert document["passed"] is True
    assert document["checks"][0] == {
        "name": "accuracy", "value": pytest.approx(0.95, abs=0.003), "threshold": 0.9, "direction": ">=",
        "passed": True, "detail": "",
    }  # fmt: skip
    assert "# Gate verdict: PASSED" in render_markdown(verdict)


def test_regression_judged_on_r2_and_a_misfit_champion_metric_fails():
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=300)
    champion = y_true + rng.normal(scale=0.1, size=300)
    candidate = y_true + rng.normal(scale=1.0, size=300)  # far noisier: r2 clearly lower
    metrics = evaluate_predictions(y_true, candidate, [], "regression")
    success = SuccessSection(min={"r2": -10.0}, champion={"metric": "r2", "bootstrap_samples": 200})
    verdict = judge(metrics, success, y_true=y_true, candidate_outputs=candidate, champion_outputs=champion,
                    num_classes=0, champion_version="1")  # fmt: skip
    assert [check.name for check in verdict.failures] == ["champion_r2_difference"]
    assert verdict.checks[-1].value == pytest.approx(metrics["r2"] - (1 - np.mean((champion - y_true) ** 2)
                                                                     / np.var(y_true)), abs=1e-9)  # fmt: skip
    misfit = judge(metrics, SuccessSection(min={"r2": -10.0}), y_true=y_true, candidate_outputs=candidate,
                   champion_outputs=champion, num_classes=0)  # fmt: skip
    assert misfit.failures[0].detail == "success.champion.metric 'accuracy' does not apply to regression"
