"""The benchmark's floor: the service's request parsing and input validation, no model, no store.

``uvicorn --factory bench.floor:floor_app_from_environment`` with ``FLOOR_INPUT_SHAPE=8,8`` and, for the
served model's trained range, ``FLOOR_RANGE=low,high,tolerance`` (bench/serve.py reads it from the service's
``GET /v1/model``). What is validated, and how, is the service's own code: the body-size limit middleware
(``serving.app.BodyLimit``, the service's default limit), the pydantic body, and
``serving.inputs.validate_instances`` (shape, type, batch size, NaN/infinity, trained range). What our
service costs beyond this is the model call, the answer, the store and the metrics.
"""

from __future__ import annotations

import os

import numpy as np
import orjson
from fastapi import FastAPI, Response

from config.settings import Settings
from serving.app import BodyLimit
from serving.inputs import FeatureRange, InputError, validate_instances
from serving.schemas import PredictRequest

_ANSWER = orjson.dumps({"model_version": "floor", "predictions": []})


def create_floor_app(
    input_shape: list[int],
    max_batch_size: int = 256,
    *,
    feature_range: FeatureRange | None = None,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """An app whose /v1/predict validates like the service's and answers a constant."""
    app = FastAPI(title="validation-only floor")
    limit = max_body_bytes or Settings.model_fields["max_body_bytes"].default
    app.add_middleware(BodyLimit, limit=limit)

    @app.post("/v1/predict")
    async def predict(body: PredictRequest) -> Response:
        try:
            validate_instances(body.instances, input_shape, max_batch_size, feature_range)
        except InputError as error:
            return Response(orjson.dumps({"detail": str(error)}), status_code=422)
        return Response(_ANSWER, media_type="application/json")

    return app


def floor_app_from_environment() -> FastAPI:
    shape = [int(part) for part in os.environ.get("FLOOR_INPUT_SHAPE", "8,8").split(",")]
    feature_range = None
    if os.environ.get("FLOOR_RANGE"):  # one range for every value, as the service has for image models
        low, high, tolerance = (np.asarray(float(part)) for part in os.environ["FLOOR_RANGE"].split(","))
        feature_range = FeatureRange(low, high, tolerance, origin="the served model's, via GET /v1/model")
    return create_floor_app(shape, feature_range=feature_range)
