"""The prediction store: every answered prediction and every feedback label, behind a SQLAlchemy URL.

Split by job (import the module you need; this package file imports nothing, so the writer's child process
starts light):

- ``schema``: the tables, and the engine (SQLite in WAL mode by default; PostgreSQL for several replicas).
- ``records``: what is stored: an answered request or a feedback label, encoded as one ``bytes`` entry.
- ``rows``: entries into rows, written in one transaction per batch.
- ``reader``: ``PredictionReader``, for monitoring, lineage and status: reads only, no queue, no thread.
- ``writer``: ``PredictionWriter``, for the service: a bounded queue and a writer thread that hands batches
  to a transport, ``"thread"`` (rows written in this process) or ``"process"`` (``process``: a child).
- ``child``: the writer process itself, ``python -m serving.store.child``.
"""
