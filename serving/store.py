"""The prediction store: every answered prediction and every feedback label, behind a SQLAlchemy URL.

Writes leave the request path through a bounded queue that one writer thread drains in batches (one
transaction per batch), itself or through a child process (the service's default, see ``PredictionStore``).
When the queue is full, recording blocks: the service slows down rather than dropping records. ``close()``
drains the queue before it returns, so a graceful shutdown loses nothing.
Default: SQLite in WAL mode under ``var/``; any SQLAlchemy URL (PostgreSQL for several replicas) works.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import itertools
import json
import logging
import marshal
import math
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import sqlalchemy as sa

if TYPE_CHECKING:
    import pandas as pd

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
WRITERS = ("thread", "process")
_REQUEST, _FEEDBACK = 1, 2  # the kinds of entry
_FRAME = struct.Struct("<QI")  # a batch sent to the writer process: sequence number, payload length
_CONFIRMATION = struct.Struct("<QQQ")  # its reply per batch: sequence number, rows written, rows given up on
_ROOT = Path(__file__).resolve().parents[1]
_PIPE_BYTES = 1 << 20  # Linux's default most for an unprivileged process (/proc/sys/fs/pipe-max-size)

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
    ``confidence[i]`` (None for regression); it is stored under ``request_ids[i]``, with ``latency_ms``
    (one for every row, or row ``i``'s in a list: several requests answered together make one entry).
    """

    request_ids: list[str]
    model_name: str
    model_version: str
    features: np.ndarray  # (instances, *input shape), raw source units
    predicted: np.ndarray | list[int] | list[float]
    confidence: np.ndarray | list[float] | None
    latency_ms: float | list[float]
    created_at: datetime | float  # aware UTC, or Unix seconds (cheaper on the hot path)


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

    Every record is encoded to one ``bytes`` entry by the thread that records it (see ``_encode_request``),
    so what waits in the queue is one small object per request, not the arrays and lists the request made.
    Where the entries are written:

    - ``writer="thread"`` (the default): a writer thread of this process.
    - ``writer="process"`` (the service): a writer thread hands batches of entries through a pipe to a child
      process that writes them (``_WriterProcess``). The child's SQL and row building then never hold this
      process's GIL: side by side in bench/serve.py's setup (two live services, alternating wrk runs) it
      gave 1.13-1.24x the requests/s at concurrency 8, 1.09x at 1 and at 32. The child
      ignores SIGINT/SIGTERM and writes everything it was sent, even when this process is killed; if the
      child dies, it is restarted and every batch it did not confirm is sent again (at least once).

    Args:
        url: a SQLAlchemy URL (``sqlite:///var/predictions.db``, ``postgresql+psycopg://...``).
        queue_size: most entries (one per ``record_request``: the requests one model call answered; one per
            other record) waiting to be written before recording blocks.
        writer: "thread" or "process", see above.
    """

    def __init__(self, url: str, *, queue_size: int = 10_000, writer: str = "thread"):
        if writer not in WRITERS:
            raise ValueError(f"Expected a store writer in {WRITERS}. Received: {writer!r}.")
        self.url = url
        self.engine = _engine(url)
        _metadata.create_all(self.engine)
        self._backlog = _Backlog(queue_size)
        self._rows = _RowWriter(self.engine)
        self._process = _WriterProcess(url) if writer == "process" else None
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="prediction-store-writer", daemon=True)
        self._writer.start()

    @property
    def multirow(self) -> bool:
        """Prediction rows as multi-row INSERTs (SQLite), else SQLAlchemy executemany (see ``_RowWriter``)."""
        return self._rows.multirow

    @multirow.setter
    def multirow(self, value: bool) -> None:
        self._rows.multirow = value

    @property
    def written(self) -> int:
        """Rows written (predictions and feedback)."""
        return self._rows.written + (self._process.written if self._process else 0)

    @property
    def failed(self) -> int:
        """Rows given up on: the database refused them, or their entry could not be read."""
        return self._rows.failed + (self._process.failed if self._process else 0)

    # --- writing -------------------------------------------------------------------------------------------

    def record_predictions(self, rows: list[PredictionRecord]) -> None:
        """Queue predictions for writing; blocks while the queue is full (never drops).

        Raises:
            ValueError: a record that can't be stored (features that aren't numbers); nothing of it is queued.
        """
        self._check_open("record_predictions")
        for row in rows:
            self._backlog.put(_encode_request(_as_request(row)))

    def record_request(self, answered: AnsweredRequest) -> None:
        """Queue every prediction of one answered request as a single entry; blocks while the queue is full.

        Raises:
            ValueError: an entry that can't be stored (not one id and one prediction per instance, features
                that aren't numbers); nothing of it is queued.
        """
        self._check_open("record_request")
        self._backlog.put(_encode_request(answered))

    def record_feedback(self, request_id: str, label: int | float) -> None:
        """Queue the true label of a prediction (ground truth that arrived later)."""
        self._check_open("record_feedback")
        self._backlog.put(marshal.dumps((_FEEDBACK, str(request_id), float(label), time.time())))

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise RuntimeError(f"Expected an open PredictionStore. Received: {method} after close().")

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
            if self._process is not None and self._process.stalled:
                self._backlog.put(threading.Event())  # wakes the writer thread, which restarts the child

    def close(self) -> None:
        """Write everything still queued, stop the writer (and its process) and release the database."""
        if self._closed:
            return
        self._closed = True
        self._backlog.close()
        self._writer.join()
        self.engine.dispose()

    def _write_loop(self) -> None:
        _lower_this_threads_priority()
        process = self._process
        while True:
            # Linger a moment to gather a batch: a transaction (or a pipe write) per request would cost more.
            batch = self._backlog.take(_BATCH, _LINGER_SECONDS)
            if not batch:
                break  # closed, and everything handed on
            entries = [entry for entry in batch if not isinstance(entry, threading.Event)]
            markers = [entry for entry in batch if isinstance(entry, threading.Event)]
            if process is not None:
                process.send(entries, markers)
                continue
            if entries:
                self._rows.write(entries)
            for marker in markers:
                marker.set()  # a flush() waiting for everything queued before it
        if process is not None:
            process.close()  # the child writes all it was sent, then exits

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
        import pandas as pd  # here, not at import: the writer process has no use for it

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


class _RowWriter:
    """Turns encoded entries into rows and writes them in one transaction per batch (in whichever thread or
    process writes). Counts what it wrote and what it gave up on."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.multirow = engine.dialect.name == "sqlite"  # see _insert
        dialect = engine.dialect
        self._bind_time = predictions_table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
        self.written = 0
        self.failed = 0

    def write(self, entries: list[bytes]) -> tuple[int, int]:
        """Write a batch of encoded entries; returns (rows written, rows given up on) for this batch."""
        written, failed = self.written, self.failed
        try:
            self._write(entries)
        except Exception:  # noqa: BLE001 - the writer must outlive a bad batch, or flush() hangs
            self.failed += len(entries)
            log.exception("prediction store: %d entries rejected by %s", len(entries), self.engine.url)
        return self.written - written, self.failed - failed

    def _write(self, entries: list[bytes]) -> None:
        rows: list[tuple[Any, ...]] = []  # in _PREDICTION_COLUMNS order
        feedback: list[dict[str, Any]] = []
        # Multi-row inserts go to the driver as they are: the datetime gets the dialect's own conversion here.
        bind_time = self._bind_time if self.multirow and self._bind_time else _same
        for entry in entries:
            try:
                decoded = marshal.loads(entry)
                if decoded[0] == _REQUEST:
                    rows += _request_rows(decoded, bind_time)
                else:
                    _, request_id, label, created = decoded
                    feedback.append({"request_id": request_id, "label": label, "created_at": _utc(created)})
            except Exception:  # noqa: BLE001 - one malformed entry must not cost the rest of the batch
                self.failed += 1
                log.exception("prediction store: an entry can't be stored")
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
        log.error("prediction store: %d rows could not be written to %s", len(rows), self.engine.url)

    def _insert(self, connection: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Insert prediction rows: on SQLite as multi-row INSERTs of the DB-API, else SQLAlchemy executemany.

        SQLite's driver releases and retakes the GIL around every statement it steps, so an executemany of
        one row per step handed the GIL back and forth with the event loop for every prediction (measured
        in bench/serve.py: it cost the service more than the model call). One statement per
        ``_ROWS_PER_STATEMENT`` rows makes that a few hand-offs per batch.
        """
        if not self.multirow:
            connection.execute(
                predictions_table.insert(), [dict(zip(_PREDICTION_COLUMNS, row, strict=True)) for row in rows]
            )
            return
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            connection.exec_driver_sql(
                _multirow_insert(len(chunk)), tuple(itertools.chain.from_iterable(chunk))
            )


class _WriterProcess:
    """This process's end of the writer child: batches of entries out through one pipe, confirmations back
    through another.

    A batch goes out as a frame: its sequence number, its length, then the ``marshal``-ed list of entries.
    The child confirms each frame once committed, with the rows it wrote and gave up on. Frames are kept
    until confirmed: if the child dies, the next send (or flush) starts a new one and sends them again.
    """

    _RESTART_PAUSE = 1.0  # seconds between restarts of a child that keeps dying

    def __init__(self, url: str):
        self.url = url
        self.written = 0
        self.failed = 0
        self.handed = 0  # entries written into the pipe (the child has them, even if this process dies now)
        self._lock = threading.Lock()
        self._unconfirmed: collections.deque[tuple[int, bytes]] = collections.deque()
        self._markers: list[tuple[int, threading.Event]] = []
        self._sent = 0  # sequence number of the last frame sent
        self._confirmed = 0
        self._closing = False
        self._started_at = 0.0
        self._start()

    def _start(self) -> None:
        pause = self._started_at + self._RESTART_PAUSE - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._started_at = time.monotonic()
        frames_in, frames_out = os.pipe()
        _widen_pipe(frames_out)
        confirmations_in, confirmations_out = os.pipe()
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(_ROOT), environment.get("PYTHONPATH")) if part
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, self.url, str(frames_in), str(confirmations_out)],
                pass_fds=(frames_in, confirmations_out),
                env=environment,
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(frames_in)
            os.close(confirmations_out)
        self._out = frames_out
        self._dead = False
        reader = threading.Thread(
            target=self._read_confirmations,
            args=(confirmations_in,),
            name="prediction-store-confirmations",
            daemon=True,
        )
        reader.start()
        self._reader = reader

    def send(self, entries: list[bytes], markers: list[threading.Event]) -> None:
        """Send a batch (blocks while the pipe is full: the child sets the pace); ``markers`` are set once
        the child has confirmed everything sent up to now."""
        if self.stalled:
            self._restart()
        if entries:
            payload = marshal.dumps(entries)
            with self._lock:
                self._sent += 1
                frame = _FRAME.pack(self._sent, len(payload)) + payload
                self._unconfirmed.append((self._sent, frame))
            try:
                _write_all(self._out, frame)
                self.handed += len(entries)
            except OSError:  # the child is gone: a new one gets every unconfirmed frame, this one included
                self._restart()
        with self._lock:
            for marker in markers:
                if self._confirmed >= self._sent:
                    marker.set()
                else:
                    self._markers.append((self._sent, marker))

    @property
    def stalled(self) -> bool:
        """The child died with batches unconfirmed: the next ``send`` restarts it and sends them again."""
        return self._dead or self.process.poll() is not None

    def close(self) -> None:
        """Close the pipe and wait for the child to write everything (restarting it if it died first)."""
        while True:
            if self.stalled:
                self._restart()
            self._closing = True
            self._close_out()
            self.process.wait()
            self._reader.join()
            with self._lock:
                if not self._unconfirmed:
                    return
            self._closing = False  # it died before confirming everything: again, with a new one

    def _close_out(self) -> None:
        if self._out >= 0:
            os.close(self._out)
            self._out = -1

    def _restart(self) -> None:
        with self._lock:
            frames = [frame for _, frame in self._unconfirmed]
        log.error(
            "prediction store: the writer process stopped (exit %s); starting another, resending %d batches",
            self.process.poll(), len(frames),
        )  # fmt: skip
        self._close_out()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join()
        self._start()
        for frame in frames:
            try:
                _write_all(self._out, frame)
            except OSError:
                self._dead = True  # died again: the next send or close tries once more
                return

    def _read_confirmations(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as confirmations:
            while True:
                confirmation = confirmations.read(_CONFIRMATION.size)
                if len(confirmation) < _CONFIRMATION.size:
                    break
                sequence, written, failed = _CONFIRMATION.unpack(confirmation)
                with self._lock:
                    self.written += written
                    self.failed += failed
                    self._confirmed = sequence
                    while self._unconfirmed and self._unconfirmed[0][0] <= sequence:
                        self._unconfirmed.popleft()
                    done = [marker for seq, marker in self._markers if seq <= sequence]
                    self._markers = [(seq, marker) for seq, marker in self._markers if seq > sequence]
                for marker in done:
                    marker.set()
        if not self._closing:
            self._dead = True


def _widen_pipe(fd: int) -> None:
    """Give the pipe ``_PIPE_BYTES`` of buffer (Linux; elsewhere, or refused, it keeps its default).

    At the default 64 KiB a batch (~100 KB at 5,000 requests/s) went through in many partial writes, each
    a release and re-take of the GIL the event loop holds: ~450 futex calls a second from the writer
    thread (strace). One write per batch is one hand-off.
    """
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _child_main(url: str, frames_fd: int, confirmations_fd: int) -> None:
    """The writer process: read frames until the parent closes the pipe (or dies), write each, confirm it.

    SIGINT and SIGTERM are ignored (see ``_CHILD_CODE``): the parent decides when it stops, closing the pipe.
    """
    with contextlib.suppress(OSError):
        os.nice(_WRITER_NICE)
    engine = _engine(url)
    writer = _RowWriter(engine)
    confirm = True
    with os.fdopen(frames_fd, "rb") as frames, os.fdopen(confirmations_fd, "wb", buffering=0) as out:
        while True:
            header = frames.read(_FRAME.size)
            if len(header) < _FRAME.size:
                break  # closed (or the parent died): everything whole has been written
            sequence, size = _FRAME.unpack(header)
            payload = frames.read(size)
            if len(payload) < size:
                break  # the parent died mid-frame
            written, failed = writer.write(marshal.loads(payload))
            if confirm:
                try:
                    out.write(_CONFIRMATION.pack(sequence, written, failed))
                except BrokenPipeError:
                    confirm = False  # the parent is gone: keep writing what it sent
    engine.dispose()


_CHILD_CODE = (  # signals first: a process-group SIGINT/SIGTERM during the imports must not kill it either
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, "
    "signal.SIG_IGN); from serving.store import _child_main; "
    "_child_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))"
)


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


def _encode_request(answered: AnsweredRequest) -> bytes:
    """One answered request as one ``bytes`` entry (``marshal`` of plain values; features as float32 bytes).

    Runs on the thread that answered (the service's event loop), so it is kept to a few C calls. An entry
    of plain values means the request's arrays and lists are freed at once, where they were made: kept alive
    in the queue they cost the event loop ~10 us a request (measured in-process, bench/serve.py's body).

    Raises:
        ValueError: not one id and one prediction per instance, or features that aren't numbers.
    """
    features = answered.features
    if features.dtype != np.float32 or not features.flags.c_contiguous:
        features = np.ascontiguousarray(features, dtype="float32")
    count = len(features)
    ids, predicted, confidence = answered.request_ids, answered.predicted, answered.confidence
    if len(ids) != count or len(predicted) != count or (confidence is not None and len(confidence) != count):
        raise ValueError(
            f"Expected one request id, prediction and confidence per instance ({count}). Received: "
            f"{len(ids)} ids, {len(predicted)} predictions, "
            f"{'no' if confidence is None else len(confidence)} confidences."
        )
    created = answered.created_at
    latency = answered.latency_ms
    if isinstance(latency, list):
        if len(latency) != count:
            raise ValueError(f"Expected one latency per instance ({count}). Received: {len(latency)}.")
    else:
        latency = float(latency)
    return marshal.dumps(
        (
            _REQUEST,
            [str(request_id) for request_id in ids] if count > 1 else [str(ids[0])],
            str(answered.model_name),
            str(answered.model_version),
            features.shape[1:],
            features.tobytes(),
            *_plain(predicted),
            None if confidence is None else _plain(confidence)[1],
            latency,
            created if isinstance(created, float) else created.timestamp(),
        )
    )


def _plain(values: np.ndarray | list[Any]) -> tuple[bool, list[Any]]:
    """(whether they are whole numbers, the values as a list of Python numbers)."""
    if type(values) is list and len(values) == 1 and type(values[0]) in (int, float):
        return type(values[0]) is int, values  # one instance's answer (format_outputs' common case)
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "iub", values.tolist()
    return bool(values) and isinstance(values[0], int | np.integer), [
        value.item() if isinstance(value, np.generic) else value for value in values
    ]


def _request_rows(decoded: tuple[Any, ...], bind_time: Callable[[datetime], Any]) -> list[tuple[Any, ...]]:
    """One row per instance of a decoded request entry, in ``_PREDICTION_COLUMNS`` order."""
    _, ids, name, version, shape, blob, classes, predicted, confidence, latency, created = decoded
    count = len(ids)
    size = len(blob) // count
    blobs = [blob] if count == 1 else [blob[i * size : (i + 1) * size] for i in range(count)]
    class_ids: Iterable[int | None]
    values: Iterable[float | None]
    if classes:
        class_ids, values = [int(value) for value in predicted], itertools.repeat(None)
    else:
        class_ids, values = itertools.repeat(None), [float(value) for value in predicted]
    probabilities: Iterable[float | None] = (
        itertools.repeat(None)
        if confidence is None
        else [None if value != value else value for value in confidence]  # NaN: NULL
    )
    latencies = latency if type(latency) is list else itertools.repeat(latency)
    created_at = bind_time(_utc(created))
    shape_text = _shape_text(tuple(shape))
    return [
        (request_id, created_at, name, version, features, shape_text, class_id, value, probability, spent)
        for request_id, features, class_id, value, probability, spent in zip(
            ids, blobs, class_ids, values, probabilities, latencies, strict=False
        )
    ]


def _utc(timestamp: float) -> datetime:
    """Unix seconds as a naive UTC datetime (how the tables store time)."""
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None)


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
