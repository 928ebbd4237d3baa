"""The monitor's memory between runs: policy state, the last check, the last alert. One small JSON file.

Written atomically (temp file + rename), so a crash mid-write leaves the previous state, never half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitoring.policy import PolicyState


@dataclass(frozen=True)
class MonitorState:
    policy: PolicyState = PolicyState()
    last_check: dict[str, Any] | None = None  # summary of the latest drift check and its decision
    last_alert: dict[str, Any] | None = None  # the latest alert sent
    labels_exported: int = 0  # feedback labels in the latest retraining export
    extra: dict[str, Any] = field(default_factory=dict)


def load_state(path: Path) -> MonitorState:
    """Read the state; a missing file is a fresh state.

    Raises:
        ValueError: the file is not the JSON this module writes (names the file).
    """
    if not path.is_file():
        return MonitorState()
    try:
        content = json.loads(path.read_text())
        return MonitorState(
            policy=PolicyState.from_dict(content.get("policy") or {}),
            last_check=content.get("last_check"),
            last_alert=content.get("last_alert"),
            labels_exported=int(content.get("labels_exported", 0)),
            extra=content.get("extra") or {},
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: expected the monitor's state JSON; can't read it: {error}") from None


def save_state(path: Path, state: MonitorState) -> None:
    """Write the state atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "policy": state.policy.to_dict(),
        "last_check": state.last_check,
        "last_alert": state.last_alert,
        "labels_exported": state.labels_exported,
        "extra": state.extra,
    }
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".json")
    with os.fdopen(descriptor, "w") as handle:
        json.dump(content, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(temporary, path)
