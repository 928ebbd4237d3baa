"""Where everything lives in a project: one ``ProjectLayout`` from one root, so no path is spelled twice.

Two kinds of place:

- **Versioned by DVC** (``data/``, ``artifacts/``, ``reports/``): ``dvc.yaml`` names the same paths, so they
  are also plain relative constants here (a test checks the two agree). Messages name files by these relative
  paths (``data/prepared/test.npz``), the same words a user sees in ``dvc.yaml`` and ``dvc status``.
- **Runtime state** under ``var/`` (git-ignored): the embedded MLflow store, Prefect's home, the prediction
  store, the monitor's reports and the default DVC remote. ``Settings`` can point each elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The plan is also DVC's params file; the stages read it from the project root.
PLAN_FILE = Path("plan.yaml")
DVC_FILE = Path("dvc.yaml")
DVC_LOCK = Path("dvc.lock")
DVC_CACHE = Path(".dvc/cache")

# Stage outputs (dvc.yaml's outs), in stage order.
RAW_DIR = Path("data/raw")  # collect
LABELED_DIR = Path("data/labeled")  # label
PREPARED_DIR = Path("data/prepared")  # prepare
FEEDBACK_DIR = Path("data/feedback")  # labeled production samples, `dvc add`-ed; read by collect
MODEL_FILE = Path("artifacts/model.keras")  # train: the registered .keras file (same sha256)
TRAIN_RECORD = Path("artifacts/train.json")  # train: run id, model name, version, sha256, ...
REPORTS_DIR = Path("reports")
TRAIN_METRICS = REPORTS_DIR / "train_metrics.json"  # train (DVC metrics)
HISTORY_CSV = REPORTS_DIR / "history.csv"  # train (DVC plots)
TEST_METRICS = REPORTS_DIR / "metrics.json"  # evaluate (DVC metrics)
CONFUSION_CSV = REPORTS_DIR / "confusion.csv"  # evaluate (DVC plots)
TEST_PREDICTIONS = REPORTS_DIR / "predictions_test.npz"  # evaluate: what the gate compares row by row

# Inside a dataset folder: <name>.npz beside meta.json (see data.dataset).
SAMPLES = "samples"  # the raw and labeled sets
SPLITS = ("train", "val", "test")
REFERENCE = "reference"  # the monitoring reference sample, drawn from train
META_FILE = "meta.json"


@dataclass(frozen=True)
class ProjectLayout:
    """Every path of one project, absolute.

    Args:
        root: the project root (plan.yaml, dvc.yaml, data/, ...).
        var: runtime state; default ``<root>/var``.
    """

    root: Path
    var: Path

    @classmethod
    def at(cls, root: Path, var: Path | None = None) -> ProjectLayout:
        """The layout of the project at ``root`` (``var`` defaults to ``<root>/var``)."""
        root = Path(root).resolve()
        return cls(root, Path(var).resolve() if var is not None else root / "var")

    def relative(self, path: Path) -> str:
        """``path`` as the project names it (relative to the root when inside it), for messages."""
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    # --- versioned by DVC -----------------------------------------------------------------------------------

    @property
    def plan_file(self) -> Path:
        return self.root / PLAN_FILE

    @property
    def dvc_file(self) -> Path:
        return self.root / DVC_FILE

    @property
    def dvc_lock(self) -> Path:
        return self.root / DVC_LOCK

    @property
    def raw_dir(self) -> Path:
        return self.root / RAW_DIR

    @property
    def labeled_dir(self) -> Path:
        return self.root / LABELED_DIR

    @property
    def prepared_dir(self) -> Path:
        return self.root / PREPARED_DIR

    @property
    def feedback_dir(self) -> Path:
        return self.root / FEEDBACK_DIR

    @property
    def model_file(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def train_record(self) -> Path:
        return self.root / TRAIN_RECORD

    @property
    def reports_dir(self) -> Path:
        return self.root / REPORTS_DIR

    @property
    def train_metrics(self) -> Path:
        return self.root / TRAIN_METRICS

    @property
    def history_csv(self) -> Path:
        return self.root / HISTORY_CSV

    @property
    def test_metrics(self) -> Path:
        return self.root / TEST_METRICS

    @property
    def test_predictions(self) -> Path:
        return self.root / TEST_PREDICTIONS

    @property
    def dvc_cache_dirs(self) -> tuple[Path, ...]:
        """Where DVC keeps file contents by md5: the project's cache (DVC 3, then 2 layout), then the default
        local remote."""
        return (self.root / DVC_CACHE / "files/md5", self.root / DVC_CACHE, self.dvc_remote / "files/md5")

    # --- runtime state under var/ ---------------------------------------------------------------------------

    @property
    def mlflow_db(self) -> Path:
        return self.var / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.var / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.var / "prefect"

    @property
    def predictions_db(self) -> Path:
        return self.var / "predictions.db"

    @property
    def serving_downloads(self) -> Path:
        """Where ``lifecycle serve`` downloads the versions it serves (one folder per version)."""
        return self.var / "serving"

    @property
    def monitor_state(self) -> Path:
        return self.var / "monitoring" / "state.json"

    @property
    def monitor_reports(self) -> Path:
        """One folder per drift check, named by its UTC time."""
        return self.var / "reports"

    @property
    def labeling_queues(self) -> Path:
        """One folder per labeling queue the monitor exports, named by its UTC time."""
        return self.var / "labeling"

    @property
    def dvc_remote(self) -> Path:
        """The default DVC remote (``.dvc/config``: ``../var/dvc-remote``)."""
        return self.root / "var" / "dvc-remote"
