"""The drift check on real digits and a real model, with real Evidently (and MLflow for the summary)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from config.plan import MonitoringSection
from monitoring.drift import detect_drift
from monitoring.features import CONFIDENCE, PREDICTED
from monitoring.report import log_summary, save_report

POLICY = MonitoringSection(window=1000, min_samples=100, drift_share=0.3)


def test_same_distribution_is_not_drift(digits, monitor):
    frame_of, reference = monitor

    result = detect_drift(reference, frame_of(digits.images[500:1100]), POLICY)

    assert result.enough_data and not result.drifted
    assert result.share < POLICY.drift_share
    assert result.window_size == 600 and result.reference_size == 500
    assert {feature.name for feature in result.features} == set(reference.columns)
    assert set(result.prediction_distribution) == {"reference", "current"}
    assert sum(result.prediction_distribution["current"].values()) == pytest.approx(1)


def test_brighter_noisier_digits_drift(digits, monitor, shift):
    frame_of, reference = monitor

    result = detect_drift(reference, frame_of(shift(digits.images[500:1100])), POLICY)

    assert result.drifted and result.share >= 0.5
    drifted = {feature.name for feature in result.drifted_features}
    assert {"intensity_mean", "intensity_std"} <= drifted
    mean = next(feature for feature in result.features if feature.name == "intensity_mean")
    assert mean.method == "K-S p_value" and mean.score < mean.threshold


def test_a_tiny_window_is_not_enough_data(digits, monitor, shift):
    frame_of, reference = monitor

    result = detect_drift(reference, frame_of(shift(digits.images[500:560])), POLICY)

    assert not result.enough_data and not result.drifted
    assert result.window_size == 60 and result.features == () and result.snapshots == {}


def test_performance_with_feedback_labels(digits, monitor):
    frame_of, reference = monitor
    window = frame_of(digits.images[500:800])
    labels = digits.labels[500:800].astype("float64")
    labels[::2] = np.nan  # feedback came back for half the window

    result = detect_drift(reference, window, POLICY, labels=labels)

    assert result.labeled == 150
    expected = float((window[PREDICTED].to_numpy()[1::2] == digits.labels[501:800:2]).mean())
    assert result.performance["accuracy"] == pytest.approx(expected)
    assert "f1_score" in result.performance


def test_columns_must_match(monitor, digits):
    frame_of, reference = monitor

    with pytest.raises(ValueError, match="reference's columns"):
        detect_drift(reference, frame_of(digits.images[:200]).drop(columns=[CONFIDENCE]), POLICY)


def test_report_files_and_mlflow_summary(tmp_path, digits, monitor, shift):
    import mlflow

    frame_of, reference = monitor
    labels = digits.labels[500:700].astype("float64")
    result = detect_drift(reference, frame_of(shift(digits.images[500:700])), POLICY, labels=labels)

    files = save_report(result, tmp_path / "reports" / "t1", extra={"model_version": "3"})
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifacts = tmp_path / "artifacts"
    run_id = log_summary(
        client, result, files, tags={"model_version": "3"}, artifact_location=artifacts.as_uri()
    )

    assert set(files) == {"summary", "drift", "performance"}
    assert "<html" in files["drift"].read_text()[:2000].lower()
    summary = json.loads(files["summary"].read_text())
    assert summary["drifted"] is True and summary["model_version"] == "3"
    assert summary["window_size"] == 200 and "intensity_mean" in summary["drifted_features"]
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "monitoring"
    assert run.info.artifact_uri.startswith(artifacts.as_uri())
    assert list(artifacts.rglob("summary.json"))
    assert run.data.metrics["drift_share"] == pytest.approx(result.share)
    assert run.data.metrics["window_size"] == 200
    assert "score_intensity_mean" in run.data.metrics and "perf_accuracy" in run.data.metrics
    assert run.data.tags["model_version"] == "3"
    logged = {item.path for item in client.list_artifacts(run_id, "report")}
    assert {"report/summary.json", "report/drift.html"} <= logged


def test_tabular_shifted_column_drifts_and_names_it():
    import pandas as pd

    from data.dataset import DatasetMeta
    from monitoring.features import build_frame, fit_features

    meta = DatasetMeta(
        source="table:t.csv", kind="tabular", task="classification", classes=["a", "b"], input_shape=[3],
        feature_names=["age", "income", "score"],
    )  # fmt: skip
    rng = np.random.default_rng(0)

    def frame(n: int, income_shift: float) -> pd.DataFrame:
        inputs = rng.normal([40, 3, 0], [10, 1, 1], size=(n, 3)) + [0, income_shift, 0]
        predicted = (inputs[:, 2] > 0).astype("int64")
        return build_frame(spec, inputs, predicted, rng.uniform(0.5, 1, n))

    spec = fit_features(meta, np.zeros((1, 3)), components=3)
    reference = frame(500, 0.0)

    calm = detect_drift(reference, frame(400, 0.0), POLICY)
    shifted = detect_drift(reference, frame(400, 1.5), POLICY.model_copy(update={"drift_share": 0.2}))

    assert not calm.drifted
    assert shifted.drifted and "income" in [feature.name for feature in shifted.drifted_features]
    strongest = min(shifted.features, key=lambda feature: feature.score)  # K-S p-values: lowest is strongest
    assert strongest.name == "income" and strongest.score < 1e-6
