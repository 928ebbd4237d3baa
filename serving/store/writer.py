"""``PredictionWriter``: the service's way into the store.

Records are encoded to one ``bytes`` entry on the thread that records them (``records``) and queued; one
writer thread takes them in batches and hands each batch to the transport the setting names
(``LIFECYCLE_STORE_WRITER``):

- ``"thread"``: the writer thread writes the rows itself (``rows.RowWriter``), one transaction per batch.
- ``"process"``: a child process writes them (``process.ProcessTransport``), off this process's GIL.

When the queue is full, recording blocks: the service slows down rather than dropping records. ``close()``
writes everything queued before it returns, so a graceful shutdown loses nothing.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from serving.store.records import (
    AnsweredRequest,
    PredictionRecord,
    encode_feedback,
    encode_record,
    encode_request,
)
from serving.store.rows import RowWriter
from serving.store.schema import open_engine
from serving.tuning import BATCH_ENTRIES, LINGER_SECONDS, WRITER_NICE

log = logging.getLogger("lifecycle.serving.store")

TRANSPORTS = ("thread", "process")
_CLOSE = object()


class Transport(Protocol):
    """Where the writer thread's batches go."""

    @property
    def written(self) -> int: ...  # rows written

    @property
    def failed(self) -> int: ...  # rows given up on

    @property
    def stalled(self) -> bool: ...

    def send(self, entries: list[bytes], markers: list[threading.Event]) -> None:
        """Write (or hand on) ``entries``; set ``markers`` once everything sent so far is written."""

    def close(self) -> None: ...


class ThreadTransport:
    """The ``"thread"`` transport: the writer thread writes each batch in one transaction."""

    def __init__(self, url: str):
        self.rows = RowWriter(open_engine(url))

    @property
    def stalled(self) -> bool:
        return False

    @property
    def written(self) -> int:
        return self.rows.written

    @property
    def failed(self) -> int:
        return self.rows.failed

    def send(self, entries: list[bytes], markers: list[threading.Event]) -> None:
        if entries:
            self.rows.write(entries)
        for marker in markers:
            marker.set()

    def close(self) -> None:
        self.rows.engine.dispose()


class PredictionWriter:
    """Queues predictions and feedback for writing; never drops one.

    Args:
        url: the store's SQLAlchemy URL (``sqlite:///var/predictions.db``, ``postgresql+psycopg://...``).
        transport: ``"thread"`` or ``"process"`` (see the module docstring).
        queue_size: most entries waiting to be written before recording blocks.
    """

    def __init__(self, url: str, *, transport: str = "thread", queue_size: int = 10_000):
        if transport not in TRANSPORTS:
            raise ValueError(f"Expected a store writer in {TRANSPORTS}. Received: {transport!r}.")
        from serving.store.process import ProcessTransport

        self.url = url
        self.queue_size = queue_size
        self._queue: queue.Queue[object] = queue.Queue(queue_size)
        self._transport: Transport = ThreadTransport(url) if transport == "thread" else ProcessTransport(url)
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="prediction-store-writer", daemon=True)
        self._thread.start()

    # --- recording ------------------------------------------------------------------------------------------

    def record_request(self, answered: AnsweredRequest) -> None:
        """Queue the predictions of the requests one model call answered, as one entry.

        Raises:
            ValueError: an entry that can't be stored (see ``records.encode_request``); nothing is queued.
        """
        self.put(encode_request(answered))

    def record_predictions(self, records: Iterable[PredictionRecord]) -> None:
        """Queue predictions, one entry each; all are encoded first, so a record that can't be stored raises
        ValueError with nothing queued."""
        for entry in [encode_record(record) for record in records]:
            self.put(entry)

    def record_feedback(self, request_id: str, label: int | float) -> None:
        """Queue the true label of a prediction (ground truth that arrived later)."""
        self.put(encode_feedback(request_id, float(label)))

    def put(self, entry: bytes) -> None:
        """Queue one encoded entry; blocks while the queue is full (the service slows, nothing is dropped)."""
        if self._closed:
            raise RuntimeError("Expected an open PredictionWriter. Received: a record after close().")
        self._queue.put(entry)

    # --- state ----------------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Entries queued and not yet taken by the writer thread."""
        return self._queue.qsize()

    @property
    def written(self) -> int:
        """Rows written (predictions and feedback)."""
        return self._transport.written

    @property
    def failed(self) -> int:
        """Rows given up on: the database refused them, or their entry could not be read."""
        return self._transport.failed

    @property
    def process_id(self) -> int | None:
        """The writer process's pid (``"process"`` transport), else None."""
        return getattr(self._transport, "pid", None)

    @property
    def handed(self) -> int:
        """Entries in the writer process's hands (written into its pipe); for the ``"thread"`` transport,
        the rows written."""
        return getattr(self._transport, "handed", self.written)

    # --- draining -------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Block until every entry queued so far is written (or given up on, see ``failed``)."""
        if self._closed:
            return
        marker = threading.Event()
        self._queue.put(marker)
        while not marker.wait(1.0):
            if not self._thread.is_alive():
                raise RuntimeError(
                    "Expected the prediction store's writer thread alive. Received: it stopped."
                )
            if self._transport.stalled:
                self._queue.put(threading.Event())  # wakes the writer thread, which restarts the child

    def close(self) -> None:
        """Write everything still queued, stop the writer (and its process), release the database."""
        if self._closed:
            return
        self._closed = True
        if (
            self._thread.is_alive()
        ):  # it stops itself only on an error it logged (a writer process that can't run)
            self._queue.put(_CLOSE)
            self._thread.join()

    def _write_loop(self) -> None:
        _lower_this_threads_priority()
        closing = False
        while not closing:
            batch = [self._queue.get()]
            if isinstance(batch[0], bytes):  # a record: let the batch gather (not for a flush or close)
                time.sleep(LINGER_SECONDS)
            while len(batch) < BATCH_ENTRIES:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            closing = any(item is _CLOSE for item in batch)
            entries = [item for item in batch if isinstance(item, bytes)]
            markers = [item for item in batch if isinstance(item, threading.Event)]
            self._transport.send(entries, markers)
        self._transport.close()  # a process transport: the child writes all it was sent, then exits


def _lower_this_threads_priority() -> None:
    """Run the calling thread at nice ``WRITER_NICE`` (Linux: nice values are per thread).

    The writer's SQLite work runs outside the GIL, on a core the event loop, the kernel's network work and the
    clients also need; at normal priority it took their CPU in bursts. On an idle machine it changes nothing;
    under overload the queue fills and recording blocks.
    """
    if not sys.platform.startswith("linux"):  # elsewhere PRIO_PROCESS with a thread id means a process
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
    except OSError as error:  # a sandbox that forbids it: run at normal priority
        log.warning("prediction store: can't lower the writer's priority: %s", error)
