"""The ``"process"`` transport: the writer thread hands batches to a child process that writes them.

The child's SQL and row building then never hold this process's GIL (the service's event loop runs on it).
A batch goes out through a pipe as a frame: its sequence number, its length, then the ``marshal``-ed list of
entries. The child confirms each frame once committed, with the rows it wrote and gave up on; frames are kept
until confirmed, so a child that dies is replaced and gets every unconfirmed frame again (at least once). The
child ignores SIGINT/SIGTERM, runs in its own session, and writes everything it was sent even when this
process is killed; it stops when the pipe closes.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import marshal
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from serving.tuning import PIPE_BYTES

log = logging.getLogger("lifecycle.serving.store")

FRAME = struct.Struct("<QI")  # a batch: sequence number, payload length
CONFIRMATION = struct.Struct("<QQQ")  # the child's reply per batch: sequence number, rows written, given up
_RESTART_PAUSE = 1.0  # seconds between restarts of a child that keeps dying
_MOST_FAILED_STARTS = 5  # children in a row that died before confirming anything: the writer gives up
# The package root this process imports ``serving`` from: the child runs the same code (``python -m``).
_CODE_ROOT = Path(__file__).resolve().parents[2]


class ProcessTransport:
    """This process's end of the writer child (see the module docstring).

    Args:
        url: the store's SQLAlchemy URL, which the child opens.
    """

    process: subprocess.Popen[bytes]  # the writer process now (a new one after each restart)

    def __init__(self, url: str):
        self.url = url
        self.written = 0
        self.failed = 0
        self.handed = 0  # entries written into the pipe: the child has them, even if this process dies now
        self._lock = threading.Lock()
        self._unconfirmed: collections.deque[tuple[int, bytes]] = collections.deque()
        self._markers: list[tuple[int, threading.Event]] = []
        self._sent = 0  # sequence number of the last frame sent
        self._confirmed = 0
        self._closing = False
        self._started_at = 0.0
        self._failed_starts = 0  # children in a row that died before their first confirmation
        self._start()

    @property
    def pid(self) -> int:
        """The writer process's pid."""
        return self.process.pid

    @property
    def stalled(self) -> bool:
        """The child died with batches unconfirmed: the next ``send`` restarts it and sends them again."""
        return self._dead or self.process.poll() is not None

    def send(self, entries: list[bytes], markers: list[threading.Event]) -> None:
        """Send a batch (blocks while the pipe is full: the child sets the pace); ``markers`` are set once
        the child has confirmed everything sent up to now."""
        if self.stalled:
            self._restart()
        if entries:
            payload = marshal.dumps(entries)
            with self._lock:
                self._sent += 1
                frame = FRAME.pack(self._sent, len(payload)) + payload
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

    def _start(self) -> None:
        if self._failed_starts >= _MOST_FAILED_STARTS:
            raise RuntimeError(
                f"the prediction store's writer process died {self._failed_starts} times in a row before "
                f"writing anything (last exit {self.process.returncode}); its log is the service's stderr"
            )
        pause = self._started_at + _RESTART_PAUSE - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._started_at = time.monotonic()
        frames_in, frames_out = os.pipe()
        if hasattr(fcntl, "F_SETPIPE_SZ"):  # one write per batch; elsewhere, or refused, the default size
            with contextlib.suppress(OSError):
                fcntl.fcntl(frames_out, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        confirmations_in, confirmations_out = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "serving.store.child",
                    self.url,
                    str(frames_in),
                    str(confirmations_out),
                ],
                pass_fds=(frames_in, confirmations_out),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C doesn't reach it: the service drains first
            )
        finally:
            os.close(frames_in)
            os.close(confirmations_out)
        self._out = frames_out
        self._dead = False
        self._confirmed_since_start = False
        self._reader = threading.Thread(
            target=self._read_confirmations,
            args=(confirmations_in,),
            name="prediction-store-confirmations",
            daemon=True,
        )
        self._reader.start()

    def _close_out(self) -> None:
        if self._out >= 0:
            os.close(self._out)
            self._out = -1

    def _restart(self) -> None:
        with self._lock:
            frames = [frame for _, frame in self._unconfirmed]
            self._failed_starts = 0 if self._confirmed_since_start else self._failed_starts + 1
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
                confirmation = confirmations.read(CONFIRMATION.size)
                if len(confirmation) < CONFIRMATION.size:
                    break
                sequence, written, failed = CONFIRMATION.unpack(confirmation)
                with self._lock:
                    self.written += written
                    self.failed += failed
                    self._confirmed = sequence
                    self._confirmed_since_start = True
                    while self._unconfirmed and self._unconfirmed[0][0] <= sequence:
                        self._unconfirmed.popleft()
                    done = [marker for seq, marker in self._markers if seq <= sequence]
                    self._markers = [(seq, marker) for seq, marker in self._markers if seq > sequence]
                for marker in done:
                    marker.set()
        if not self._closing:
            self._dead = True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
