"""The prediction store's tables and engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

_SQLITE_CACHE_KIB = 32_768  # page cache per connection (SQLite's default is 2 MB)

metadata = sa.MetaData()
predictions_table = sa.Table(
    "predictions",
    metadata,
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
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(80), nullable=False, index=True),
    sa.Column("label", sa.Float, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)
# The prediction columns in the order rows are built and inserted (``records.request_rows``).
PREDICTION_COLUMNS = tuple(column.name for column in predictions_table.columns if column.name != "id")


def open_engine(url: str) -> sa.Engine:
    """An engine on the store at ``url``, its tables created when missing.

    SQLite (the default) runs in WAL mode, so readers never block the writer; its folder is created.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = sa.create_engine(url, pool_pre_ping=True)
    else:
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

    metadata.create_all(engine)
    return engine
