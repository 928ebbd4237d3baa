"""The stage shells DVC calls: ``python -m pipeline.stages <stage> --plan plan.yaml``.

Each shell reads the plan and its input files, calls one domain function, and writes its outputs. A stage
that meets bad data exits with status 2 and the error (file, samples, rule) on stderr, no traceback, and
DVC stops the pipeline there. Stages register in ``STAGES``; errors they expect, in ``EXPECTED_ERRORS``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from data.dataset import LABELED_DIR, PREPARED_DIR, RAW_DIR, Dataset
from data.sources import SourceError
from data.validate import DataValidationError
from pipeline.plan import Plan, PlanError, load_plan
from pipeline.settings import Settings

log = logging.getLogger("lifecycle.stages")

SAMPLES = "samples"
LABELING_REPORT = "labeling_report.json"
PREPARE_REPORT = "prepare_report.json"


def collect_stage(plan: Plan, root: Path) -> None:
    """Source -> ``data/raw/samples.npz`` + ``meta.json``: every sample, labels -1 where unknown."""
    from data.collect import collect

    _warn_undeclared("collect", _source_paths(plan), root)
    file = (RAW_DIR / f"{SAMPLES}.npz").as_posix()
    dataset = collect(plan.data, root, file)
    dataset.save(root / RAW_DIR, SAMPLES)
    labeled = int((dataset.labels >= 0).sum()) if plan.data.task == "classification" else len(dataset)
    log.info("collect: %d samples (%d labeled) from %s -> %s", len(dataset), labeled, plan.data.source, file)


def label_stage(plan: Plan, root: Path) -> None:
    """Raw + label files -> ``data/labeled`` (labeled set, report) and the queue of unlabeled samples."""
    from data.label import label_dataset
    from data.labelfiles import export_queue, read_annotations

    labeling = plan.data.labeling
    queue_dir = _resolve(labeling.queue_dir, root)
    if not _inside(queue_dir, root / LABELED_DIR):
        raise DataValidationError(
            "plan.yaml",
            [
                (
                    "data.labeling.queue_dir",
                    f"must be inside {LABELED_DIR} (the label stage's DVC output), "
                    f"got {labeling.queue_dir!r}",
                )
            ],
        )
    _warn_undeclared("label", labeling.annotations, root)
    annotations = [a for name in labeling.annotations for a in read_annotations(_resolve(name, root), name)]
    raw = _load_input(root, RAW_DIR, SAMPLES, "collect")
    file = (LABELED_DIR / f"{SAMPLES}.npz").as_posix()
    result = label_dataset(raw, annotations, plan.data, file)
    result.labeled.save(root / LABELED_DIR, SAMPLES)
    image_dir = plan.data.source_arg if plan.data.source_kind == "images" else None
    export_queue(result.queue, queue_dir, image_dir)
    _write_json(root / LABELED_DIR / LABELING_REPORT, result.report)
    log.info(
        "label: %d labeled, %d queued for labeling in %s; %d duplicates dropped, %d ties",
        len(result.labeled),
        len(result.queue),
        labeling.queue_dir,
        result.report["duplicates_dropped"]["samples"],
        len(result.report["ties_left_unlabeled"]),
    )


def prepare_stage(plan: Plan, root: Path) -> None:
    """Labeled -> ``data/prepared/{train,val,test,reference}.npz``, meta with scaling, prepare_report.json."""
    from data.prepare import prepare
    from data.validate import validate_dataset, validate_splits

    labeled = _load_input(root, LABELED_DIR, SAMPLES, "label")
    validate_dataset(labeled, plan.data, (LABELED_DIR / f"{SAMPLES}.npz").as_posix(), labeled=True)
    result = prepare(labeled, plan.data, PREPARED_DIR.as_posix())
    validate_splits({name: result.splits[name] for name in ("train", "val", "test")}, PREPARED_DIR.as_posix())
    for name, part in result.splits.items():
        part.save(root / PREPARED_DIR, name)
    _write_json(root / PREPARED_DIR / PREPARE_REPORT, result.report)
    sizes = ", ".join(f"{name} {n}" for name, n in result.report["sizes"].items())
    log.info("prepare: %s (seed %d, scaling %s)", sizes, plan.data.split.seed, plan.data.scaling)


StageFunction = Callable[[Plan, Path], None]
STAGES: dict[str, StageFunction] = {
    "collect": collect_stage,
    "label": label_stage,
    "prepare": prepare_stage,
}


class MissingInputError(FileNotFoundError):
    """A stage's input files are not there: the stage before it has not run."""


# Errors a stage reports as a message (exit 2) rather than a traceback.
EXPECTED_ERRORS: list[type[Exception]] = [PlanError, SourceError, DataValidationError, MissingInputError]

# --- training stages (issue 3) ---
# Register `train` and `evaluate` here: STAGES["train"] = train_stage; EXPECTED_ERRORS.append(...)
MODEL_FILE = Path("artifacts/model.keras")
TRAIN_RECORD = Path("artifacts/train.json")
TRAIN_METRICS = Path("reports/train_metrics.json")
HISTORY_CSV = Path("reports/history.csv")


