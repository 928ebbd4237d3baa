"""The benchmark's floor: the same request parsing and input validation as the service, no model, no store.

``uvicorn --factory bench.floor:floor_app_from_environment`` with ``FLOOR_INPUT_SHAPE=8,8``. What our service
costs beyond this is the model call, the store and the metrics.
"""

from __future__ import annotations

import os

import orjson
from fastapi import FastAPI, Response

from serving.inputs import InputError, to_batch
from serving.schemas import PredictRequest

_ANSWER = orjson.dumps({"model_version": "floor", "predictions": []})


def create_floor_app(input_shape: list[int], max_batch_size: int = 256) -> FastAPI:
    """An app whose /v1/predict validates like the service's and answers a constant."""
    app = FastAPI(title="validation-only floor")

    @app.post("/v1/predict")
    async def predict(body: PredictRequest) -> Response:
        try:
            to_batch(body.instances, input_shape, max_batch_size)
        except InputError as error:
            return Response(orjson.dumps({"detail": str(error)}), status_code=422)
        return Response(_ANSWER, media_type="application/json")

    return app


def floor_app_from_environment() -> FastAPI:
    shape = [int(part) for part in os.environ.get("FLOOR_INPUT_SHAPE", "8,8").split(",")]
    return create_floor_app(shape)
