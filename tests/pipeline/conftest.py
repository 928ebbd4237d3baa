"""A tiny real DVC project: git + dvc init, two stages run by this interpreter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import init_git_dvc

STAGE_SCRIPT = """\
import pathlib, sys
import numpy as np

stage = sys.argv[1]
out = pathlib.Path({"make": "data/made", "check": "data/checked"}[stage])
if stage == "check" and pathlib.Path("BAD").exists():
    print("data/made/samples.npz: rows 3, 7: NaN in features (rule: values must be finite)", file=sys.stderr)
    sys.exit(1)
with open("runs.log", "a") as runs:
    runs.write(stage + "\\n")
out.mkdir(parents=True, exist_ok=True)
np.savez(out / "samples.npz", features=np.zeros((12, 2)), labels=np.arange(12))
"""

DVC_YAML = """\
stages:
  make:
    cmd: python stage.py make
    deps: [stage.py]
    params: [{plan.yaml: [data.source]}]
    outs: [data/made]
  check:
    cmd: python stage.py check
    deps: [stage.py, data/made]
    outs:
      - data/checked:
          cache: true
"""


@pytest.fixture(scope="session")
def dvc_project_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "project"
    root.mkdir()
    (root / "stage.py").write_text(STAGE_SCRIPT)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "plan.yaml").write_text((Path(__file__).resolve().parents[2] / "plan.yaml").read_text())
    return init_git_dvc(root, project_remote=False)


@pytest.fixture
def dvc_project(tmp_path: Path, dvc_project_template: Path) -> Path:
    """A fresh copy of the template project (git + DVC initialised once per session)."""
    root = tmp_path / "project"
    shutil.copytree(dvc_project_template, root)
    return root