def train_stage(plan: Plan, root: Path) -> None:
    """``data/prepared`` -> a trained model, logged to MLflow and registered as a new version.

    Writes ``artifacts/model.keras`` (the registered file, same sha256), ``artifacts/train.json``,
    ``reports/train_metrics.json`` (DVC metrics) and ``reports/history.csv`` (DVC plots, one row per epoch).
    """
    import csv

    from models.build import build_model
    from models.run_artifacts import history_rows
    from models.tracking import log_training_run
    from models.train import train_model

    settings = Settings(root=root)
    settings.apply_environment()
    train, val = (Dataset.load(root / PREPARED_DIR, name) for name in ("train", "val"))
    result = train_model(
        lambda: build_model(plan.model, train.meta, plan.train), train, val, plan.train, plan.resources
    )
    plan_file = settings.plan_path if _is_plan_file(settings.plan_path, plan) else None
    trained = log_training_run(
        plan, result, train.meta, plan_path=plan_file, root=root, input_example=train.features[:5],
        artifact_location=settings.resolved_artifacts_dir.as_uri(), model_dst=root / MODEL_FILE,
    )  # fmt: skip
    record = {
        "run_id": trained.run_id, "model_name": trained.model_name, "version": trained.version,
        "model_uri": trained.model_uri, "sha256": trained.sha256, "accelerator": result.accelerator,
        "epochs_run": result.epochs_run, "stopped_by": result.stopped_by, "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 3), "samples_per_second": round(result.samples_per_second, 1),
        "plan_hash": plan.digest(),
    }  # fmt: skip
    _write_json(root / TRAIN_RECORD, record)
    _write_json(root / TRAIN_METRICS, {**result.final_metrics, "epochs_run": result.epochs_run})
    rows = history_rows(result.history)
    with (root / HISTORY_CSV).open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]) if rows else ["epoch"])
        writer.writeheader()
        writer.writerows(rows)
    log.info(
        "train: %d epochs (%s) on %s in %.1f s; val accuracy %s; registered %s version %s (run %s)",
        result.epochs_run, result.stopped_by, result.accelerator, result.seconds,
        result.final_metrics.get("final_val_accuracy", "n/a"), trained.model_name, trained.version,
        trained.run_id,
    )  # fmt: skip


def _is_plan_file(path: Path, plan: Plan) -> bool:
    """Whether ``path`` holds this very plan (so the run logs the file itself, comments and all)."""
    try:
        return path.is_file() and load_plan(path).digest() == plan.digest()
    except PlanError:
        return False


def _training_errors() -> list[type[Exception]]:
    from models.errors import AcceleratorError, ModelBuildError  # light: no Keras import

    return [ModelBuildError, AcceleratorError]


STAGES["train"] = train_stage
EXPECTED_ERRORS.extend(_training_errors())
EVALUATION_DIR = Path("reports")


def evaluate_stage(plan: Plan, root: Path) -> None:
    """The trained model on the test split -> ``reports/metrics.json`` (DVC metrics: test metrics, latency,
    size, per_class), ``reports/confusion.csv`` (DVC plots) and ``reports/predictions_test.npz`` (the test
    outputs the gate compares with the champion's, row by row)."""
    import keras

    from models.evaluate import evaluate_model, write_evaluation

    test = Dataset.load(root / PREPARED_DIR, "test")
    model = keras.saving.load_model(root / MODEL_FILE)
    metrics, outputs = evaluate_model(model, test, root / MODEL_FILE)
    classes = test.meta.classes if test.meta.task == "classification" else []
    write_evaluation(
        root / EVALUATION_DIR, metrics, classes=classes, y_true=test.labels, outputs=outputs,
        sample_ids=test.sample_ids,
    )  # fmt: skip
    headline = {k: round(v, 4) for k, v in metrics.items() if k in ("accuracy", "macro_f1", "mae", "mse")}
    log.info(
        "evaluate: %d test samples %s; p50 latency %.3f ms (batch 1); %.3f MB",
        len(test), headline, metrics["latency_p50_ms_batch1"], metrics["model_size_mb"],
    )  # fmt: skip


STAGES["evaluate"] = evaluate_stage
# --- end of training stages ---


def _load_input(root: Path, directory: Path, name: str, producer: str) -> Dataset:
    missing = [
        p.as_posix() for p in (directory / f"{name}.npz", directory / "meta.json") if not (root / p).is_file()
    ]
    if missing:
        raise MissingInputError(
            f"{', '.join(missing)} not found: run the {producer} stage first (dvc repro {producer})"
        )
    return Dataset.load(root / directory, name)


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def _resolve(path: str, root: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def _source_paths(plan: Plan) -> list[str]:
    return [plan.data.source_arg] if plan.data.source_kind in ("images", "table") else []


def _warn_undeclared(stage: str, paths: list[str], root: Path) -> None:
    """Warn about inputs a stage reads that dvc.yaml doesn't list: DVC won't re-run it when they change."""
    dvc_file = root / "dvc.yaml"
    if not paths or not dvc_file.is_file():
        return
    spec = (yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {}).get(stage) or {}
    deps = [_resolve(str(dep), root).resolve() for dep in spec.get("deps") or []]
    for path in paths:
        target = _resolve(path, root).resolve()
        if not any(target == dep or target.is_relative_to(dep) for dep in deps):
            log.warning(
                "%s reads %s, which dvc.yaml does not list under stages.%s.deps: DVC won't re-run %s when it "
                "changes; add it there (or keep the file under a listed folder)",
                stage,
                path,
                stage,
                stage,
            )


def main(argv: list[str] | None = None) -> int:
    """Run one stage: ``python -m pipeline.stages <stage> [--plan plan.yaml]``.

    Returns:
        0 on success, 2 when the plan or the data is bad (the message is on stderr).
    """
    parser = argparse.ArgumentParser(prog="python -m pipeline.stages", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--plan", default="plan.yaml", help="the plan file (default: plan.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    root = Settings().root
    try:
        plan = load_plan(_resolve(args.plan, root))
        STAGES[args.stage](plan, root)
    except tuple(EXPECTED_ERRORS) as error:
        print(f"stage {args.stage} failed:\n{error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
