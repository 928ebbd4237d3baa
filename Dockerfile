# The prediction service: `lifecycle serve` on the registry's champion.
#
#   docker build -t dl-lifecycle-serve .
#   docker run -p 8000:8000 \
#     -e LIFECYCLE_TRACKING_URI=postgresql+psycopg://mlflow@db/mlflow \
#     -e LIFECYCLE_STORE_URL=postgresql+psycopg://serving@db/predictions \
#     -e LIFECYCLE_API_KEY=... dl-lifecycle-serve
#
# The image holds code and the pinned stack only: the model comes from the registry at start-up (hash-checked),
# so one image serves every version. Artifacts must be reachable from the container (S3, or a mounted folder at
# the same path as in the registry). The PostgreSQL driver (psycopg) is in the lock.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=2 \
    DO_NOT_TRACK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    LIFECYCLE_ROOT=/app \
    LIFECYCLE_VAR_DIR=/app/var \
    LIFECYCLE_HOST=0.0.0.0 \
    LIFECYCLE_PORT=8000

WORKDIR /app
# git: MLflow and the lineage code ask it for the commit (absent in the image: recorded as "unknown").
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*

COPY requirements.lock .
RUN pip install --no-cache-dir "uv==0.13.9" \
    && uv pip install --system --no-cache -r requirements.lock

COPY pyproject.toml README.md plan.yaml ./
COPY config config
COPY pipeline pipeline
COPY data data
COPY models models
COPY serving serving
COPY monitoring monitoring
RUN uv pip install --system --no-cache --no-deps . \
    && useradd --create-home --uid 10001 serving \
    && mkdir -p /app/var && chown serving /app/var
USER serving

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s CMD \
    python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready').status != 200)"
# One worker per container: scale with replicas behind a load balancer (each replica follows the alias).
CMD ["lifecycle", "serve", "--workers", "1"]
