"""Servers the lifecycle starts as child processes (a local Prefect server, the MLflow UI): stopped alike."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_process(process: subprocess.Popen, *, timeout: float = 20, group: bool = False) -> None:
    """SIGTERM, then SIGKILL when it has not exited within ``timeout`` seconds; reaped either way.

    Args:
        process: the child.
        timeout: seconds it gets to exit after SIGTERM.
        group: signal its whole process group (it was started with ``start_new_session=True``), so the
            workers a server forks stop with it.
    """
    if process.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
