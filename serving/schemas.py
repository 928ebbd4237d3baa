"""Request and response bodies of the prediction service (they document /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"instances": [[[0.0, 3.0], [12.0, 16.0]]]}]},
    )
    # Checked against the model's input shape and trained range by the service, which says what was wrong.
    instances: list[Any] = Field(
        description="Instances in the model's input shape (GET /v1/model: input_shape), raw source units."
    )


class Prediction(BaseModel):
    request_id: str = Field(description="Id of this instance's prediction: send it with /v1/feedback.")
    class_id: int | None = None
    label: str | None = None
    confidence: float | None = Field(default=None, description="Probability of the predicted class.")
    probabilities: list[float] | None = None
    value: float | None = Field(default=None, description="The prediction of a regression model.")


class PredictResponse(BaseModel):
    model_name: str
    model_version: str
    request_id: str
    predictions: list[Prediction]


class FeedbackRequest(BaseModel):
    request_id: str = Field(min_length=1, max_length=80, description="A prediction's request_id.")
    label: int | float | str = Field(
        description="The true class id or class name (classification), or the true value (regression)."
    )


class FeedbackResponse(BaseModel):
    request_id: str
    label: float
    stored: bool


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str | None
    run_id: str
    sha256: str
    backend: str
    task: str
    kind: str
    classes: list[str]
    input_shape: list[int]
    signature: dict[str, Any]
    metrics: dict[str, float] = Field(description="The run's metrics, those the gate judged included.")
    feature_range: dict[str, Any] | None
    loaded_at: float


class Status(BaseModel):
    status: str
    model_version: str | None = None
    error: str | None = None


class ReloadResponse(BaseModel):
    changed: bool
    model_version: str | None
    error: str | None = None


class ErrorResponse(BaseModel):
    detail: str
