"""The plan: `plan.yaml` read once into frozen, typed sections.

Every section rejects unknown keys, and every error names the file and the field path, what was expected
and what was found: ``plan.yaml: train.optimizer.learning_rate: must be > 0, got -1``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SOURCE_KINDS = ("sklearn", "keras", "images", "table")
SKLEARN_DATASETS = ("digits", "breast_cancer")
KERAS_DATASETS = ("mnist", "fashion_mnist")

# Metrics a model is judged on. "Higher is better" ones go under success.min, the rest under success.max.
HIGHER_IS_BETTER = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "roc_auc", "r2")
LOWER_IS_BETTER = (
    "mae",
    "mse",
    "latency_p50_ms_batch1",
    "latency_p99_ms_batch1",
    "latency_p50_ms_batch64",
    "latency_p99_ms_batch64",
    "model_size_mb",
)
LAYER_TYPES = (
    "Input",
    "Flatten",
    "Dense",
    "Conv2D",
    "MaxPooling2D",
    "GlobalAveragePooling2D",
    "Dropout",
    "BatchNormalization",
    "Rescaling",
)
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "softmax", "linear")

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class PlanError(ValueError):
    """A plan that can't be used. ``problems`` holds one line per broken field."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}: {problem}" for problem in problems))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectSection(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    goal: str = Field(min_length=1)


class SplitSection(Section):
    train: Fraction = 0.7
    val: Fraction = 0.15
    test: Fraction = 0.15
    seed: int = 42

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitSection:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


class LabelingSection(Section):
    # Label files merged over the source's labels: CSV `sample_id,label[,annotator]` or a Label Studio
    # JSON export. Several annotators for one sample are resolved by majority; ties are reported.
    annotations: list[str] = []
    # Where the queue of still-unlabeled samples is exported (CSV + Label Studio import JSON).
    queue_dir: str = "data/labeled/queue"


class DataSection(Section):
    source: str
    task: Literal["classification", "regression"] = "classification"
    # Class names in label-id order; None takes them from the source.
    classes: list[str] | None = None
    # Target column for `table:` sources.
    target: str | None = None
    # (height, width) images are resized to, for `images:` sources.
    image_size: tuple[PositiveInt, PositiveInt] | None = None
    color_mode: Literal["grayscale", "rgb"] = "grayscale"
    # Cap on samples taken from the source (stratified), for quick runs on large sets.
    max_samples: PositiveInt | None = None
    labeling: LabelingSection = LabelingSection()
    split: SplitSection = SplitSection()
    # Fitted on the train split in `prepare`; applied inside the model so serving can't drift from training.
    scaling: Literal["none", "standard", "minmax"] = "none"
    min_samples_per_class: PositiveInt = 10
    # Size of the monitoring reference sample drawn from the train split.
    reference_size: PositiveInt = 500

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        kind, _, arg = value.partition(":")
        if kind not in SOURCE_KINDS or not arg:
            raise ValueError(f"expected one of {', '.join(k + ':...' for k in SOURCE_KINDS)}, got {value!r}")
        if kind == "sklearn" and arg not in SKLEARN_DATASETS:
            raise ValueError(f"expected sklearn:{' or sklearn:'.join(SKLEARN_DATASETS)}, got {value!r}")
        if kind == "keras" and arg not in KERAS_DATASETS:
            raise ValueError(f"expected keras:{' or keras:'.join(KERAS_DATASETS)}, got {value!r}")
        return value

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError(f"expected at least 2 classes, got {len(value)}")
            if len(set(value)) != len(value):
                raise ValueError(f"class names must be distinct, got {value}")
        return value

    @model_validator(mode="after")
    def _source_arguments(self) -> DataSection:
        if self.source_kind == "table" and not self.target:
            raise ValueError("target: required for a table: source (the name of the label column)")
        return self

    @property
    def source_kind(self) -> str:
        return self.source.partition(":")[0]

    @property
    def source_arg(self) -> str:
        return self.source.partition(":")[2]


