"""The stage shells DVC calls: ``python -m pipeline.stages <stage> --plan plan.yaml``.

Each shell reads the plan and its input files, calls one domain function, and writes its outputs (the
paths are ``config.layout``'s, the ones dvc.yaml names). A stage that meets bad data exits with status 2
and the error (file, samples, rule) on stderr, no traceback, and DVC stops the pipeline there.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from config.layout import LABELED_DIR, PREPARED_DIR, RAW_DIR, SAMPLES, SPLITS, ProjectLayout
from config.plan import Plan, PlanError, load_plan
from config.settings import Settings
from data.dataset import MissingInputError, load_stage_output
from data.naming import SourceError
from data.validate import DataValidationError
from models.errors import AcceleratorError, ModelBuildError  # light: no Keras import
from pipeline.outputs import stage_spec
from pipeline.stage_files import TrainRecord, write_json

log = logging.getLogger("lifecycle.stages")

LABELING_REPORT = "labeling_report.json"
PREPARE_REPORT = "prepare_report.json"


def collect_stage(plan: Plan, settings: Settings) -> None:
    """Source -> ``data/raw/samples.npz`` + ``meta.json``: every sample, labels -1 where unknown."""
    from data.collect import collect

    layout = settings.layout
    _warn_undeclared("collect", _source_paths(plan), layout)
    file = (RAW_DIR / f"{SAMPLES}.npz").as_posix()
    dataset = collect(plan.data, layout, file)
    dataset.save(layout.raw_dir, SAMPLES)
    labeled = int((dataset.labels >= 0).sum()) if plan.data.task == "classification" else len(dataset)
    log.info("collect: %d samples (%d labeled) from %s -> %s", len(dataset), labeled, plan.data.source, file)


def label_stage(plan: Plan, settings: Settings) -> None:
    """Raw + label files -> ``data/labeled`` (labeled set, report) and the queue of unlabeled samples."""
    from data.label import label_dataset
    from data.labelfiles import export_queue, read_annotations

    layout = settings.layout
    labeling = plan.data.labeling
    queue_dir = _resolve(labeling.queue_dir, layout.root)
    if not queue_dir.resolve().is_relative_to(layout.labeled_dir.resolve()):
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
    _warn_undeclared("label", labeling.annotations, layout)
    annotations = [
        a for name in labeling.annotations for a in read_annotations(_resolve(name, layout.root), name)
    ]
    raw = load_stage_output(layout.raw_dir, SAMPLES, "collect", RAW_DIR.as_posix())
    file = (LABELED_DIR / f"{SAMPLES}.npz").as_posix()
    result = label_dataset(raw, annotations, plan.data, file)
    result.labeled.save(layout.labeled_dir, SAMPLES)
    image_dir = plan.data.source_arg if plan.data.source_kind == "images" else None
    export_queue(result.queue, queue_dir, image_dir)
    write_json(layout.labeled_dir / LABELING_REPORT, result.report)
    log.info(
        "label: %d labeled, %d queued for labeling in %s; %d duplicates dropped, %d ties",
        len(result.labeled),
        len(result.queue),
        labeling.queue_dir,
        result.report["duplicates_dropped"]["samples"],
        len(result.report["ties_left_unlabeled"]),
    )


def prepare_stage(plan: Plan, settings: Settings) -> None:
    """Labeled -> ``data/prepared/{train,val,test,reference}.npz``, meta with scaling, prepare_report.json."""
    from data.prepare import prepare
    from data.validate import validate_dataset, validate_splits

    layout = settings.layout
    labeled = load_stage_output(layout.labeled_dir, SAMPLES, "label", LABELED_DIR.as_posix())
    validate_dataset(labeled, plan.data, (LABELED_DIR / f"{SAMPLES}.npz").as_posix(), labeled=True)
    result = prepare(labeled, plan.data, PREPARED_DIR.as_posix())
    validate_splits({name: result.splits[name] for name in SPLITS}, PREPARED_DIR.as_posix())
    for name, part in result.splits.items():
        part.save(layout.prepared_dir, name)
    write_json(layout.prepared_dir / PREPARE_REPORT, result.report)
    sizes = ", ".join(f"{name} {n}" for name, n in result.report["sizes"].items())
    log.info("prepare: %s (seed %d, scaling %s)", sizes, plan.data.split.seed, plan.data.scaling)


def train_stage(plan: Plan, settings: Settings) -> None:
    """``data/prepared`` -> a trained model, logged to MLflow and registered as a new version.

    Writes ``artifacts/model.keras`` (the registered file, same sha256), ``artifacts/train.json``,
    ``reports/train_metrics.json`` (DVC metrics) and ``reports/history.csv`` (DVC plots, one row per epoch).
    """
    from models.build import build_model
    from models.client import artifact_location, tracking_client
    from models.run_artifacts import history_rows
    from models.tracking import log_training_run
    from models.train import train_model

    layout = settings.layout
    train, val = (
        load_stage_output(layout.prepared_dir, name, "prepare", PREPARED_DIR.as_posix())
        for name in ("train", "val")
    )
    result = train_model(
        lambda: build_model(plan.model, train.meta, plan.train), train, val, plan.train, plan.resources
    )
    plan_file = settings.plan_path if _is_plan_file(settings.plan_path, plan) else None
    trained = log_training_run(
        tracking_client(settings), plan, result, train.meta, plan_path=plan_file, root=layout.root,
        input_example=train.features[:5], artifact_location=artifact_location(settings),
        model_dst=layout.model_file,
    )  # fmt: skip
    TrainRecord(
        run_id=trained.run_id, model_name=trained.model_name, version=trained.version,
        model_uri=trained.model_uri, sha256=trained.sha256, accelerator=result.accelerator,
        epochs_run=result.epochs_run, stopped_by=result.stopped_by, best_epoch=result.best_epoch,
        seconds=round(result.seconds, 3), samples_per_second=round(result.samples_per_second, 1),
        plan_hash=plan.digest(),
    ).write(layout)  # fmt: skip
    write_json(layout.train_metrics, {**result.final_metrics, "epochs_run": result.epochs_run})
    rows = history_rows(result.history)
    with layout.history_csv.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]) if rows else ["epoch"])
        writer.writeheader()
        writer.writerows(rows)
    log.info(
        "train: %d epochs (%s) on %s in %.1f s; val accuracy %s; registered %s version %s (run %s)",
        result.epochs_run, result.stopped_by, result.accelerator, result.seconds,
        result.final_metrics.get("final_val_accuracy", "n/a"), trained.model_name, trained.version,
        trained.run_id,
    )  # fmt: skip


def evaluate_stage(plan: Plan, settings: Settings) -> None:
    """The trained model on the test split -> ``reports/metrics.json`` (DVC metrics: test metrics, latency,
    size, per_class), ``reports/confusion.csv`` (DVC plots) and ``reports/predictions_test.npz`` (the test
    outputs the gate compares with the champion's, row by row)."""
    import keras

    from models.evaluate import evaluate_model, write_evaluation

    layout = settings.layout
    test = load_stage_output(layout.prepared_dir, "test", "prepare", PREPARED_DIR.as_posix())
    model = keras.saving.load_model(layout.model_file)
    metrics, outputs = evaluate_model(model, test, layout.model_file)
    classes = test.meta.classes if test.meta.task == "classification" else []
    write_evaluation(
        layout.reports_dir, metrics, classes=classes, y_true=test.labels, outputs=outputs,
        sample_ids=test.sample_ids,
    )  # fmt: skip
    headline = {k: round(v, 4) for k, v in metrics.items() if k in ("accuracy", "macro_f1", "mae", "mse")}
    log.info(
        "evaluate: %d test samples %s; p50 latency %.3f ms (batch 1); %.3f MB",
        len(test), headline, metrics["latency_p50_ms_batch1"], metrics["model_size_mb"],
    )  # fmt: skip


StageFunction = Callable[[Plan, Settings], None]
STAGES: dict[str, StageFunction] = {
    "collect": collect_stage,
    "label": label_stage,
    "prepare": prepare_stage,
    "train": train_stage,
    "evaluate": evaluate_stage,
}
# Errors a stage reports as a message (exit 2) rather than a traceback.
EXPECTED_ERRORS = (
    PlanError,
    SourceError,
    DataValidationError,
    MissingInputError,
    ModelBuildError,
    AcceleratorError,
)


def _is_plan_file(path: Path, plan: Plan) -> bool:
    """Whether ``path`` holds this very plan (so the run logs the file itself, comments and all)."""
    try:
        return path.is_file() and load_plan(path).digest() == plan.digest()
    except PlanError:
        return False


def _resolve(path: str, root: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate


def _source_paths(plan: Plan) -> list[str]:
    return [plan.data.source_arg] if plan.data.source_kind in ("images", "table") else []


def _warn_undeclared(stage: str, paths: list[str], layout: ProjectLayout) -> None:
    """Warn about inputs a stage reads that dvc.yaml doesn't list: DVC won't re-run it when they change."""
    if not paths or not layout.dvc_file.is_file():
        return
    deps = [
        _resolve(str(dep), layout.root).resolve()
        for dep in stage_spec(layout.dvc_file, stage).get("deps") or []
    ]
    for path in paths:
        target = _resolve(path, layout.root).resolve()
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
    try:
        settings = Settings()
        settings = settings.model_copy(update={"plan_path": _resolve(args.plan, settings.root)})
        settings.apply_environment()
        plan = load_plan(settings.plan_path)
        STAGES[args.stage](plan, settings)
    except ValidationError as error:  # a LIFECYCLE_* setting
        print(f"stage {args.stage} failed:\nsettings: {error}", file=sys.stderr)
        return 2
    except EXPECTED_ERRORS as error:
        print(f"stage {args.stage} failed:\n{error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
