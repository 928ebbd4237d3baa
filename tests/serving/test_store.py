"""The prediction store on real SQLite files, through its public parts: ``PredictionWriter`` (thread and
process transports: back-pressure, drain on close, a child killed and restarted, outliving its parent) and
``PredictionReader`` (windows, feedback, find, labeled rows)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from serving.store.reader import WINDOW_COLUMNS, PredictionReader
from serving.store.records import AnsweredRequest, PredictionRecord, encode_request
from serving.store.rows import RowWriter
from serving.store.schema import open_engine
from serving.store.writer import PredictionWriter


def record(i: int, **fields) -> PredictionRecord:
    values = {
        "request_id": f"r{i}",
        "model_version": "3",
        "features": np.full((2, 2), i, dtype="float32"),
        "predicted": i % 3,
        "confidence": 0.5 + i / 1000,
        "latency_ms": 1.5,
        "model_name": "m",
    }
    values.update(fields)
    return PredictionRecord(**values)


def answered(
    ids: list[str], *, regression: bool = False, created_at: datetime | None = None
) -> AnsweredRequest:
    count = len(ids)
    features = np.arange(count * 4, dtype="float32").reshape(count, 2, 2)
    if regression:
        predicted, confidence = np.linspace(-1.5, 1.5, count).astype("float32"), None
    else:
        predicted = np.arange(count) % 3
        confidence = np.full(count, 0.75, dtype="float32")
        confidence[0] = np.nan  # stored as NULL, read back as NaN
    return AnsweredRequest(
        ids, "m", "7", features, predicted, confidence, 2.5, created_at or datetime.now(UTC)
    )


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'predictions.db'}"


@pytest.fixture
def reader(url):
    store = PredictionReader(url)
    yield store
    store.close()


@pytest.fixture(params=["thread", "process"])
def transport(request) -> str:
    return request.param


def test_window_round_trips_predictions_and_joins_feedback(url, reader, transport):
    writer = PredictionWriter(url, transport=transport)
    writer.record_predictions([record(i) for i in range(5)])
    writer.record_feedback("r1", 2)
    writer.record_feedback("r3", 0)
    writer.record_feedback("r3", 1)  # a corrected label: the latest wins
    writer.flush()
    window = reader.window(3)
    assert list(window.columns[: len(WINDOW_COLUMNS)]) == WINDOW_COLUMNS
    assert list(window["request_id"]) == ["r2", "r3", "r4"]  # the latest 3, oldest first
    assert window["predicted"].dtype == np.int64 and list(window["predicted"]) == [2, 0, 1]
    np.testing.assert_array_equal(window["features"].iloc[1], np.full((2, 2), 3, dtype="float32"))
    assert window["features"].iloc[1].dtype == np.float32
    assert str(window["created_at"].dt.tz) == "UTC"
    assert window["label"].iloc[1] == 1.0 and np.isnan(window["label"].iloc[0])
    assert window["confidence"].iloc[2] == pytest.approx(0.504)
    assert reader.count() == 5
    found = reader.find("r1")
    assert found["label"] == 2.0 and found["model_version"] == "3" and found["created_at"].tzinfo is UTC
    assert reader.find("nope") is None
    assert reader.labeled_count() == 2
    labeled = reader.labeled()
    assert list(labeled["request_id"]) == ["r1", "r3"] and list(labeled["label"]) == [2.0, 1.0]
    writer.close()


def test_window_since_and_regression_values(url, reader):
    writer = PredictionWriter(url)
    old = datetime.now(UTC) - timedelta(hours=2)
    writer.record_predictions([record(0, predicted=1.25, confidence=float("nan"), created_at=old)])
    writer.record_predictions([record(1, predicted=np.float32(-3.5), confidence=float("nan"))])
    writer.flush()
    window = reader.window(10, since=datetime.now(UTC) - timedelta(hours=1))
    assert list(window["request_id"]) == ["r1"]
    assert window["predicted"].dtype == np.float64 and window["predicted"].iloc[0] == -3.5
    assert len(reader.window(10)) == 2
    assert reader.window(10, since=datetime.now(UTC) + timedelta(hours=1)).empty
    writer.close()


def test_full_queue_blocks_the_writer_instead_of_dropping(url, reader, tmp_path, transport):
    writer = PredictionWriter(url, queue_size=4, transport=transport)
    writer.record_predictions([record(0)])
    writer.flush()
    blocker = sqlite3.connect(tmp_path / "var" / "predictions.db", timeout=1)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer can't commit until this ends
    done = threading.Event()

    def produce() -> None:
        # more than one writer batch (1000): the writer holds a full batch it can't commit (a process writer:
        # and the pipe to it fills), then the queue fills
        writer.record_predictions([record(i) for i in range(1, 2001)])
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(1.0)
    assert not done.is_set()  # blocked on the full queue: slowed down, nothing dropped
    assert writer.pending == 4
    blocker.rollback()
    blocker.close()
    producer.join(timeout=30)
    assert done.is_set()
    writer.close()
    assert reader.count() == 2001 and reader.window(5000)["request_id"].nunique() == 2001


def test_close_drains_everything_queued(url, reader, transport):
    writer = PredictionWriter(url, queue_size=100_000, transport=transport)
    writer.record_predictions([record(i) for i in range(3000)])
    writer.close()
    assert writer.pending == 0
    with pytest.raises(RuntimeError, match="after close"):
        writer.record_predictions([record(0)])
    assert reader.count() == 3000


def test_sqlite_runs_in_wal_mode(url):
    engine = open_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_a_record_that_cant_be_stored_is_refused_when_recorded(url, reader):
    writer = PredictionWriter(url)
    with pytest.raises(ValueError, match="could not convert string to float"):
        writer.record_predictions([record(1, features=np.array([["not a number"]], dtype=object))])
    assert writer.pending == 0  # nothing of it queued
    writer.record_predictions([record(2)])
    writer.flush()
    assert list(reader.window(10)["request_id"]) == ["r2"] and writer.failed == 0
    writer.close()


def test_an_entry_the_writer_cant_read_costs_only_itself(url, reader, transport):
    writer = PredictionWriter(url, transport=transport)
    writer.record_request(answered(["before"]))
    writer.put(b"not an entry")  # e.g. written by another version: the writer can't decode it
    writer.record_request(answered(["after"]))
    writer.flush()
    assert writer.failed == 1 and list(reader.window(10)["request_id"]) == ["before", "after"]
    writer.close()


@pytest.mark.parametrize("multirow", [True, False], ids=["sqlite-multirow", "sqlalchemy-executemany"])
def test_one_entry_per_request_stores_a_row_per_instance(url, reader, multirow):
    rows = RowWriter(open_engine(url))
    rows.multirow = multirow  # False: the path every non-SQLite database takes
    rows.write(
        [encode_request(answered([f"a-{i}" for i in range(45)]))]
    )  # more rows than one statement takes
    rows.write([encode_request(answered(["b"], regression=True))])
    assert rows.written == 46
    window = reader.window(100)
    assert list(window["request_id"]) == [f"a-{i}" for i in range(45)] + ["b"]
    np.testing.assert_array_equal(
        window["features"].iloc[44], np.arange(176, 180, dtype="float32").reshape(2, 2)
    )
    assert list(window["predicted"].iloc[:4]) == [0, 1, 2, 0]
    assert window["predicted"].iloc[45] == pytest.approx(-1.5)  # a one-instance linspace
    assert np.isnan(window["confidence"].iloc[0]) and window["confidence"].iloc[1] == pytest.approx(0.75)
    assert np.isnan(window["confidence"].iloc[45])  # regression: no confidence
    found = reader.find("a-3")
    assert found["model_version"] == "7" and found["latency_ms"] == 2.5 and found["created_at"].tzinfo is UTC
    assert abs((found["created_at"] - datetime.now(UTC)).total_seconds()) < 60
    rows.engine.dispose()


def test_requests_answered_together_keep_a_latency_per_row(url, reader):
    writer = PredictionWriter(url)
    # two requests, one entry: r1 alone, r2 with two instances
    together = answered(["r1", "r2-0", "r2-1"])._replace(latency_ms=[1.5, 4.0, 4.0])
    writer.record_request(together)
    with pytest.raises(ValueError, match=r"one latency per instance \(3\)\. Received: 2"):
        writer.record_request(together._replace(latency_ms=[1.0, 2.0]))
    writer.flush()
    assert [reader.find(rid)["latency_ms"] for rid in ("r1", "r2-0", "r2-1")] == [1.5, 4.0, 4.0]
    assert writer.written == 3
    writer.close()


def test_a_malformed_request_is_refused_and_says_why(url, reader):
    writer = PredictionWriter(url)
    bad = answered(["bad"])
    with pytest.raises(ValueError, match=r"one request id.*per instance \(1\).*2 ids, 1 predictions"):
        writer.record_request(bad._replace(request_ids=["bad", "extra"]))
    writer.record_request(answered(["good-1", "good-2"]))
    writer.flush()
    assert writer.failed == 0 and list(reader.window(10)["request_id"]) == ["good-1", "good-2"]
    writer.close()


def test_flush_waits_for_what_was_queued_before_it(url, reader, transport):
    writer = PredictionWriter(url, transport=transport)
    for i in range(50):
        writer.record_request(answered([f"r{i}"]))
    writer.flush()
    assert reader.count() == 50  # read on another connection: committed, not just taken
    writer.close()
    writer.flush()  # after close: returns at once


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_writer_thread_runs_below_the_request_threads_priority(url):
    writer = PredictionWriter(url)
    writer.flush()  # the writer is running (it set its priority first)
    (thread,) = [thread for thread in threading.enumerate() if thread.name == "prediction-store-writer"]
    assert os.getpriority(os.PRIO_PROCESS, thread.native_id) > os.getpriority(
        os.PRIO_PROCESS, threading.get_native_id()
    )
    writer.close()


def test_an_unknown_writer_is_refused_by_name(url):
    with pytest.raises(ValueError, match=r"store writer in \('thread', 'process'\). Received: 'fork'"):
        PredictionWriter(url, transport="fork")


def test_a_killed_writer_process_is_replaced_and_nothing_is_lost(url, reader):
    writer = PredictionWriter(url, transport="process")
    writer.record_request(answered(["r0"]))
    writer.flush()
    first = writer.process_id
    os.kill(first, signal.SIGKILL)
    for i in range(1, 200):
        writer.record_request(answered([f"r{i}"]))
    writer.flush()  # the writer thread noticed, started another child and sent it everything unconfirmed
    assert writer.process_id != first
    assert reader.count() == 200 and reader.window(500)["request_id"].nunique() == 200
    writer.close()


def test_the_writer_process_ignores_sigterm_and_stops_when_the_store_closes(url, reader):
    writer = PredictionWriter(url, transport="process")
    child = writer.process_id
    writer.record_request(answered(["before-sigterm"]))
    writer.flush()  # confirmed: the child is up
    os.kill(child, signal.SIGTERM)  # e.g. a process-group kill: the service decides, and drains first
    time.sleep(0.3)
    assert Path(f"/proc/{child}").exists() and "zombie" not in Path(f"/proc/{child}/status").read_text()
    writer.record_request(answered(["after-sigterm"]))
    writer.close()
    assert not Path(f"/proc/{child}").exists()  # stopped (and reaped) once the writer closed its pipe
    assert reader.count() == 2


def test_the_writer_process_writes_what_it_was_sent_when_its_parent_is_killed(url, reader, tmp_path):
    """A parent killed (SIGKILL, no drain) after its writer thread sent a batch: the child still writes it."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, os, time, numpy as np\n"
        "from serving.store.records import AnsweredRequest\n"
        "from serving.store.writer import PredictionWriter\n"
        "writer = PredictionWriter(sys.argv[1], transport='process')\n"
        "for i in range(500):\n"
        "    writer.record_request(AnsweredRequest([f'p{i}'], 'm', '1', np.zeros((1, 2), 'float32'),\n"
        "                                          np.array([1]), np.array([0.9]), 1.0, 1.7e9))\n"
        "writer.put(b'')  # an unreadable entry: 501\n"
        "while writer.handed < 501:  # all in the pipe (taken from the queue is not enough)\n"
        "    time.sleep(0.001)\n"
        "print(writer.process_id, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    parent = subprocess.run(
        [sys.executable, str(script), url], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert parent.returncode == -9, parent.stderr
    child = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.count() == 500


def test_a_reader_starts_no_thread_or_process_and_outlives_the_writer(url):
    threads = {thread.name for thread in threading.enumerate()}
    reader = PredictionReader(url)
    assert reader.count() == 0 and reader.window(10).empty and reader.labeled().empty  # an empty store
    assert {thread.name for thread in threading.enumerate()} == threads
    writer = PredictionWriter(url, transport="process")
    writer.record_predictions([record(i) for i in range(20)])
    writer.flush()
    assert reader.count() == 20 and reader.find("r19")["predicted_class"] == 1
    writer.close()
    assert {thread.name for thread in threading.enumerate()} == threads
    assert reader.count() == 20
    reader.close()
