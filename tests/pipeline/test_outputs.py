"""Stage outs from dvc.yaml, described as files with sizes and counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.outputs import describe_outputs, human_size, stage_outs


def test_stage_outs_reads_paths_and_mappings(dvc_project: Path) -> None:
    assert stage_outs(dvc_project / "dvc.yaml", "make") == ["data/made"]
    assert stage_outs(dvc_project / "dvc.yaml", "check") == ["data/checked"]
    assert stage_outs(dvc_project / "dvc.yaml", "absent") == []
    assert stage_outs(dvc_project / "nowhere/dvc.yaml", "make") == []


def test_describe_outputs_lists_files_with_what_they_hold(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    np.savez(tmp_path / "out" / "train.npz", features=np.zeros((5, 2)), labels=np.arange(5))
    (tmp_path / "out" / "queue.csv").write_text("sample_id,label\na,\nb,\n")
    (tmp_path / "out" / "tasks.json").write_text(json.dumps([{"id": 1}, {"id": 2}, {"id": 3}]))
    (tmp_path / "report.json").write_text("{}")

    outputs = describe_outputs(tmp_path, ["out", "report.json", "missing"])

    assert [(o.path, o.detail) for o in outputs] == [
        ("out/queue.csv", "2 rows"),
        ("out/tasks.json", "3 items"),
        ("out/train.npz", "5 samples"),
        ("report.json", ""),
    ]
    assert outputs[3].size_bytes == 2


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KB"), (5 * 1024**2, "5.0 MB"), (3 * 1024**4, "3072.0 GB")],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text
