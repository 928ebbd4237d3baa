"""``PredictionReader``: what monitoring, lineage, the feedback route and status read from the store.

Reads only: no queue, no thread, no child process. Every query of the store's tables lives here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from serving.store.schema import feedback_table, open_engine, predictions_table

if TYPE_CHECKING:
    import pandas as pd

# The columns of ``window`` and ``labeled``, in order.
WINDOW_COLUMNS = [
    "request_id",
    "created_at",
    "model_version",
    "features",
    "predicted",
    "confidence",
    "label",
    "latency_ms",
]
_IN_LIST = 500  # request ids per IN (...) query


class PredictionReader:
    """Reads the prediction store at ``url`` (any SQLAlchemy URL).

    Args:
        url: ``sqlite:///var/predictions.db``, ``postgresql+psycopg://...``.
    """

    def __init__(self, url: str):
        self.url = url
        self.engine = open_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> PredictionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self) -> int:
        """Number of predictions stored."""
        with self.engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(predictions_table)
            return int(connection.execute(query).scalar_one())

    def labeled_count(self) -> int:
        """Number of predictions (request ids) a feedback label arrived for."""
        query = sa.select(sa.func.count(sa.distinct(feedback_table.c.request_id)))
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar() or 0)

    def window(self, limit: int, *, since: datetime | None = None) -> pd.DataFrame:
        """The latest ``limit`` predictions (optionally only those at or after ``since``), oldest first.

        Returns:
            Columns request_id, created_at (UTC), model_version, features (np.ndarray per row), predicted,
            confidence, label (the latest feedback, NaN without), latency_ms.
        """
        query = sa.select(predictions_table).order_by(predictions_table.c.id.desc()).limit(int(limit))
        if since is not None:
            query = query.where(predictions_table.c.created_at >= _naive_utc(since))
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()[::-1]
            labels = _labels(connection, [row["request_id"] for row in rows])
        return _frame(rows, labels)

    def labeled(self) -> pd.DataFrame:
        """Every prediction a feedback label arrived for, oldest first (columns as ``window``)."""
        labeled_ids = sa.select(feedback_table.c.request_id).distinct()
        query = (
            sa.select(predictions_table)
            .where(predictions_table.c.request_id.in_(labeled_ids))
            .order_by(predictions_table.c.id)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            labels = _labels(connection, [row["request_id"] for row in rows])
        return _frame(rows, labels)

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
            label = _labels(connection, [request_id]).get(request_id)
        found = dict(row)
        found["features"] = _features(row)
        found["created_at"] = found["created_at"].replace(tzinfo=UTC)
        found["label"] = label
        found["confidence"] = math.nan if found["confidence"] is None else found["confidence"]
        return found


def _labels(connection: Any, request_ids: list[str]) -> dict[str, float]:
    """The latest feedback label of each of ``request_ids`` that has one."""
    labels: dict[str, float] = {}
    unique = list(dict.fromkeys(request_ids))
    for start in range(0, len(unique), _IN_LIST):
        chunk = unique[start : start + _IN_LIST]
        query = (
            sa.select(feedback_table.c.request_id, feedback_table.c.label)
            .where(feedback_table.c.request_id.in_(chunk))
            .order_by(feedback_table.c.id)
        )
        labels.update({rid: float(label) for rid, label in connection.execute(query)})  # latest wins
    return labels


def _frame(rows: Sequence[Any], labels: dict[str, float]) -> pd.DataFrame:
    import pandas as pd  # here, not at import: lineage and the service's feedback route never need it

    return pd.DataFrame(
        {
            "request_id": [row["request_id"] for row in rows],
            "created_at": pd.to_datetime([row["created_at"] for row in rows], utc=True),
            "model_version": [row["model_version"] for row in rows],
            "features": [_features(row) for row in rows],
            "predicted": _predicted(rows),
            "confidence": np.array(
                [np.nan if row["confidence"] is None else row["confidence"] for row in rows], dtype="float64"
            ),
            "label": np.array([labels.get(row["request_id"], np.nan) for row in rows], dtype="float64"),
            "latency_ms": np.array([row["latency_ms"] for row in rows], dtype="float64"),
        }
    )


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _features(row: Any) -> np.ndarray:
    return np.frombuffer(row["features"], dtype="float32").reshape(json.loads(row["shape"]))


def _predicted(rows: Sequence[Any]) -> np.ndarray:
    if rows and all(row["predicted_class"] is not None for row in rows):
        return np.array([row["predicted_class"] for row in rows], dtype="int64")
    return np.array(
        [
            row["predicted_class"] if row["predicted_value"] is None else row["predicted_value"]
            for row in rows
        ],
        dtype="float64",
    )
