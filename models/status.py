"""Where a registered model stands: champion, challenger, the latest verdicts, the ledger tail. Read only."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .ledger import LedgerEntry
from .names import GATE_PASSED_TAG, GATE_REPORT_TAG
from .registry import alias_version, read_ledger


@dataclass(frozen=True)
class GateRecord:
    """The gate's verdict on one version, as tagged on it."""

    version: str
    passed: bool
    report: str | None  # runs:/<run_id>/gate/gate.json


@dataclass(frozen=True)
class RegistryStatus:
    model: str
    versions: int
    champion: str | None
    challenger: str | None
    verdicts: list[GateRecord]  # newest first
    ledger: list[LedgerEntry]  # oldest first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def registry_status(
    client: Any, name: str, *, alias: str = "champion", challenger_alias: str = "challenger", tail: int = 10
) -> RegistryStatus:
    """Where model ``name`` stands.

    Args:
        client: the project's ``MlflowClient``.
        name: the registered model (``plan.deploy.model_name``).
        alias: the champion alias (``plan.deploy.alias``).
        challenger_alias: the challenger alias.
        tail: how many recent verdicts and ledger entries.

    Returns:
        The status; a model never registered has no versions, aliases, verdicts or ledger.
    """
    versions = client.search_model_versions(f"name = '{name}'")  # [] for a model never registered
    verdicts = [
        GateRecord(str(v.version), v.tags[GATE_PASSED_TAG] == "true", v.tags.get(GATE_REPORT_TAG))
        for v in sorted(versions, key=lambda v: int(v.version), reverse=True)
        if GATE_PASSED_TAG in v.tags
    ]
    return RegistryStatus(
        model=name,
        versions=len(versions),
        champion=alias_version(client, name, alias),
        challenger=alias_version(client, name, challenger_alias),
        verdicts=verdicts[:tail],
        ledger=read_ledger(client, name)[-tail:],
    )
