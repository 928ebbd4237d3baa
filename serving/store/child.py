"""The writer process: ``python -m serving.store.child URL FRAMES_FD CONFIRMATIONS_FD``.

Reads frames (``serving.store.process``) until its parent closes the pipe, or dies: it writes each batch
and confirms it. SIGINT and SIGTERM are ignored, first thing: the parent decides when it stops, by closing the
pipe, so a shutdown signal to the service's process group never loses a batch already sent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main(url: str, frames_fd: int, confirmations_fd: int) -> None:
    import marshal

    from serving.store.process import CONFIRMATION, FRAME
    from serving.store.rows import RowWriter
    from serving.store.schema import open_engine
    from serving.tuning import WRITER_NICE

    with contextlib.suppress(OSError):  # below the service: its bursts of SQL yield the CPU to the event loop
        os.nice(WRITER_NICE)
    engine = open_engine(url)
    writer = RowWriter(engine)
    confirm = True
    with os.fdopen(frames_fd, "rb") as frames, os.fdopen(confirmations_fd, "wb", buffering=0) as out:
        while True:
            header = frames.read(FRAME.size)
            if len(header) < FRAME.size:
                break  # closed (or the parent died): everything whole has been written
            sequence, size = FRAME.unpack(header)
            payload = frames.read(size)
            if len(payload) < size:
                break  # the parent died mid-frame
            written, failed = writer.write(marshal.loads(payload))
            if confirm:
                try:
                    out.write(CONFIRMATION.pack(sequence, written, failed))
                except BrokenPipeError:
                    confirm = False  # the parent is gone: keep writing what it sent
    engine.dispose()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
