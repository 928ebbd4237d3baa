"""The model registry: resolve a version by alias (hash-verified), move aliases, keep a promotion ledger.

Aliases only (no deprecated stages). ``champion`` (plan.deploy.alias) is what serving follows; a candidate
that passed the gate gets ``challenger`` (plan.deploy.challenger_alias). Every alias move goes through
``move_alias``, which appends one entry to the promotion ledger kept in the registry itself, as tags of the
registered model (``models.ledger``); it lives in the MLflow DB, so it survives restarts.

Every function takes the project's ``MlflowClient`` first (``models.client.tracking_client``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from data.dataset import DatasetMeta

from .ledger import LedgerEntry, champion_history, entries_from_tags, next_entry
from .lineage import file_sha256
from .names import DATASET_META_ARTIFACT, KERAS_FILE_IN_MODEL, SHA256_TAG


class RegistryError(RuntimeError):
    """A registry operation that can't be done; the message says why."""


class ModelNotFoundError(RegistryError, LookupError):
    """No such registered model, version or alias."""


class ModelIntegrityError(RegistryError):
    """The downloaded model file does not hash to the sha256 recorded on its version."""


class PromotionRefusedError(RegistryError):
    """A promotion without a passing verdict (or a forced one without a reason)."""


class VerdictLike(Protocol):
    @property
    def passed(self) -> bool: ...


@dataclass(frozen=True)
class ResolvedModel:
    """A registered version, downloaded and verified: everything serving needs to load it."""

    name: str
    version: str
    run_id: str
    alias: str | None
    model_path: Path  # local, hash-verified .keras file
    sha256: str
    meta: DatasetMeta
    input_example: np.ndarray
    metrics: dict[str, float]


def _not_found(error: Exception) -> bool:
    code = getattr(error, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or "not found" in str(error).lower()


def alias_version(client: Any, name: str, alias: str = "champion") -> str | None:
    """The version an alias points at, or None (no such model or alias). One registry query; for polling.

    Args:
        client: the project's ``MlflowClient``.
        name: registered model name.
        alias: alias name.

    Returns:
        The version as a string, or None.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if _not_found(error):
            return None
        raise
    version = model.aliases.get(alias)
    return None if version is None else str(version)


def get_version(client: Any, name: str, version: str) -> Any:
    """The ``ModelVersion`` ``name``/``version``; raises ModelNotFoundError naming both."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as error:
        if _not_found(error):
            raise ModelNotFoundError(
                f"Expected a registered version {name!r} v{version}. Received: none."
            ) from None
        raise


def resolve_model(
    client: Any,
    name: str,
    alias: str = "champion",
    *,
    version: str | None = None,
    dst: Path | None = None,
) -> ResolvedModel:
    """Download a registered version's ``.keras`` file, verify its sha256, and gather what goes with it.

    Args:
        client: the project's ``MlflowClient``.
        name: registered model name.
        alias: alias to resolve (ignored when ``version`` is given).
        version: an explicit version instead of the alias.
        dst: directory to download the model into; None for a new temporary directory (kept: the caller
            owns the file).

    Returns:
        The resolved model: local verified file, its DatasetMeta, an input example and the run's metrics.

    Raises:
        ModelNotFoundError: no such model, version or alias.
        ModelIntegrityError: the file's sha256 differs from the version tag ``model_sha256`` (or it has none).
    """
    import mlflow
    from mlflow.models import Model

    if version is None:
        version = alias_version(client, name, alias)
        if version is None:
            raise ModelNotFoundError(
                f"Expected model {name!r} to have alias {alias!r}. Received: no such alias."
            )
        resolved_alias: str | None = alias
    else:
        resolved_alias = None
    model_version = get_version(client, name, version)
    run_id = model_version.run_id or model_version.tags.get("run_id", "")
    expected = model_version.tags.get(SHA256_TAG)
    dst = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix=f"{name}-v{version}-"))
    dst.mkdir(parents=True, exist_ok=True)
    source = client.get_model_version_download_uri(name, str(version))
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(dst), tracking_uri=client.tracking_uri
        )
    )
    model_path = local / KERAS_FILE_IN_MODEL
    if not model_path.is_file():
        raise ModelIntegrityError(
            f"Expected {KERAS_FILE_IN_MODEL} in {name} v{version} ({source}). Received: none."
        )
    sha256 = file_sha256(model_path)
    if not expected:
        raise ModelIntegrityError(f"Expected tag {SHA256_TAG!r} on {name} v{version}. Received: none.")
    if sha256 != expected:
        raise ModelIntegrityError(
            f"{name} v{version}: {model_path} has sha256 {sha256}, expected {expected} "
            f"(tag {SHA256_TAG}); the stored artifact changed after registration."
        )
    meta_file = client.download_artifacts(run_id, DATASET_META_ARTIFACT, str(dst))
    meta = DatasetMeta.from_json(Path(meta_file).read_text())
    example: Any = None
    if (local / "MLmodel").is_file():
        example = Model.load(str(local / "MLmodel")).load_input_example(str(local))
    if example is None:
        example = np.zeros((1, *meta.input_shape), dtype="float32")
    metrics = dict(client.get_run(run_id).data.metrics) if run_id else {}
    return ResolvedModel(
        name=name,
        version=str(version),
        run_id=run_id,
        alias=resolved_alias,
        model_path=model_path,
        sha256=sha256,
        meta=meta,
        input_example=np.asarray(example, dtype="float32"),
        metrics={key: float(value) for key, value in metrics.items()},
    )


