"""The files a training run leaves for people: history rows, learning curves, model summary, plan, meta."""

from __future__ import annotations

import io
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from config.plan import Plan
from data.dataset import DatasetMeta

from .names import DATASET_META_ARTIFACT

if TYPE_CHECKING:
    import keras

    from .train import TrainResult


def history_rows(history: Mapping[str, list[float]]) -> list[dict[str, float]]:
    """The history as one row per epoch (``epoch`` from 1), for CSV and DVC plots."""
    names = sorted(history)
    epochs = max((len(values) for values in history.values()), default=0)
    return [
        {"epoch": epoch + 1, **{name: history[name][epoch] for name in names if epoch < len(history[name])}}
        for epoch in range(epochs)
    ]


def plot_learning_curves(history: Mapping[str, list[float]], path: Path) -> Path:
    """A PNG with one panel per metric (train and val lines), written with matplotlib's Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [name for name in history if not name.startswith("val_") and name != "learning_rate"]
    figure = Figure(figsize=(5 * max(len(names), 1), 4))
    FigureCanvasAgg(figure)
    for index, name in enumerate(names, start=1):
        axes = figure.add_subplot(1, len(names), index)
        for key in (name, f"val_{name}"):
            if key in history:
                axes.plot(range(1, len(history[key]) + 1), history[key], label=key)
        axes.set_xlabel("epoch")
        axes.set_title(name)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    return path


def plot_confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path) -> Path:
    """A PNG of the test confusion matrix (rows actual, columns predicted), counts in the cells."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = max(4.0, 0.5 * len(classes) + 2)
    figure = Figure(figsize=(size, size))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    return path


def classification_report(metrics: Mapping[str, Any]) -> str:
    """A fixed-width per-class precision/recall/F1/support table with the macro averages and accuracy."""
    lines = [f"{'class':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"{name:>12} {row['precision']:9.3f} {row['recall']:9.3f} {row['f1']:9.3f} {row['support']:8d}"
        )
    lines.append(
        f"{'macro avg':>12} {metrics['macro_precision']:9.3f} {metrics['macro_recall']:9.3f} "
        f"{metrics['macro_f1']:9.3f} {metrics['n']:8d}"
    )
    lines.append(f"{'accuracy':>12} {metrics['accuracy']:9.3f}")
    return "\n".join(lines) + "\n"


def model_summary(model: keras.Model) -> str:
    """The Keras summary table as plain text."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, line_break=True: lines.append(line))
    return "\n".join(lines) + "\n"


def write_run_artifacts(
    folder: Path, plan: Plan, plan_path: Path | None, result: TrainResult, meta: DatasetMeta
) -> None:
    (folder / "model_summary.txt").write_text(model_summary(result.model))
    plot_learning_curves(result.history, folder / "learning_curves.png")
    if plan_path is not None:
        shutil.copyfile(plan_path, folder / Path(plan_path).name)
    else:
        (folder / "plan.yaml").write_text(yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False))
    (folder / DATASET_META_ARTIFACT).write_text(meta.to_json() + "\n")
    buffer = io.StringIO()
    rows = history_rows(result.history)
    if rows:
        buffer.write(",".join(rows[0]) + "\n")
        buffer.writelines(",".join(str(row.get(key, "")) for key in rows[0]) + "\n" for row in rows)
    (folder / "history.csv").write_text(buffer.getvalue())
