"""Benchmark: our training step vs plain ``model.fit`` on numpy, and the lifecycle flow's orchestration cost.

Prints one JSON object. Two parts:

- ``input_pipeline``: samples/s of ``model.fit`` fed by our tf.data pipeline (``models.train.make_dataset``:
  cache, seeded shuffle, batch, prefetch) vs ``model.fit(x, y)`` on numpy arrays: same model (the plan's),
  same data (sklearn digits, no network), same batch size and epochs, alternated in one process so machine
  load hits both alike. Each side is timed over ``--rounds`` calls of ``--epochs`` epochs after a warm-up
  call (tracing), and the median is reported.
- ``flow`` (``--flow``): the ``lifecycle`` flow's wall time on a fresh clone of this repository vs the sum of
  its stages' own times (each ``python -m pipeline.stages <stage>`` run directly, in a second fresh clone).
  The difference is what DVC + Prefect + the gate step add.

Usage: ``python bench/train.py [--rounds 7] [--epochs 3] [--flow]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench_input_pipeline(rounds: int, epochs: int) -> dict:
    """Median samples/s of fit on our tf.data pipeline vs fit on numpy arrays (same model, data, batch)."""
    import keras
    from sklearn.datasets import load_digits

    from config.plan import load_plan
    from data.dataset import DatasetMeta
    from models.build import build_model
    from models.train import make_dataset

    digits = load_digits()
    features, labels = digits.images.astype("float32"), digits.target.astype("int32")
    plan = load_plan(ROOT / "plan.yaml")
    meta = DatasetMeta(
        source="sklearn:digits", kind="image", task="classification",
        classes=[str(i) for i in range(10)], input_shape=[8, 8],
    )  # fmt: skip
    batch = plan.train.batch_size
    pipeline = make_dataset(features, labels, batch, shuffle_buffer=plan.train.shuffle_buffer, seed=0)
    runs = {
        "tf_data": lambda model, n: model.fit(pipeline, epochs=n, verbose=0, shuffle=False),
        "numpy_fit": lambda model, n: model.fit(features, labels, batch_size=batch, epochs=n, verbose=0),
    }
    models = {}
    for name in runs:
        keras.utils.set_random_seed(0)
        models[name] = build_model(plan.model, meta, plan.train)
        runs[name](models[name], 1)  # warm-up: tracing and first-epoch caching
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fit in runs.items():
            started = time.perf_counter()
            fit(models[name], epochs)
            rates[name].append(epochs * len(features) / (time.perf_counter() - started))
    ours, plain = statistics.median(rates["tf_data"]), statistics.median(rates["numpy_fit"])
    return {
        "samples": len(features),
        "batch_size": batch,
        "epochs_per_call": epochs,
        "rounds": rounds,
        "tf_data_samples_per_s": round(ours),
        "numpy_fit_samples_per_s": round(plain),
        "speedup": round(ours / plain, 2),
        "tf_data_all_rounds": [round(r) for r in rates["tf_data"]],
        "numpy_fit_all_rounds": [round(r) for r in rates["numpy_fit"]],
    }


def _fresh_clone(parent: Path, name: str) -> Path:
    target = parent / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    return target


def _environment(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["LIFECYCLE_ROOT"] = str(root)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def bench_flow() -> dict:
    """The lifecycle flow's wall time vs the sum of its stages' own times, each on a fresh clone."""
    from pipeline.flows import DATA_STAGES, TRAINING_STAGES

    stages = [*DATA_STAGES, *TRAINING_STAGES]
    flow_script = (
        "import json, sys; from config.settings import Settings; Settings().apply_environment(); "
        "from pipeline.flows import lifecycle; s = lifecycle(plan_path='plan.yaml'); "
        "print(json.dumps({'flow_seconds': s.seconds, 'stages': {r.stage: r.seconds for r in s.stages}}))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        flow_root = _fresh_clone(Path(tmp), "flow")
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", flow_script], cwd=flow_root, env=_environment(flow_root),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        flow_wall = time.perf_counter() - started
        if done.returncode != 0:
            return {"error": "the lifecycle flow failed", "tail": done.stderr[-2000:] + done.stdout[-1000:]}
        inside = json.loads(done.stdout.strip().splitlines()[-1])

        direct_root = _fresh_clone(Path(tmp), "direct")
        own: dict[str, float] = {}
        for stage in stages:
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "pipeline.stages", stage, "--plan", "plan.yaml"], cwd=direct_root,
                env=_environment(direct_root), capture_output=True, text=True, check=True,
            )  # fmt: skip
            own[stage] = round(time.perf_counter() - started, 2)
    total_own = sum(own.values())
    return {
        "stages": stages,
        "flow_wall_seconds": round(flow_wall, 2),
        "flow_reported_seconds": round(inside["flow_seconds"], 2),
        "stage_seconds_in_flow": {k: round(v, 2) for k, v in inside["stages"].items()},
        "stage_seconds_direct": own,
        "sum_of_stages_direct_seconds": round(total_own, 2),
        "orchestration_overhead_seconds": round(flow_wall - total_own, 2),
        "overhead_share": round((flow_wall - total_own) / flow_wall, 3),
        "note": "flow wall includes process start, Prefect ephemeral API, DVC per stage and the gate step",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--flow", action="store_true", help="also time the lifecycle flow (minutes)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    result: dict = {"cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)}
    result["input_pipeline"] = bench_input_pipeline(args.rounds, args.epochs)
    if args.flow:
        result["flow"] = bench_flow()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
