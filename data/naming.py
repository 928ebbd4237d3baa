"""What every source shares: the error a source raises, and how a source's classes are named by the plan.

The source loaders (``data.sources`` for the bundled sets, ``data.images``, ``data.tables``) all import from
here, and ``data.sources`` picks among them: one direction, no circle.
"""

from __future__ import annotations

import numpy as np


class SourceError(RuntimeError):
    """A source can't be read; the message says which file or setting and what to do."""


def name_classes(
    source_names: list[str], labels: np.ndarray, plan_classes: list[str] | None, source: str
) -> tuple[list[str], np.ndarray]:
    """Apply ``data.classes`` to a source's class names.

    The same names in another order re-map the label ids to the plan's order; other names of the same count
    rename the source's classes in order.

    Returns:
        (class names, labels with ids in that order).

    Raises:
        SourceError: the plan names a different number of classes than the source has.
    """
    if plan_classes is None:
        return list(source_names), labels
    if sorted(plan_classes) == sorted(source_names):
        order = {name: plan_classes.index(name) for name in source_names}
        remap = np.array([order[name] for name in source_names], dtype=np.int64)
        labels = np.where(labels >= 0, remap[np.clip(labels, 0, None)], labels)
        return list(plan_classes), labels
    if len(plan_classes) != len(source_names):
        raise SourceError(
            f"data.classes: {source} has {len(source_names)} classes {source_names}, "
            f"the plan names {len(plan_classes)}: {plan_classes}"
        )
    return list(plan_classes), labels
