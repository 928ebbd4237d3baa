"""Running DVC from the flows: one stage at a time, ``dvc repro --single-item <stage>`` in a subprocess.

DVC decides what is up to date (from dvc.lock) and records what ran; the flow only reads the outcome.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from config.layout import ProjectLayout
from pipeline.outputs import OutputFile, describe_outputs, stage_outs

log = logging.getLogger("lifecycle")

# DVC says these when another process holds the repository lock: worth a retry, unlike a failing stage.
_TRANSIENT = re.compile(
    r"Unable to acquire lock|lock.*(is|are) (busy|held)|Resource temporarily unavailable", re.I
)
_TAIL_LINES = 25


class StageError(RuntimeError):
    """A DVC stage failed; the message ends with the tail of its output (the stage's own error)."""

    def __init__(self, stage: str, returncode: int, tail: str):
        self.stage = stage
        self.returncode = returncode
        self.tail = tail
        super().__init__(f"stage {stage!r} failed (dvc exited with {returncode}):\n{tail}")


class TransientStageError(StageError):
    """The stage could not start because the DVC repository was busy; worth retrying."""


@dataclass(frozen=True)
class StageResult:
    """One DVC stage: whether it ran or DVC skipped it as up to date, how long it took, and its outs."""

    stage: str
    ran: bool
    seconds: float
    outputs: list[OutputFile] = field(default_factory=list)


def dvc_environment() -> dict[str, str]:
    """The environment a stage runs in: this interpreter's bin folder first on PATH, so `python` is ours."""
    environment = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    environment["PATH"] = os.pathsep.join([bin_dir, environment.get("PATH", "")])
    environment.setdefault("DVC_NO_ANALYTICS", "1")
    return environment


def repro_stage(stage: str, layout: ProjectLayout, *, force: bool = False) -> StageResult:
    """Run one DVC stage with ``dvc repro --single-item``; DVC skips it when nothing it reads changed.

    Args:
        stage: the stage's name in dvc.yaml.
        layout: the project (where dvc.yaml is).
        force: run it even when DVC finds it up to date (``--force``).

    Returns:
        Whether it ran or was skipped, its duration, and the files it produced.

    Raises:
        StageError: the stage failed; the message carries the tail of its output.
        TransientStageError: the DVC repository was locked by another process.
    """
    log.info("%s: starting%s", stage, " (forced)" if force else "")
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else []), "--single-item", stage],
        cwd=layout.root,
        env=dvc_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in order: the stage's own error sits next to DVC's
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        tail = "\n".join(completed.stdout.strip().splitlines()[-_TAIL_LINES:])
        error = TransientStageError if _TRANSIENT.search(completed.stdout) else StageError
        log.error("%s: failed after %.1f s", stage, seconds)
        raise error(stage, completed.returncode, tail)
    ran = f"Stage '{stage}' didn't change, skipping" not in completed.stdout
    outputs = describe_outputs(layout.root, stage_outs(layout.dvc_file, stage))
    log.info("%s: %s in %.1f s", stage, "ran" if ran else "up to date, skipped", seconds)
    return StageResult(stage=stage, ran=ran, seconds=seconds, outputs=outputs)


def dvc_add(folder: Path, layout: ProjectLayout) -> None:
    """``dvc add <folder>``: version a folder the pipeline does not produce (e.g. exported feedback)."""
    command = [sys.executable, "-m", "dvc", "add", layout.relative(folder)]
    subprocess.run(
        command, cwd=layout.root, env=dvc_environment(), check=True, capture_output=True, text=True
    )