class RegularizerSpec(Section):
    kind: Literal["l1", "l2", "l1_l2"]
    l1: Annotated[float, Field(ge=0)] = 0.0
    l2: Annotated[float, Field(ge=0)] = 0.0


class LayerSpec(Section):
    """One layer of a Sequential stack. Only the fields its type takes may be set."""

    type: Literal[LAYER_TYPES]  # type: ignore[valid-type]
    units: PositiveInt | None = None
    activation: Literal[ACTIVATIONS] | None = None  # type: ignore[valid-type]
    filters: PositiveInt | None = None
    kernel_size: PositiveInt | tuple[PositiveInt, PositiveInt] | None = None
    strides: PositiveInt | tuple[PositiveInt, PositiveInt] | None = None
    padding: Literal["valid", "same"] | None = None
    pool_size: PositiveInt | tuple[PositiveInt, PositiveInt] | None = None
    rate: Annotated[float, Field(ge=0, lt=1)] | None = None
    scale: float | None = None
    offset: float | None = None
    shape: list[PositiveInt] | None = None
    kernel_regularizer: RegularizerSpec | None = None

    @model_validator(mode="after")
    def _fields_fit_type(self) -> LayerSpec:
        required = {
            "Dense": ("units",),
            "Conv2D": ("filters", "kernel_size"),
            "Dropout": ("rate",),
            "Rescaling": ("scale",),
        }.get(self.type, ())
        allowed = {
            "Input": ("shape",),
            "Flatten": (),
            "Dense": ("units", "activation", "kernel_regularizer"),
            "Conv2D": ("filters", "kernel_size", "strides", "padding", "activation", "kernel_regularizer"),
            "MaxPooling2D": ("pool_size", "strides", "padding"),
            "GlobalAveragePooling2D": (),
            "Dropout": ("rate",),
            "BatchNormalization": (),
            "Rescaling": ("scale", "offset"),
        }[self.type]
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)}: required for a {self.type} layer")
        extra = [
            name
            for name in type(self).model_fields
            if name != "type" and name not in allowed and getattr(self, name) is not None
        ]
        if extra:
            takes = ", ".join(allowed) or "nothing"
            raise ValueError(f"{', '.join(extra)}: not taken by a {self.type} layer (it takes: {takes})")
        return self


class ModelSection(Section):
    # Either a Sequential stack, or a Python builder `module:function`
    # (plan, input_shape, num_classes) -> Model.
    layers: list[LayerSpec] = []
    builder: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSection:
        if bool(self.layers) == bool(self.builder):
            found = "both" if self.layers else "neither"
            raise ValueError(
                "expected exactly one of layers (a Sequential stack) or builder (module:function), "
                f"got {found}"
            )
        return self


class OptimizerSection(Section):
    name: Literal["sgd", "adam", "rmsprop", "adagrad", "adadelta"] = "adam"
    learning_rate: PositiveFloat = 1e-3
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False
    schedule: Literal["constant", "exponential", "cosine"] = "constant"
    decay_steps: PositiveInt = 1000
    decay_rate: Fraction = 0.9

    @model_validator(mode="after")
    def _momentum_for_sgd(self) -> OptimizerSection:
        if self.name != "sgd" and (self.momentum or self.nesterov):
            raise ValueError(f"momentum and nesterov apply to sgd only, got name={self.name!r}")
        return self


class EarlyStoppingSection(Section):
    enabled: bool = True
    monitor: str = "val_loss"
    patience: PositiveInt = 5
    min_delta: Annotated[float, Field(ge=0)] = 0.0


class ReduceLROnPlateauSection(Section):
    enabled: bool = True
    monitor: str = "val_loss"
    factor: Fraction = 0.5
    patience: PositiveInt = 3
    min_lr: Annotated[float, Field(ge=0)] = 1e-6


