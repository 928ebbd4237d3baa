"""The project layout agrees with dvc.yaml: the stage outputs the code writes are the outs DVC tracks."""

from __future__ import annotations

from pathlib import Path

from config import layout
from pipeline.outputs import stage_outs

ROOT = Path(__file__).resolve().parents[2]


def test_every_stage_output_in_dvc_yaml_is_a_layout_path() -> None:
    dvc_file = ROOT / layout.DVC_FILE
    declared = {
        stage: set(stage_outs(dvc_file, stage))
        for stage in ("collect", "label", "prepare", "train", "evaluate")
    }

    assert declared["collect"] == {layout.RAW_DIR.as_posix()}
    assert declared["label"] == {layout.LABELED_DIR.as_posix()}
    assert declared["prepare"] == {layout.PREPARED_DIR.as_posix()}
    assert declared["train"] == {
        p.as_posix()
        for p in (layout.MODEL_FILE, layout.TRAIN_RECORD, layout.TRAIN_METRICS, layout.HISTORY_CSV)
    }
    assert declared["evaluate"] == {
        p.as_posix() for p in (layout.TEST_PREDICTIONS, layout.TEST_METRICS, layout.CONFUSION_CSV)
    }


def test_collect_depends_on_the_feedback_folder() -> None:
    from pipeline.outputs import stage_spec

    assert layout.FEEDBACK_DIR.as_posix() in stage_spec(ROOT / layout.DVC_FILE, "collect")["deps"]
