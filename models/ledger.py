"""The promotion ledger's entries and how they are stored, without MLflow (``models.registry`` stores them).

One registered-model tag per entry, ``ledger.000001``, ``ledger.000002``, ...: MLflow 3.17.2 stores a
registered-model tag value in a ``String(5000)`` column, so one growing JSON list would hit the limit on
PostgreSQL; one small JSON object per tag never does (free text is capped at ``MAX_TEXT`` characters).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

LEDGER_PREFIX = "ledger."
MAX_TEXT = 1000


@dataclass(frozen=True)
class LedgerEntry:
    """One alias move: ``alias`` went from ``previous_version`` to ``version``."""

    index: int
    time: str  # ISO 8601, UTC
    alias: str
    version: str | None
    previous_version: str | None
    action: str  # "promote", "challenger", "rollback"
    reason: str
    report_ref: str | None
    forced: bool

    @property
    def tag_key(self) -> str:
        return f"{LEDGER_PREFIX}{self.index:06d}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def entries_from_tags(tags: Mapping[str, str]) -> list[LedgerEntry]:
    """The ledger held in a registered model's tags, oldest first (other tags are ignored)."""
    entries = [
        LedgerEntry(**json.loads(value)) for key, value in tags.items() if key.startswith(LEDGER_PREFIX)
    ]
    return sorted(entries, key=lambda entry: entry.index)


def next_entry(
    ledger: Iterable[LedgerEntry],
    *,
    alias: str,
    version: str,
    previous_version: str | None,
    action: str,
    reason: str,
    report_ref: str | None,
    forced: bool,
) -> LedgerEntry:
    """The entry that follows ``ledger``, stamped now (UTC); free text capped at ``MAX_TEXT`` characters."""
    return LedgerEntry(
        index=max((entry.index for entry in ledger), default=0) + 1,
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        alias=alias,
        version=str(version),
        previous_version=previous_version,
        action=action,
        reason=reason[:MAX_TEXT],
        report_ref=None if report_ref is None else report_ref[:MAX_TEXT],
        forced=forced,
    )


def champion_history(ledger: Iterable[LedgerEntry], alias: str = "champion") -> list[str]:
    """The versions of ``alias`` still standing, oldest first: each promotion pushes, each rollback pops.

    ``rollback`` goes to the second to last of these; a rolled-back version leaves the history, so
    repeated rollbacks walk further back.
    """
    stack: list[str] = []
    for entry in ledger:
        if entry.alias != alias or entry.version is None:
            continue
        if entry.action == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != entry.version:
                stack.append(entry.version)
        else:
            stack.append(entry.version)
    return stack
