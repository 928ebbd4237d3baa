"""The prediction store: every answered prediction and every feedback label, behind a SQLAlchemy URL.

Writes leave the request path through a bounded queue that one writer thread drains in batches (one
transaction per batch). When the queue is full, ``record_predictions`` blocks: the service slows down rather
than dropping records. ``close()`` drains the queue before it returns, so a graceful shutdown loses nothing.
Default: SQLite in WAL mode under ``var/``; any SQLAlchemy URL (PostgreSQL for several replicas) works.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa

log = logging.getLogger("lifecycle.serving.store")

WINDOW_COLUMNS = ["request_id", "created_at", "model_version", "features", "predicted", "confidence", "label"]
_BATCH = 1000
_ROWS_PER_STATEMENT = 20  # 200 bound parameters; 10-20 rows measured fastest (5 us a row, 9 for one)
_WRITER_NICE = 15  # see _lower_this_threads_priority
_SQLITE_CACHE_KIB = 32_768  # page cache per connection (SQLite's default is 2 MB)
_PREDICTION_COLUMNS = (
    "request_id", "created_at", "model_name", "model_version", "features", "shape", "predicted_class",
    "predicted_value", "confidence", "latency_ms",
)  # fmt: skip
_LINGER_SECONDS = 0.05

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


class AnsweredRequest(NamedTuple):
    """One answered request, queued as one entry however many instances it had (the service's hot path; a
    named tuple because it is built on every request).

    Row ``i`` of ``features`` was answered with ``predicted[i]`` (class id, or the value for regression) and
    ``confidence[i]`` (None for regression); it is stored under ``request_ids[i]``.
    """

    request_ids: list[str]
    model_name: str
    model_version: str
    features: np.ndarray  # (instances, *input shape), raw source units
    predicted: np.ndarray
    confidence: np.ndarray | None
    latency_ms: float
    created_at: datetime  # aware UTC


class _Backlog:
    """The bounded FIFO between the threads that record and the one writer thread.

    ``put`` is a deque append (atomic under the GIL: no lock, no wake-up) while the writer is busy or
    lingering; ``queue.Queue`` took a lock and notified a condition on every put, which the event loop paid
    per request. Past ``size`` entries ``put`` waits for room: producers slow down, nothing is dropped.
    """

    def __init__(self, size: int):
        self.size = size
        self.items: collections.deque[Any] = collections.deque()
        self._room = threading.Condition()
        self._wake = threading.Event()
        self._idle = False
        self.closed = False

    def put(self, item: Any) -> None:
        items = self.items
        if len(items) >= self.size:
            with self._room:
                while len(items) >= self.size and not self.closed:
                    self._room.wait(0.5)
        items.append(item)
        if self._idle:  # read after the append: see take()
            self._wake.set()

    def take(self, limit: int, linger: float) -> list[Any]:
        """Up to ``limit`` entries, oldest first; waits while there are none, then ``linger`` seconds more
        for a batch to gather. Returns [] only once closed and empty."""
        items = self.items
        while not items:
            if self.closed:
                return []
            self._idle = True  # set before looking again, so a put either is seen here or wakes the wait
            if not items:
                self._wake.wait(1.0)
            self._wake.clear()
            self._idle = False
        if len(items) < limit and not self.closed:
            time.sleep(linger)
        taken = [items.popleft() for _ in range(min(limit, len(items)))]
        with self._room:
            self._room.notify_all()
        return taken

    def close(self) -> None:
        self.closed = True
        self._wake.set()
        with self._room:
            self._room.notify_all()


class PredictionStore:
    """Batched, non-dropping writer + readers for predictions and feedback.

    Args:
        url: a SQLAlchemy URL (``sqlite:///var/predictions.db``, ``postgresql+psycopg://...``).
        queue_size: most entries (one per answered request, or per record) waiting to be written before
            recording blocks.
    """

    def __init__(self, url: str, *, queue_size: int = 10_000):
        self.url = url
        self.engine = _engine(url)
        _metadata.create_all(self.engine)
        self._backlog = _Backlog(queue_size)
        self.multirow = self.engine.dialect.name == "sqlite"  # see _insert
        dialect = self.engine.dialect
        self._bind_time = (
            predictions_table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect) or _same
        )
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
            self._backlog.put(("prediction", row))

    def record_request(self, answered: AnsweredRequest) -> None:
        """Queue every prediction of one answered request as a single entry; blocks while the queue is full.

        The writer thread turns it into rows, so the request path pays one queue put per request.
        """
        if self._closed:
            raise RuntimeError("Expected an open PredictionStore. Received: record_request after close().")
        self._backlog.put(("request", answered))

    def record_feedback(self, request_id: str, label: int | float) -> None:
        """Queue the true label of a prediction (ground truth that arrived later)."""
        if self._closed:
            raise RuntimeError("Expected an open PredictionStore. Received: record_feedback after close().")
        self._backlog.put(("feedback", (request_id, float(label), datetime.now(UTC))))

    @property
    def pending(self) -> int:
        """Entries queued and not yet taken by the writer."""
        return len(self._backlog.items)

    def flush(self) -> None:
        """Block until every record queued so far is written (or given up on, see ``failed``)."""
        if self._closed:
            return
        marker = threading.Event()
        self._backlog.put(marker)
        while not marker.wait(1.0):
            if not self._writer.is_alive():
                raise RuntimeError(
                    "Expected the prediction store's writer thread alive. Received: it stopped."
                )

    def close(self) -> None:
        """Write everything still queued, stop the writer and release the database."""
        if self._closed:
            return
        self._closed = True
        self._backlog.close()
        self._writer.join()
        self.engine.dispose()

    def _write_loop(self) -> None:
        _lower_this_threads_priority()
        while True:
            # Linger a moment to gather a batch: a transaction per request would cost the service more (its
            # Python side holds the GIL the event loop needs) than the whole prediction.
            batch = self._backlog.take(_BATCH, _LINGER_SECONDS)
            if not batch:
                return  # closed, and everything written
            records = [entry for entry in batch if not isinstance(entry, threading.Event)]
            if records:
                try:
                    self._write(records)
                except Exception:  # noqa: BLE001 - the writer must outlive a bad batch, or flush() hangs
                    self.failed += len(records)
                    log.exception("prediction store: %d records rejected by %s", len(records), self.url)
            for entry in batch:
                if isinstance(entry, threading.Event):
                    entry.set()  # a flush() waiting for everything queued before it

    def _write(self, records: list[tuple[str, Any]]) -> None:
        rows: list[tuple[Any, ...]] = []  # in _PREDICTION_COLUMNS order
        # Multi-row inserts go to the driver as they are: the datetime gets the dialect's own conversion here.
        bind_time = self._bind_time if self.multirow else _same
        for kind, entry in records:
            try:
                if kind == "request":
                    rows += _request_rows(entry, bind_time)
                elif kind == "prediction":
                    rows += _request_rows(_as_request(entry), bind_time)
            except Exception:  # noqa: BLE001 - one malformed entry must not cost the rest of the batch
                self.failed += len(entry.request_ids) if kind == "request" else 1
                log.exception("prediction store: a %s entry can't be stored", kind)
        feedback = [
            {"request_id": row[0], "label": row[1], "created_at": _naive_utc(row[2])}
            for kind, row in records
            if kind == "feedback"
        ]
        for attempt in range(8):  # a busy SQLite or a dropped connection: back off and retry
            try:
                with self.engine.begin() as connection:
                    if rows:
                        self._insert(connection, rows)
                    if feedback:
                        connection.execute(feedback_table.insert(), feedback)
                self.written += len(rows) + len(feedback)
                return
            except sa.exc.OperationalError as error:
                log.warning("prediction store write failed (attempt %d): %s", attempt + 1, error)
                time.sleep(min(0.05 * 2**attempt, 2.0))
        self.failed += len(rows) + len(feedback)
        log.error("prediction store: %d records could not be written to %s", len(records), self.url)

    def _insert(self, connection: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Insert prediction rows: on SQLite as multi-row INSERTs of the DB-API, else SQLAlchemy executemany.

        SQLite's driver releases and retakes the GIL around every statement it steps, so an executemany of
        one row per step handed the GIL back and forth with the event loop for every prediction (measured
        in bench/serve.py: it cost the service more than the model call). One statement per
        ``_ROWS_PER_STATEMENT`` rows makes that a few hand-offs per batch.
        """
        if not self.multirow:
            connection.execute(predictions_table.insert(), [self._as_params(row) for row in rows])
            return
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            connection.exec_driver_sql(
                _multirow_insert(len(chunk)), tuple(itertools.chain.from_iterable(chunk))
            )

    @staticmethod
    def _as_params(row: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(_PREDICTION_COLUMNS, row, strict=True))

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
        cursor.execute(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
        cursor.close()

    return engine


def _lower_this_threads_priority() -> None:
    """Run the calling thread at nice ``_WRITER_NICE`` (Linux: nice values are per thread).

    The writer's SQLite work runs outside the GIL, on a core the event loop, the kernel's network work and
    the clients also need; at normal priority it took their CPU in bursts. Side by side (bench/serve.py's
    setup, two services, alternating wrk runs) a niced writer gave 1.02x the requests/s at concurrency 8,
    1.12x at 32 and 1.04x at 1. On an idle machine it changes nothing; under overload the backlog fills and
    recording blocks.
    """
    if not sys.platform.startswith("linux"):  # elsewhere PRIO_PROCESS with a thread id means a process
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _WRITER_NICE)
    except OSError as error:  # a sandbox that forbids it: run at normal priority
        log.warning("prediction store: can't lower the writer's priority: %s", error)


def _same(value: Any) -> Any:
    return value


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _as_request(record: PredictionRecord) -> AnsweredRequest:
    classification = isinstance(record.predicted, int | np.integer)
    features = np.asarray(record.features)
    return AnsweredRequest(
        request_ids=[record.request_id],
        model_name=record.model_name,
        model_version=str(record.model_version),
        features=features[None],
        predicted=np.asarray([record.predicted], dtype="int64" if classification else "float64"),
        confidence=np.asarray([record.confidence], dtype="float64"),
        latency_ms=float(record.latency_ms),
        created_at=record.created_at,
    )


def _request_rows(answered: AnsweredRequest, bind_time: Callable[[datetime], Any]) -> list[tuple[Any, ...]]:
    """One row per instance, in ``_PREDICTION_COLUMNS`` order; features as float32 bytes.

    Runs on the writer thread, whose Python work holds the GIL the event loop needs: kept lean.
    """
    features = answered.features
    if features.dtype != np.float32 or not features.flags.c_contiguous:
        features = np.ascontiguousarray(features, dtype="float32")
    count = len(features)
    ids, predicted = answered.request_ids, answered.predicted
    if len(ids) != count or len(predicted) != count:
        raise ValueError(
            f"Expected one request id and one prediction per instance ({count}). "
            f"Received: {len(ids)} ids, {len(predicted)} predictions."
        )
    blob = features.tobytes()
    if count == 1:
        blobs = [blob]
    else:
        size = len(blob) // count
        blobs = [blob[i * size : (i + 1) * size] for i in range(count)]
    classes: Iterable[int | None]
    values: Iterable[float | None]
    if predicted.dtype.kind in "iu":
        classes, values = predicted.tolist(), itertools.repeat(None)
    else:
        classes, values = itertools.repeat(None), predicted.astype("float64").tolist()
    confidence: Iterable[float | None] = (
        itertools.repeat(None)
        if answered.confidence is None
        else [None if value != value else value for value in answered.confidence.tolist()]  # NaN: NULL
    )
    created_at = bind_time(_naive_utc(answered.created_at))
    name, version, latency = answered.model_name, answered.model_version, float(answered.latency_ms)
    shape = _shape_text(features.shape[1:])
    return [
        (request_id, created_at, name, version, features_bytes, shape, class_id, value, probability, latency)
        for request_id, features_bytes, class_id, value, probability in zip(
            ids, blobs, classes, values, confidence, strict=False
        )
    ]


@functools.cache
def _shape_text(shape: tuple[int, ...]) -> str:
    return json.dumps(list(shape))


@functools.cache
def _multirow_insert(rows: int) -> str:
    one = "(" + ", ".join("?" * len(_PREDICTION_COLUMNS)) + ")"
    return f"INSERT INTO {predictions_table.name} ({', '.join(_PREDICTION_COLUMNS)}) VALUES " + ", ".join(
        [one] * rows
    )


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
