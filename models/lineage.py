"""Lineage: where a model came from (code, data, plan, libraries), as strings for MLflow tags."""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path

import yaml

from config.layout import DVC_LOCK
from config.plan import Plan

from .names import DATA_MD5_TAG

LIBRARIES = ("tensorflow", "keras", "mlflow", "numpy")


def lineage_tags(plan: Plan, root: Path, accelerator: str) -> dict[str, str]:
    """Where a model came from: code, data, plan, hardware and library versions.

    Args:
        plan: the plan (its digest is the plan hash).
        root: project root with ``.git`` and ``dvc.lock``.
        accelerator: the accelerator label the training used.

    Returns:
        String tags: git_commit, git_dirty, data_md5 (JSON path -> md5), plan_hash, accelerator,
        version.<library>.
    """
    commit, dirty = git_state(root)
    tags = {
        "git_commit": commit,
        "git_dirty": dirty,
        DATA_MD5_TAG: json.dumps(dvc_data_hashes(root / DVC_LOCK), sort_keys=True),
        "plan_hash": plan.digest(),
        "accelerator": accelerator,
    }
    tags.update({f"version.{name}": _version(name) for name in LIBRARIES})
    return tags


def git_state(root: Path) -> tuple[str, str]:
    """(commit, dirty) of the git checkout at ``root``; ("unknown", "unknown") outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, "true" if status.strip() else "false"


def dvc_data_hashes(lock_path: Path) -> dict[str, str]:
    """The md5 of every data output (``data/...``) recorded in ``dvc.lock``; {} when there is none.

    Args:
        lock_path: the ``dvc.lock`` file.

    Returns:
        ``{out path: md5}`` for outs under ``data/``, from every stage.
    """
    if not lock_path.is_file():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    hashes: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            path, md5 = str(out.get("path", "")), out.get("md5")
            if path.startswith("data/") and md5:
                hashes[path] = str(md5)
    return hashes


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent" if name != "tensorflow" else _version("tensorflow-cpu")
