"""The drift check: a window of live traffic against the champion's reference, with Evidently's Report API.

``detect_drift`` only computes: DataDriftPreset over every monitoring column (inputs or image statistics and
embedding components, the predicted class, the confidence), the predicted-class distribution, and, when
feedback labels exist for the window, the model's performance. ``save_report`` and ``log_summary`` are the
thin acting side, in ``monitoring.report``: HTML + JSON under ``var/reports/<time>/`` and an MLflow run.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from config.plan import MonitoringSection
from monitoring.features import PREDICTED

# Below this many labeled rows in a window, performance is noise: it is not computed.
MIN_LABELED_FOR_PERFORMANCE = 10
LABEL = "label"


@dataclass(frozen=True)
class FeatureDrift:
    """Evidently's per-column verdict: the test's score, its method and threshold, and whether it drifted."""

    name: str
    score: float
    method: str
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """What one drift check found; ``drifted`` means share >= threshold_share on a window with enough data."""

    window_size: int
    reference_size: int
    min_samples: int
    enough_data: bool
    share: float = 0.0  # share of monitoring columns that drifted
    threshold_share: float = 0.0  # plan monitoring.drift_share
    features: tuple[FeatureDrift, ...] = ()
    prediction_distribution: dict[str, dict[str, float]] = field(default_factory=dict)
    labeled: int = 0
    performance: dict[str, float] | None = None
    seconds: float = 0.0
    # Evidently snapshots by name ("drift", "performance"), for save_report; not part of the summary.
    snapshots: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def drifted(self) -> bool:
        return self.enough_data and self.share >= self.threshold_share

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        return [feature for feature in self.features if feature.drifted]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (no snapshots)."""
        content = asdict(self)
        content.pop("snapshots")
        content["features"] = [asdict(feature) for feature in self.features]
        content["drifted"] = self.drifted
        content["drifted_features"] = [feature.name for feature in self.drifted_features]
        return content


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    policy: MonitoringSection,
    *,
    labels: np.ndarray | None = None,
) -> DriftResult:
    """Compare a window of monitoring features with the reference.

    Args:
        reference: the reference's monitoring frame (``monitoring.features.build_frame``).
        current: the window's monitoring frame, same columns.
        policy: the plan's monitoring section (``min_samples``, ``drift_share``).
        labels: feedback labels aligned with ``current`` (NaN where none came back), or None.

    Returns:
        The result; a window under ``policy.min_samples`` rows is returned as not enough data, unjudged.

    Raises:
        ValueError: the frames don't have the same columns, or labels don't align with the window.
    """
    started = time.perf_counter()
    if list(reference.columns) != list(current.columns):
        raise ValueError(
            f"Expected the window to have the reference's columns {list(reference.columns)}. "
            f"Received {list(current.columns)}."
        )
    if labels is not None and len(labels) != len(current):
        raise ValueError(
            f"Expected one label (or NaN) per window row ({len(current)}). Received {len(labels)}."
        )
    if len(current) < policy.min_samples:
        return DriftResult(
            len(current),
            len(reference),
            policy.min_samples,
            enough_data=False,
            threshold_share=policy.drift_share,
        )
    from evidently import Report
    from evidently.metrics import UniqueValueCount
    from evidently.presets import DataDriftPreset

    categorical = _categorical(current)
    metrics: list[Any] = [DataDriftPreset(drift_share=policy.drift_share)]
    if categorical:
        metrics.append(UniqueValueCount(column=PREDICTED))
    with np.errstate(divide="ignore", invalid="ignore"):  # Evidently's correlations on constant columns
        snapshot = Report(metrics, include_tests=True).run(
            _dataset(current, categorical), _dataset(reference, categorical)
        )
    features = _read_drift(snapshot.dict())
    distribution = (
        {"reference": _shares(reference[PREDICTED]), "current": _shares(current[PREDICTED])}
        if categorical
        else {}
    )
    share = sum(feature.drifted for feature in features) / len(features) if features else 0.0
    snapshots = {"drift": snapshot}
    performance, labeled = None, 0
    if labels is not None:
        known = ~np.isnan(np.asarray(labels, dtype="float64"))
        labeled = int(known.sum())
        if labeled >= MIN_LABELED_FOR_PERFORMANCE:
            snapshots["performance"], performance = _performance(
                current[PREDICTED].to_numpy()[known],
                np.asarray(labels)[known],
                classification=bool(categorical),
            )
    return DriftResult(
        len(current),
        len(reference),
        policy.min_samples,
        enough_data=True,
        share=share,
        threshold_share=policy.drift_share,
        features=tuple(features),
        prediction_distribution=distribution,
        labeled=labeled,
        performance=performance,
        seconds=time.perf_counter() - started,
        snapshots=snapshots,
    )


def _categorical(frame: pd.DataFrame) -> list[str]:
    # The predicted class is categorical (int ids); every other monitoring column is numerical.
    return [PREDICTED] if PREDICTED in frame and frame[PREDICTED].dtype.kind in "iu" else []


def _dataset(frame: pd.DataFrame, categorical: list[str]) -> Any:
    from evidently import DataDefinition, Dataset

    numerical = [column for column in frame.columns if column not in categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    return Dataset.from_pandas(frame, data_definition=definition)


def _shares(column: pd.Series) -> dict[str, float]:
    shares = column.value_counts(normalize=True).sort_index()
    return {str(key): round(float(value), 6) for key, value in shares.items()}


def _read_drift(report: dict[str, Any]) -> list[FeatureDrift]:
    """Per-column scores from the ValueDrift metrics, drifted flags from their tests."""
    status = {
        test["metric_config"]["metric_id"]: test["status"]
        for test in report.get("tests", [])
        if test.get("id") == "drift"
    }
    features = []
    for metric in report["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            features.append(
                FeatureDrift(
                    name=config["column"],
                    score=float(metric["value"]),
                    method=str(config.get("method")),
                    threshold=float(config.get("threshold") or 0.0),
                    drifted=status.get(metric["id"]) == "FAIL",
                )
            )
    return features


def _performance(
    predicted: np.ndarray, labels: np.ndarray, *, classification: bool
) -> tuple[Any, dict[str, float]]:
    from evidently import DataDefinition, Dataset, MulticlassClassification, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    frame = pd.DataFrame({PREDICTED: predicted, LABEL: labels})
    if classification:
        frame = frame.astype("int64")
        definition = DataDefinition(
            categorical_columns=[PREDICTED, LABEL],
            classification=[MulticlassClassification(target=LABEL, prediction_labels=PREDICTED)],
        )
        preset: Any = ClassificationPreset()
    else:
        definition = DataDefinition(
            numerical_columns=[PREDICTED, LABEL], regression=[Regression(target=LABEL, prediction=PREDICTED)]
        )
        preset = RegressionPreset()
    with warnings.catch_warnings():  # a class never predicted in the window: its precision is 0, say no more
        warnings.simplefilter("ignore", category=UserWarning)
        snapshot = Report([preset]).run(Dataset.from_pandas(frame, data_definition=definition), None)
    performance: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        name = _snake(metric["metric_name"].split("(")[0])
        value = metric["value"]
        if isinstance(value, dict) and "mean" in value:
            value = value["mean"]
        if isinstance(value, int | float) and np.isfinite(value):
            performance[name] = float(value)
    return snapshot, performance


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
