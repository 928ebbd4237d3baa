"""The prediction service: ``create_app(settings)`` builds it; the lifespan loads the model, never import.

Start-up: resolve ``models:/<name>@<alias>`` (or ``settings.model_uri``) in the registry, download and verify
the sha256 against the version's record, load the native .keras file with safe mode, build the fast runner,
warm it with the logged input example, open the prediction store; only then does ``/ready`` say ready.
A background task re-checks the alias every ``settings.poll_seconds``. Shutdown drains the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from config.layout import REFERENCE, ProjectLayout
from config.plan import Plan, load_plan
from config.settings import Settings
from serving.inputs import InputError
from serving.metrics import ServiceMetrics
from serving.predictor import Predictor, RegistrySource, load_served_model, parse_model_uri
from serving.service import Service
from serving.store.reader import PredictionReader
from serving.store.writer import PredictionWriter

log = logging.getLogger("lifecycle.serving")

PredictorFactory = Callable[[Settings, Plan], Predictor]
STORE_THREADS = 2


def default_predictor(settings: Settings, plan: Plan) -> Predictor:
    """A predictor following ``settings.model_uri`` or ``models:/<deploy.model_name>@<deploy.alias>``.

    The trained input range comes from the project's reference sample (``data/prepared/reference.npz``)
    when it matches the model, else from the model's own dataset meta.
    """
    from models.client import tracking_client

    uri = settings.model_uri or f"models:/{plan.deploy.model_name}@{plan.deploy.alias}"
    name, alias, version = parse_model_uri(uri)
    source = RegistrySource(
        tracking_client(settings),
        name,
        alias=alias,
        version=version,
        download_dir=settings.layout.serving_downloads,
    )
    loader = partial(
        load_served_model,
        backend=plan.deploy.backend,
        reference=_reference_features(settings.layout),
        range_tolerance=plan.deploy.range_tolerance,
    )
    return Predictor(source, loader, max_batch_size=plan.deploy.max_batch_size)


def _reference_features(layout: ProjectLayout) -> Any:
    from data.dataset import Dataset

    directory = layout.prepared_dir
    if not (directory / f"{REFERENCE}.npz").is_file():
        return None
    try:
        return Dataset.load(directory, REFERENCE).features
    except (OSError, ValueError, KeyError) as error:
        log.warning("reference sample unreadable, range from the model's meta: %s", error)
        return None


def create_app(
    settings: Settings, *, plan: Plan | None = None, predictor_factory: PredictorFactory | None = None
) -> FastAPI:
    """The FastAPI app. Nothing is loaded until the lifespan starts.

    Args:
        settings: URLs, paths, API key, limits, poll interval.
        plan: the plan (its ``deploy`` section); None to read ``settings.plan_path`` at start-up.
        predictor_factory: builds the predictor; None for ``default_predictor`` (the registry).

    Returns:
        The app; run it with uvicorn or ``fastapi.testclient.TestClient``.
    """
    from serving.routes import router

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chosen = plan if plan is not None else load_plan(settings.plan_path)
        factory = predictor_factory or default_predictor
        service = Service(
            settings=settings,
            predictor=factory(settings, chosen),
            writer=PredictionWriter(
                settings.resolved_store_url,
                transport=settings.store_writer,
                queue_size=settings.store_queue_size,
            ),
            reader=PredictionReader(settings.resolved_store_url),
            metrics=ServiceMetrics(),
            executor=ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="store"),
            max_rows=chosen.deploy.batch_max_rows,
            max_wait_ms=chosen.deploy.batch_wait_ms,
        )
        app.state.service = service
        service.metrics.track_store(service.writer)
        service.metrics.track_caller(service.caller)
        await service.reload()
        poller = asyncio.create_task(_poll(service, settings.poll_seconds))
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            service.close()

    app = FastAPI(
        title="dl-lifecycle prediction service",
        description="Serves the registry's champion model; every prediction is logged for monitoring.",
        version="1",
        lifespan=lifespan,
        # The routes themselves, not include_router: an included router re-matches every request through
        # its own wrapper, about 14 us a prediction (bench/serve.py).
        routes=list(router.routes),
    )
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


async def _poll(service: Service, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await service.reload()


async def _input_error(request: Request, error: Exception) -> JSONResponse:
    status = getattr(error, "status", 422)
    _count_error(request, status, "input")
    return JSONResponse({"detail": str(error)}, status_code=status)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    problems = []
    for problem in getattr(error, "errors", list)():
        where = ".".join(str(part) for part in problem.get("loc", ()))
        problems.append(f"{where}: {problem.get('msg', 'invalid')}")
    expected = {
        "/v1/predict": 'a JSON body {"instances": [...]}',
        "/v1/feedback": 'a JSON body {"request_id": "...", "label": ...}',
        "/v1/predict/image": "a multipart form with one or more image files in the field 'files'",
    }.get(request.url.path, "a body as documented at /docs")
    _count_error(request, 422, "schema")
    return JSONResponse({"detail": f"{'; '.join(problems)}; expected {expected}"}, status_code=422)


def _count_error(request: Request, status: int, kind: str) -> None:
    service = getattr(request.app.state, "service", None)
    if service is not None:
        service.metrics.observe_error(request.url.path, status, kind)


class BodyLimit:
    """Pure ASGI middleware: a body over ``limit`` bytes gets 413 (declared, or counted as it streams)."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.limit:
                return await self._too_large(send, f"declared {int(declared)} bytes")
            if b"transfer-encoding" not in headers:  # the server reads no more than declared: no counting
                return await self.app(scope, receive, send)
        received = 0
        started = False

        async def counting_receive() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._too_large(send, f"more than {self.limit} bytes streamed")

    async def _too_large(self, send: Any, received: str) -> None:
        body = f'{{"detail": "request body too large: {received}; expected at most {self.limit} bytes"}}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class _TooLarge(Exception):
    pass


def app_from_environment() -> FastAPI:
    """``create_app(Settings())``: the factory uvicorn imports (``--factory``), in every worker process."""
    settings = Settings()
    settings.apply_environment()
    return create_app(settings)


def serve(*, host: str, port: int, workers: int, log_level: str = "warning") -> None:
    """Run the service with uvicorn (uvloop + httptools) until SIGINT/SIGTERM, then drain and stop. Each
    worker builds its Settings from the environment (``app_from_environment``).

    Args:
        host: interface to bind (127.0.0.1 by default: put a load balancer or proxy in front for more).
        port: TCP port.
        workers: uvicorn worker processes (each loads the model; scale the store to PostgreSQL for several).
        log_level: uvicorn's log level.
    """
    import uvicorn

    uvicorn.run(
        "serving.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=False,  # every prediction is already logged to the store; access logs cost throughput
        timeout_graceful_shutdown=30,
    )