class TrainSection(Section):
    epochs: PositiveInt = 30
    batch_size: PositiveInt = 32
    seed: int = 42
    optimizer: OptimizerSection = OptimizerSection()
    loss: Literal["sparse_categorical_crossentropy", "binary_crossentropy", "mse"] = (
        "sparse_categorical_crossentropy"
    )
    metrics: list[str] = ["accuracy"]
    early_stopping: EarlyStoppingSection = EarlyStoppingSection()
    reduce_lr: ReduceLROnPlateauSection = ReduceLROnPlateauSection()
    shuffle_buffer: PositiveInt = 10_000


class ResourcesSection(Section):
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    mixed_precision: bool = False
    # Training stops when this runs out; the best weights so far are kept.
    time_budget_minutes: PositiveFloat = 30


class ChampionSection(Section):
    # The candidate may not be clearly worse than the champion on this metric by more than `margin`:
    # a paired bootstrap confidence interval of (candidate - champion) on the same test rows fails the
    # check only when its upper bound is < -margin (models/gate.py documents the rule exactly).
    metric: Literal[HIGHER_IS_BETTER] = "accuracy"  # type: ignore[valid-type]
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.01
    bootstrap_samples: PositiveInt = 1000
    confidence: Fraction = 0.95


class SuccessSection(Section):
    min: dict[str, float] = {"accuracy": 0.9}
    max: dict[str, PositiveFloat] = {}
    champion: ChampionSection = ChampionSection()

    @field_validator("min")
    @classmethod
    def _known_min(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if name not in HIGHER_IS_BETTER:
                raise ValueError(f"{name}: expected one of {', '.join(HIGHER_IS_BETTER)}")
            if name != "r2" and not 0 < threshold <= 1:
                raise ValueError(f"{name}: must be in (0, 1], got {threshold:g}")
        return value

    @field_validator("max")
    @classmethod
    def _known_max(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            if name not in LOWER_IS_BETTER:
                raise ValueError(f"{name}: expected one of {', '.join(LOWER_IS_BETTER)}")
        return value


class DeploySection(Section):
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    alias: str = "champion"
    challenger_alias: str = "challenger"
    # Largest batch one request may send.
    max_batch_size: PositiveInt = 256
    # How the server calls the model: ONNX Runtime (measured fastest), the compiled Keras call, or auto
    # (ONNX, falling back to Keras when export or its output check fails).
    backend: Literal["auto", "onnx", "keras"] = "auto"
    # Inputs may exceed the training data's min/max by this share of its span before they are rejected.
    range_tolerance: Annotated[float, Field(ge=0)] = 0.1
    # Micro-batching: requests waiting while the model thread is busy share one model call of at most
    # this many instances (1: one call per request). batch_wait_ms > 0 waits that long for more.
    batch_max_rows: PositiveInt = 1024
    batch_wait_ms: Annotated[float, Field(ge=0, le=100)] = 0.0


class AlertSinkSection(Section):
    kind: Literal["file", "console", "webhook"]
    path: str | None = None
    url: str | None = Field(default=None, pattern=r"^https?://")
    timeout_seconds: PositiveFloat = 5.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3

    @model_validator(mode="after")
    def _target(self) -> AlertSinkSection:
        if self.kind == "file" and not self.path:
            raise ValueError("path: required for a file sink")
        if self.kind == "webhook" and not self.url:
            raise ValueError("url: required for a webhook sink")
        return self


class RetrainSection(Section):
    enabled: bool = True
    cooldown_hours: Annotated[float, Field(ge=0)] = 6.0
    max_per_day: Annotated[int, Field(ge=0)] = 2
    min_new_labels: Annotated[int, Field(ge=0)] = 50


class ScheduleSection(Section):
    monitor_every_minutes: PositiveInt | None = 15
    # Standard 5-field cron for scheduled retraining; None for none.
    retrain_cron: str | None = None

    @field_validator("retrain_cron")
    @classmethod
    def _five_fields(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"expected a 5-field cron expression, got {value!r}")
        return value


class MonitoringSection(Section):
    window: PositiveInt = 1000
    min_samples: PositiveInt = 100
    # A feature counts as drifted when Evidently's test says so; the window drifts when this share does.
    drift_share: Fraction = 0.3
    # Consecutive drifted windows before it is an alert (fewer is a warning) and before retraining.
    alert_after_windows: PositiveInt = 2
    retrain_after_windows: PositiveInt = 3
    embedding_components: PositiveInt = 3
    alerts: list[AlertSinkSection] = [AlertSinkSection(kind="file", path="var/alerts.jsonl")]
    retrain: RetrainSection = RetrainSection()
    schedule: ScheduleSection = ScheduleSection()

    @model_validator(mode="after")
    def _windows_ordered(self) -> MonitoringSection:
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) must be <= window ({self.window})")
        if self.retrain_after_windows < self.alert_after_windows:
            raise ValueError(
                f"retrain_after_windows ({self.retrain_after_windows}) must be >= "
                f"alert_after_windows ({self.alert_after_windows})"
            )
        return self


class Plan(Section):
    project: ProjectSection
    data: DataSection
    model: ModelSection
    train: TrainSection = TrainSection()
    resources: ResourcesSection = ResourcesSection()
    success: SuccessSection = SuccessSection()
    deploy: DeploySection
    monitoring: MonitoringSection = MonitoringSection()

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        regression = self.data.task == "regression"
        if regression != (self.train.loss == "mse"):
            raise ValueError(f"train.loss: {self.train.loss!r} does not fit data.task {self.data.task!r}")
        if (
            self.data.classes is not None
            and self.train.loss == "binary_crossentropy"
            and len(self.data.classes) != 2
        ):
            raise ValueError(
                f"train.loss: binary_crossentropy needs 2 classes, data.classes has {len(self.data.classes)}"
            )
        return self

    def digest(self) -> str:
        """A stable hash of the plan's content, recorded as lineage."""
        canonical = self.model_dump_json()
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    found = error.get("input")
    if kind == "extra_forbidden":
        return f"{location}: unknown key (found {found!r})"
    if kind == "missing":
        return f"{location}: required field is missing"
    message = error["msg"]
    message = message.removeprefix("Value error, ")
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(error.get("ctx", {}).values()), None)
        if isinstance(limit, int | float):
            message = f"must be {bounds[kind]} {limit:g}"
        message = message.replace("Input should be", "must be")
    elif kind.startswith("literal_error") or kind.endswith("_type") or kind.endswith("_parsing"):
        message = message.replace("Input should be", "expected")
    if kind != "value_error" and not isinstance(found, dict | list):
        message = f"{message}, got {found!r}"
    return f"{location}: {message}" if location else message


def parse_plan(raw: Any, path: str | Path = "plan.yaml") -> Plan:
    """Validate an already-parsed YAML document as a plan.

    Raises:
        PlanError: one line per broken field, each naming the file and the field path.
    """
    if raw is None:
        raise PlanError(path, ["expected a mapping of sections at the top level, got an empty file"])
    if not isinstance(raw, dict):
        raise PlanError(path, [f"expected a mapping of sections at the top level, got {type(raw).__name__}"])
    try:
        return Plan.model_validate(raw)
    except ValidationError as error:
        raise PlanError(path, [_describe(e) for e in error.errors()]) from None  # type: ignore[arg-type]


def load_plan(path: str | Path = "plan.yaml") -> Plan:
    """Read and validate a plan file.

    Args:
        path: the YAML file.

    Returns:
        The frozen plan.

    Raises:
        PlanError: the file is missing, is not YAML, or breaks the schema; the message names the field.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise PlanError(path, [f"can't read the plan: {error.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PlanError(path, [f"not valid YAML{where}: {problem}"]) from None
    return parse_plan(raw, path)
