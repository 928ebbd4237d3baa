"""The service's routes: short, typed, dependencies as ``Annotated`` aliases; the work is in ``Service``."""

from __future__ import annotations

import ipaddress
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from serving.metrics import CONTENT_TYPE
from serving.schemas import (
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    ReloadResponse,
    Status,
)
from serving.service import NotReadyError, Service

API_KEY_HEADER = "X-API-Key"
VERSION_HEADER = "X-Model-Version"
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key."},
    413: {"model": ErrorResponse, "description": "Body over the size limit."},
    422: {"model": ErrorResponse, "description": "Input the model can't take; the detail says why."},
    503: {"model": ErrorResponse, "description": "No model loaded yet."},
}


async def get_service(request: Request) -> Service:
    # Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its threadpool, a
    # thread hop per dependency per request (measured: it cut the service's requests/s by 5x).
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def require_api_key(request: Request, service: ServiceDep) -> None:
    """When ``settings.api_key`` is set, the ``X-API-Key`` header must carry it."""
    check_api_key(request, service)


def check_api_key(request: Request, service: Service) -> None:
    """The key check itself; the predict routes call it inline (see ``predict``)."""
    expected = service.settings.api_key
    if expected is None:
        return
    given = request.headers.get(API_KEY_HEADER, "")
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        service.metrics.observe_error(request.url.path, 401, "auth")
        raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header; expected the service's API key")


async def require_admin(request: Request, service: ServiceDep) -> None:
    """Admin routes: the API key when one is set; without one, loopback clients only."""
    if service.settings.api_key is not None:
        return await require_api_key(request, service)
    host = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        service.metrics.observe_error(request.url.path, 403, "auth")
        raise HTTPException(403, f"admin routes answer loopback clients only (got {host}); set an API key")


ApiKey = Depends(require_api_key)
Admin = Depends(require_admin)
router = APIRouter()


def _model(service: Service, endpoint: str):  # -> ServedModel
    try:
        return service.model()
    except NotReadyError as error:
        service.metrics.observe_error(endpoint, 503, "not_ready")
        raise HTTPException(503, f"not ready: {error}") from None


# The hot path takes no FastAPI dependencies: resolving them cost ~130 us a request, more than the model
# call and the store together (bench/serve.py); the service and the key check are read inline.
@router.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS, tags=["predict"])
async def predict(body: PredictRequest, request: Request) -> Response:
    """Predict a batch of instances in the model's input shape (raw source units). Header X-API-Key when
    the service has a key."""
    started = time.perf_counter()
    service: Service = request.app.state.service
    check_api_key(request, service)
    model = _model(service, "/v1/predict")
    content = await service.predict_instances(body.instances, model, started)
    return prediction_response(content, model.version)


@router.post(
    "/v1/predict/image",
    response_model=PredictResponse,
    responses=_ERRORS,
    tags=["predict"],
)
async def predict_image(
    request: Request, files: Annotated[list[UploadFile], File(description="One or more image files.")]
) -> Response:
    """Predict uploaded images (image models), decoded and resized exactly as the training images were.
    Header X-API-Key when the service has a key."""
    started = time.perf_counter()
    service: Service = request.app.state.service
    check_api_key(request, service)
    model = _model(service, "/v1/predict/image")
    contents = [await upload.read() for upload in files]
    content = await service.predict_images(contents, model, started)
    return prediction_response(content, model.version)


def prediction_response(content: bytes, version: str) -> Response:
    """A 200 JSON body, with the version that answered in the ``X-Model-Version`` header."""
    return Response(content, media_type="application/json", headers={VERSION_HEADER: version})


@router.post(
    "/v1/feedback",
    response_model=FeedbackResponse,
    responses={404: {"model": ErrorResponse}, **_ERRORS},
    dependencies=[ApiKey],
    tags=["predict"],
)
async def feedback(body: FeedbackRequest, service: ServiceDep) -> FeedbackResponse:
    """Store the true label of an answered prediction (ground truth arriving later), for monitoring."""
    started = time.perf_counter()
    label = await service.feedback(body.request_id, body.label)
    service.metrics.observe_request("/v1/feedback", 200, time.perf_counter() - started)
    return FeedbackResponse(request_id=body.request_id, label=label, stored=True)


@router.get("/health", response_model=Status, tags=["status"])
async def health() -> Status:
    """Alive (the process answers); says nothing about the model."""
    return Status(status="alive")


@router.get("/ready", response_model=Status, responses={503: {"model": Status}}, tags=["status"])
async def ready(service: ServiceDep) -> Response:
    """Ready once a model is loaded, verified and warmed."""
    current = service.predictor.current
    if current is None:
        status = Status(status="loading", error=service.predictor.last_error)
        return JSONResponse(status.model_dump(), status_code=503)
    status = Status(status="ready", model_version=current.version, error=service.predictor.last_error)
    return JSONResponse(status.model_dump(), headers={VERSION_HEADER: current.version})


@router.get("/v1/model", response_model=ModelInfo, responses=_ERRORS, tags=["status"])
async def model_info(service: ServiceDep) -> ModelInfo:
    """The served version: name, version, run, gate metrics, signature, classes, trained input range."""
    model = _model(service, "/v1/model")
    meta = model.meta
    outputs = [1] if meta.task == "regression" else [meta.num_classes]
    return ModelInfo(
        name=model.name,
        version=model.version,
        alias=model.alias,
        run_id=model.run_id,
        sha256=model.sha256,
        backend=model.backend,
        task=meta.task,
        kind=meta.kind,
        classes=list(meta.classes),
        input_shape=list(meta.input_shape),
        signature={
            "inputs": {"dtype": "float32", "shape": [-1, *meta.input_shape]},
            "outputs": {"dtype": "float32", "shape": [-1, *outputs]},
        },
        metrics=model.metrics,
        feature_range=model.feature_range.describe() if model.feature_range else None,
        loaded_at=model.loaded_at,
    )


@router.get("/metrics", tags=["status"], response_class=Response)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics: requests, latency, batch sizes, errors, reloads, the served version."""
    return Response(service.metrics_text(), media_type=CONTENT_TYPE)


@router.post("/v1/admin/reload", response_model=ReloadResponse, dependencies=[Admin], tags=["admin"])
async def reload(service: ServiceDep) -> ReloadResponse:
    """Check the registry alias now; load, verify, warm and swap in a new version if it moved."""
    changed = await service.reload()
    return ReloadResponse(
        changed=changed, model_version=service.predictor.version, error=service.predictor.last_error
    )