def read_ledger(client: Any, name: str) -> list[LedgerEntry]:
    """Every alias move of a registered model, oldest first.

    Args:
        client: the project's ``MlflowClient``.
        name: registered model name.

    Returns:
        The ledger entries ([] for a model never moved, or not registered).
    """
    from mlflow.exceptions import MlflowException

    try:
        return entries_from_tags(client.get_registered_model(name).tags)
    except MlflowException as error:
        if _not_found(error):
            return []
        raise


def move_alias(
    client: Any,
    name: str,
    alias: str,
    version: str,
    *,
    action: str,
    reason: str,
    report_ref: str | None = None,
    forced: bool = False,
) -> LedgerEntry:
    """Point ``alias`` at ``version`` and append the move to the ledger. The one place aliases move.

    Args:
        client: the project's ``MlflowClient``.
        name: registered model name.
        alias: the alias to move.
        version: the version it should point at (must exist).
        action: what the move is ("promote", "challenger", "rollback").
        reason: why, in words (kept in the ledger).
        report_ref: where the gate verdict behind the move is (file path or MLflow URI), if any.
        forced: the move skipped the gate.

    Returns:
        The ledger entry written.
    """
    get_version(client, name, version)
    previous = alias_version(client, name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    entry = next_entry(
        read_ledger(client, name), alias=alias, version=str(version), previous_version=previous,
        action=action, reason=reason, report_ref=report_ref, forced=forced,
    )  # fmt: skip
    client.set_registered_model_tag(name, entry.tag_key, entry.to_json())
    return entry


def promote(
    client: Any,
    name: str,
    version: str,
    verdict: VerdictLike | None,
    *,
    reason: str,
    force: bool = False,
    report_ref: str | None = None,
    alias: str = "champion",
) -> LedgerEntry:
    """Move ``alias`` (the champion) to ``version``: only with a passing verdict, or forced with a reason.

    Args:
        client: the project's ``MlflowClient``.
        name: registered model name.
        version: the version to promote.
        verdict: the gate's verdict on that version (``.passed``); None when there is none.
        reason: why (required, non-empty, when forced).
        force: promote without a passing verdict (recorded as forced in the ledger).
        report_ref: where the verdict is (``runs:/<run>/gate/gate.json`` or a file path).
        alias: the champion alias (plan.deploy.alias).

    Returns:
        The ledger entry of the move.

    Raises:
        PromotionRefusedError: no passing verdict and not forced, forced without a reason, or the verdict
            is about another version.
        ModelNotFoundError: no such version.
    """
    if force and not reason.strip():
        raise PromotionRefusedError(
            f"{name} v{version}: a forced promotion needs a reason (--reason TEXT). "
            "Received: an empty reason."
        )
    judged = getattr(verdict, "candidate_version", None)
    if verdict is not None and judged is not None and str(judged) != str(version):
        raise PromotionRefusedError(f"Expected a verdict on {name} v{version}. Received one on v{judged}.")
    if not force:
        if verdict is None:
            raise PromotionRefusedError(
                f"{name} v{version}: promotion needs a passing gate verdict. Received: none."
            )
        if not verdict.passed:
            raise PromotionRefusedError(
                f"{name} v{version}: the gate failed ({report_ref or 'see its report'}); "
                f"{alias!r} was not moved."
            )
    return move_alias(
        client, name, alias, version, action="promote", reason=reason or "gate passed",
        report_ref=report_ref, forced=force,
    )  # fmt: skip


def mark_challenger(
    client: Any,
    name: str,
    version: str,
    verdict: VerdictLike,
    *,
    report_ref: str | None,
    alias: str = "challenger",
) -> LedgerEntry:
    """Give a candidate that passed the gate the challenger alias.

    Raises:
        PromotionRefusedError: the verdict did not pass.
    """
    if not verdict.passed:
        raise PromotionRefusedError(
            f"{name} v{version}: only a candidate that passed the gate becomes {alias!r}."
        )
    return move_alias(
        client, name, alias, version, action="challenger", reason="passed the gate", report_ref=report_ref
    )


def rollback(client: Any, name: str, *, reason: str = "rollback", alias: str = "champion") -> LedgerEntry:
    """Move the champion back to the version it replaced, per the ledger, and record that.

    Repeated rollbacks walk further back: a rolled-back version leaves the history.

    Raises:
        RegistryError: the ledger holds no earlier champion.
    """
    stack = champion_history(read_ledger(client, name), alias)
    if len(stack) < 2:
        raise RegistryError(
            f"{name}: expected an earlier {alias!r} in the promotion ledger to roll back to. "
            f"Received: {len(stack)} standing promotion(s)."
        )
    return move_alias(client, name, alias, stack[-2], action="rollback", reason=reason)
