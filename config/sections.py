"""The plan's sections for data, model, training and resources: frozen, typed, unknown keys refused.

``config.plan`` composes them (with ``config.policies``) into the ``Plan``; a room reads only its section.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
