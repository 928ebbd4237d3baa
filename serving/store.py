"""The prediction store: every answered prediction and every feedback label, behind a SQLAlchemy URL.

Writes leave the request path through a bounded queue that one writer thread drains in batches (one
transaction per batch). When the queue is full, ``record_predictions`` blocks: the service slows down rather
than dropping records. ``close()`` drains the queue before it returns, so a graceful shutdown loses nothing.
Default: SQLite in WAL mode under ``var/``; any SQLAlchemy URL (PostgreSQL for several replicas) works.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

log = logging.getLogger("lifecycle.serving.store")

WINDOW_COLUMNS = ["request_id", "created_at", "model_version", "features", "predicted", "confidence", "label"]
_BATCH = 1000
_LINGER_SECONDS = 0.05
_STOP = object()

_metadata = sa.MetaData()
predictions_table = sa.Table(
    "predictions",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(80), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),  # UTC, stored naive
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("features", sa.LargeBinary, nullable=False),  # float32 bytes of the raw instance
    sa.Column("shape", sa.String(64), nullable=False),  # JSON list
    sa.Column("predicted_class", sa.Integer, nullable=True),
    sa.Column("predicted_value", sa.Float, nullable=True),
    sa.Column("confidence", sa.Float, nullable=True),  # NULL for regression (SQL has no NaN)
    sa.Column("latency_ms", sa.Float, nullable=False),
)
feedback_table = sa.Table(
    "feedback",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(80), nullable=False, index=True),
    sa.Column("label", sa.Float, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)


@dataclass(frozen=True)
class PredictionRecord:
    """One answered prediction (one instance of a request)."""

    request_id: str
    model_version: str
    features: np.ndarray  # the raw input instance, source units
    predicted: int | float  # class id, or the value for regression
    confidence: float  # probability of the predicted class (NaN for regression)
    latency_ms: float = 0.0
    model_name: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


# (request_id, model_name, model_version, features, predicted, confidence, latency_ms, created_at)
PredictionRow = tuple[str, str, str, np.ndarray, int | float, float, float, datetime]


class PredictionStore:
    """Batched, non-dropping writer + readers for predictions and feedback.

    Args:
        url: a SQLAlchemy URL (``sqlite:///var/predictions.db``, ``postgresql+psycopg://...``).
        queue_size: most records waiting to be written before writers block.
    """

    def __init__(self, url: str, *, queue_size: int = 10_000):
        self.url = url
        self.engine = _engine(url)
        _metadata.create_all(self.engine)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self.written = 0
        self.failed = 0
        self._writer = threading.Thread(target=self._write_loop, name="prediction-store-writer", daemon=True)
        self._writer.start()

    # --- writing -------------------------------------------------------------------------------------------

    def record_predictions(self, rows: list[PredictionRecord]) -> None:
        """Queue predictions for writing; blocks while the queue is full (never drops)."""
        if self._closed:
            raise RuntimeError(
                "Expected an open PredictionStore. Received: record_predictions after close()."
            )
        for row in rows:
            self._queue.put(("prediction", row))

    def record_rows(self, rows: list[PredictionRow]) -> None:
        """Queue predictions as plain tuples, the service's hot path (no dataclass per instance).

        Args:
            rows: ``(request_id, model_name, model_version, features, predicted, confidence, latency_ms,
                created_at)`` each, with ``created_at`` an aware UTC datetime; stored exactly as
                ``record_predictions`` stores the same fields.
        """
        if self._closed:
            raise RuntimeError("Expected an open PredictionStore. Received: record_rows after close().")
        put = self._queue.put
        for row in rows:
            put(("row", row))

    def record_feedback(self, request_id: str, label: int | float) -> None:
        """Queue the true label of a prediction (ground truth that arrived later)."""
        if self._closed:
            raise RuntimeError("Expected an open PredictionStore. Received: record_feedback after close().")
        self._queue.put(("feedback", (request_id, float(label), datetime.now(UTC))))

    @property
    def pending(self) -> int:
        """Records queued and not yet written."""
        return self._queue.qsize()

    def flush(self) -> None:
        """Block until every record queued so far is written."""
        self._queue.join()

    def close(self) -> None:
        """Write everything still queued, stop the writer and release the database."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        self.engine.dispose()

    def _write_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Linger a moment to gather a batch: one transaction per request would cost the service more
            # (Python-side SQLAlchemy work holds the GIL) than the whole prediction. Sleep rather than wait
            # on the queue: a waiting writer woke, and took the GIL from the event loop, on every record.
            if batch[0] is not _STOP and self._queue.qsize() < _BATCH:
                time.sleep(_LINGER_SECONDS)
            while len(batch) < _BATCH and batch[-1] is not _STOP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [entry for entry in batch if entry is not _STOP]
            if records:
                try:
                    self._write(records)
                except Exception:  # noqa: BLE001 - the writer must outlive a bad batch, or flush() hangs
                    self.failed += len(records)
                    log.exception("prediction store: %d records rejected by %s", len(records), self.url)
            for _ in batch:
                self._queue.task_done()
            if len(records) < len(batch):
                return

    def _write(self, records: list[tuple[str, Any]]) -> None:
        predictions = [
            _prediction_row(row) if kind == "prediction" else _tuple_row(row)
            for kind, row in records
            if kind != "feedback"
        ]
        feedback = [
            {"request_id": row[0], "label": row[1], "created_at": _naive_utc(row[2])}
            for kind, row in records
            if kind == "feedback"
        ]
        for attempt in range(8):  # a busy SQLite or a dropped connection: back off and retry
            try:
                with self.engine.begin() as connection:
                    if predictions:
                        connection.execute(predictions_table.insert(), predictions)
                    if feedback:
                        connection.execute(feedback_table.insert(), feedback)
                self.written += len(records)
                return
            except sa.exc.OperationalError as error:
                log.warning("prediction store write failed (attempt %d): %s", attempt + 1, error)
                time.sleep(min(0.05 * 2**attempt, 2.0))
        self.failed += len(records)
        log.error("prediction store: %d records could not be written to %s", len(records), self.url)

    # --- reading -------------------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of predictions written."""
        with self.engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(predictions_table)).scalar_one()
            )

    def read_window(self, limit: int, *, since: datetime | None = None) -> pd.DataFrame:
        """The latest ``limit`` predictions (optionally only those at or after ``since``), oldest first.

        Args:
            limit: most rows returned.
            since: only predictions created at or after this time (aware, or naive UTC).

        Returns:
            Columns request_id, created_at (UTC), model_version, features (np.ndarray per row), predicted,
            confidence, label (the latest feedback, NaN without), latency_ms.
        """
        query = sa.select(predictions_table).order_by(predictions_table.c.id.desc()).limit(int(limit))
        if since is not None:
            query = query.where(predictions_table.c.created_at >= _naive_utc(since))
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()[::-1]
            labels = self._labels(connection, [row["request_id"] for row in rows])
        frame = pd.DataFrame(
            {
                "request_id": [row["request_id"] for row in rows],
                "created_at": pd.to_datetime([row["created_at"] for row in rows], utc=True),
                "model_version": [row["model_version"] for row in rows],
                "features": [_features(row) for row in rows],
                "predicted": _predicted([dict(row) for row in rows]),
                "confidence": np.array(
                    [np.nan if row["confidence"] is None else row["confidence"] for row in rows],
                    dtype="float64",
                ),
                "label": np.array([labels.get(row["request_id"], np.nan) for row in rows], dtype="float64"),
                "latency_ms": np.array([row["latency_ms"] for row in rows], dtype="float64"),
            }
        )
        return frame

    def find(self, request_id: str) -> dict[str, Any] | None:
        """One prediction by request id (the latest if sent twice), with its feedback; None if unknown."""
        query = (
            sa.select(predictions_table)
            .where(predictions_table.c.request_id == request_id)
            .order_by(predictions_table.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
            if row is None:
                return None
            label = self._labels(connection, [request_id]).get(request_id)
        found = dict(row)
        found["features"] = _features(row)
        found["created_at"] = found["created_at"].replace(tzinfo=UTC)
        found["label"] = label
        found["confidence"] = math.nan if found["confidence"] is None else found["confidence"]
        return found

    @staticmethod
    def _labels(connection: Any, request_ids: list[str]) -> dict[str, float]:
        labels: dict[str, float] = {}
        unique = list(dict.fromkeys(request_ids))
        for start in range(0, len(unique), 500):  # bounded IN lists
            chunk = unique[start : start + 500]
            query = (
                sa.select(feedback_table.c.request_id, feedback_table.c.label)
                .where(feedback_table.c.request_id.in_(chunk))
                .order_by(feedback_table.c.id)
            )
            labels.update({rid: float(label) for rid, label in connection.execute(query)})  # latest wins
        return labels


def _engine(url: str) -> sa.Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _prediction_row(record: PredictionRecord) -> dict[str, Any]:
    return _tuple_row(
        (
            record.request_id,
            record.model_name,
            record.model_version,
            record.features,
            record.predicted,
            record.confidence,
            record.latency_ms,
            record.created_at,
        )
    )


def _tuple_row(row: PredictionRow) -> dict[str, Any]:
    request_id, model_name, model_version, features, predicted, confidence, latency_ms, created_at = row
    features = np.ascontiguousarray(features, dtype="float32")
    classification = isinstance(predicted, int | np.integer)
    return {
        "request_id": request_id,
        "created_at": _naive_utc(created_at),
        "model_name": model_name,
        "model_version": str(model_version),
        "features": features.tobytes(),
        "shape": json.dumps(list(features.shape)),
        "predicted_class": int(predicted) if classification else None,
        "predicted_value": None if classification else float(predicted),
        "confidence": None if math.isnan(confidence) else float(confidence),
        "latency_ms": float(latency_ms),
    }


def _features(row: Any) -> np.ndarray:
    return np.frombuffer(row["features"], dtype="float32").reshape(json.loads(row["shape"]))


def _predicted(rows: list[dict[str, Any]]) -> np.ndarray:
    if rows and all(row["predicted_class"] is not None for row in rows):
        return np.array([row["predicted_class"] for row in rows], dtype="int64")
    return np.array(
        [
            row["predicted_class"] if row["predicted_value"] is None else row["predicted_value"]
            for row in rows
        ],
        dtype="float64",
    )
