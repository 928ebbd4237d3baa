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

from config.layout import PREPARED_DIR, REFERENCE, ProjectLayout
from data.dataset import Dataset, DatasetMeta

log = logging.getLogger("lifecycle.monitoring")


class ReferenceError(RuntimeError):
    """The champion's reference sample can't be found."""


def cached_file(layout: ProjectLayout, md5: str) -> Path | None:
    """The DVC cache (or local remote) file of an md5, or None."""
    for directory in layout.dvc_cache_dirs:
        candidate = directory / md5[:2] / md5[2:]
        if candidate.is_file():
            return candidate
    return None


def pinned_reference_path(layout: ProjectLayout, data_md5: str | None) -> Path | None:
    """The cached ``reference.npz`` of the data version a model was trained on, or None when not cached.

    Args:
        layout: the project.
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
    manifest = cached_file(layout, prepared) if prepared else None
    if manifest is None:
        return None
    for entry in json.loads(manifest.read_text()):
        if entry.get("relpath") == f"{REFERENCE}.npz":
            return cached_file(layout, entry["md5"])
    return None


def load_reference(layout: ProjectLayout, data_md5: str | None, meta: DatasetMeta) -> tuple[Dataset, str]:
    """The champion's reference sample: pinned from the DVC cache, else the workspace's (with a warning).

    Args:
        layout: the project.
        data_md5: the champion version's ``data_md5`` tag.
        meta: the champion's DatasetMeta (from its run).

    Returns:
        ``(reference dataset, where it came from)``.

    Raises:
        ReferenceError: neither the pinned file nor ``data/prepared/reference.npz`` exists.
    """
    pinned = pinned_reference_path(layout, data_md5)
    if pinned is not None:
        with np.load(pinned, allow_pickle=False) as arrays:
            dataset = Dataset(arrays["features"], arrays["labels"], arrays["sample_ids"], meta)
        return dataset, f"dvc cache {layout.relative(pinned)}"
    workspace = layout.prepared_dir / f"{REFERENCE}.npz"
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
