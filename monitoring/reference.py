"""The champion's own reference sample, pinned by the DVC hash its training run recorded.

Training tags each registered version with ``data_md5``: the md5 of every DVC data output in ``dvc.lock``
when it was trained. ``data/prepared`` is a DVC directory output; its ``.dir`` manifest in the DVC cache (or
the local remote) names the md5 of ``reference.npz``, whose bytes the cache holds. So the reference follows
the champion: when the champion changes, the reference changes with it, whatever the workspace holds now.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from data.dataset import PREPARED_DIR, REFERENCE, Dataset, DatasetMeta

log = logging.getLogger("lifecycle.monitoring")

CACHE_DIRS = (Path(".dvc/cache/files/md5"), Path(".dvc/cache"), Path("var/dvc-remote/files/md5"))


class ReferenceError(RuntimeError):
    """The champion's reference sample can't be found."""


def cached_file(root: Path, md5: str) -> Path | None:
    """The DVC cache (or local remote) file of an md5, or None."""
    for directory in CACHE_DIRS:
        candidate = root / directory / md5[:2] / md5[2:]
        if candidate.is_file():
            return candidate
    return None


def pinned_reference_path(root: Path, data_md5: str | None) -> Path | None:
    """The cached ``reference.npz`` of the data version a model was trained on, or None when not cached.

    Args:
        root: the project root.
        data_md5: the version's ``data_md5`` tag (JSON ``{out path: md5}``).

    Returns:
        The cache file's path.
    """
    if not data_md5:
        return None
    try:
        prepared = json.loads(data_md5).get(PREPARED_DIR.as_posix())
    except (ValueError, AttributeError):
        return None
    manifest = cached_file(root, prepared) if prepared else None
    if manifest is None:
        return None
    for entry in json.loads(manifest.read_text()):
        if entry.get("relpath") == f"{REFERENCE}.npz":
            return cached_file(root, entry["md5"])
    return None


def load_reference(root: Path, data_md5: str | None, meta: DatasetMeta) -> tuple[Dataset, str]:
    """The champion's reference sample: pinned from the DVC cache, else the workspace's (with a warning).

    Args:
        root: the project root.
        data_md5: the champion version's ``data_md5`` tag.
        meta: the champion's DatasetMeta (from its run).

    Returns:
        ``(reference dataset, where it came from)``.

    Raises:
        ReferenceError: neither the pinned file nor ``data/prepared/reference.npz`` exists.
    """
    pinned = pinned_reference_path(root, data_md5)
    if pinned is not None:
        with np.load(pinned, allow_pickle=False) as arrays:
            dataset = Dataset(arrays["features"], arrays["labels"], arrays["sample_ids"], meta)
        return dataset, f"dvc cache {pinned.relative_to(root)}"
    workspace = root / PREPARED_DIR / f"{REFERENCE}.npz"
    if not workspace.is_file():
        raise ReferenceError(
            f"Expected the champion's reference sample: the data/prepared version in its data_md5 tag "
            f"({data_md5 or 'none'}) is not in the DVC cache, and {workspace} does not exist. "
            "Run `dvc pull` or the prepare stage."
        )
    log.warning(
        "monitor: the champion's pinned reference (data_md5 %s) is not in the DVC cache; using %s",
        data_md5 or "none",
        workspace,
    )
    with np.load(workspace, allow_pickle=False) as arrays:
        dataset = Dataset(arrays["features"], arrays["labels"], arrays["sample_ids"], meta)
    return dataset, f"workspace {PREPARED_DIR / (REFERENCE + '.npz')}"
