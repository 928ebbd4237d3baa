"""Entries into rows, written in one transaction per batch, by whichever thread or process writes."""

from __future__ import annotations

import functools
import itertools
import logging
import time
from typing import Any

import sqlalchemy as sa

from serving.store.records import REQUEST, decode, request_rows, utc
from serving.store.schema import PREDICTION_COLUMNS, feedback_table, predictions_table
from serving.tuning import ROWS_PER_STATEMENT

log = logging.getLogger("lifecycle.serving.store")

_RETRIES = 8  # a busy SQLite or a dropped connection: back off and retry


class RowWriter:
    """Writes batches of entries to the store's engine; counts the rows written and those given up on."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.multirow = engine.dialect.name == "sqlite"
        dialect = engine.dialect
        self._bind_time = predictions_table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
        self.written = 0
        self.failed = 0

    def write(self, entries: list[bytes]) -> tuple[int, int]:
        """Write a batch; returns (rows written, rows given up on) for this batch. Never raises: an entry
        that can't be read costs only itself, a batch the database refuses is counted as failed."""
        written, failed = self.written, self.failed
        try:
            self._write(entries)
        except Exception:  # noqa: BLE001 - the writer must outlive a bad batch, or flush() hangs
            self.failed += len(entries)
            log.exception("prediction store: %d entries rejected by %s", len(entries), self.engine.url)
        return self.written - written, self.failed - failed

    def _write(self, entries: list[bytes]) -> None:
        rows: list[tuple[Any, ...]] = []  # in PREDICTION_COLUMNS order
        feedback: list[dict[str, Any]] = []
        # Multi-row inserts go to the driver as they are: the datetime gets the dialect's own conversion here.
        bind_time = self._bind_time if self.multirow and self._bind_time else _same
        for entry in entries:
            try:
                decoded = decode(entry)
                if decoded[0] == REQUEST:
                    rows += request_rows(decoded, bind_time)
                else:
                    _, request_id, label, created = decoded
                    feedback.append({"request_id": request_id, "label": label, "created_at": utc(created)})
            except Exception:  # noqa: BLE001 - one malformed entry must not cost the rest of the batch
                self.failed += 1
                log.exception("prediction store: an entry can't be stored")
        for attempt in range(_RETRIES):
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
        # SQLite's driver releases and retakes the GIL around every statement it steps: multi-row INSERTs
        # make that a few hand-offs per batch instead of one per prediction. Other databases: executemany.
        if not self.multirow:
            connection.execute(
                predictions_table.insert(), [dict(zip(PREDICTION_COLUMNS, row, strict=True)) for row in rows]
            )
            return
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            connection.exec_driver_sql(
                _multirow_insert(len(chunk)), tuple(itertools.chain.from_iterable(chunk))
            )


def _same(value: Any) -> Any:
    return value


@functools.cache
def _multirow_insert(rows: int) -> str:
    one = "(" + ", ".join("?" * len(PREDICTION_COLUMNS)) + ")"
    return f"INSERT INTO {predictions_table.name} ({', '.join(PREDICTION_COLUMNS)}) VALUES " + ", ".join(
        [one] * rows
    )
