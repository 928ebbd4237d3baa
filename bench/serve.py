"""Benchmark: our prediction service vs ``mlflow models serve`` vs a validation-only floor, over loopback.

Prints one JSON object. In one run:

- ``model_call``: ms per call of the served model on batch 1 and 64, in-process: ONNX Runtime (the service's
  runner), the compiled Keras call (``predict_on_batch``, its fallback) and ``model.predict`` (what MLflow's
  pyfunc does per request). Decides the runner, and whether micro-batching could pay.
- ``http``: requests/s, p50 and p99 latency (ms) from ``wrk`` (a C load generator, ``apt-get install wrk``)
  at concurrency 1, 8 and 32 against three servers started here on the same registered model: ``service``
  (``lifecycle serve``, 1 worker), ``mlflow`` (``mlflow models serve --env-manager local``, 1 worker) and
  ``floor`` (``bench/floor.py``: the service's parsing and validation code, trained range included, with no
  model, answer, store or metrics). All three run at once
  and are measured in rounds, one wrk run each per round (service, floor, mlflow), so the machine's drift
  (10-30% over minutes on shared VMs) hits them alike; each figure is the median over the rounds.
- ``ratios``: service / mlflow and service / floor requests/s per concurrency, the median of the per-round
  ratios (runs seconds apart); ``targets`` checks >= 50x mlflow at concurrency 8 and >= 0.7x the floor.

The model: the project's champion when the registry under ``var/`` has one, else (or with ``--scratch``) the
plan's model trained for 2 epochs on sklearn digits and registered in a temporary registry.

Usage: ``python bench/serve.py [--duration 10] [--rounds 3] [--scratch]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.processes import stop_process

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scratch_registry(folder: Path) -> dict[str, str]:
    """Train the plan's model 2 epochs on digits, register it in a registry under ``folder``, champion it."""
    import numpy as np
    from sklearn.datasets import load_digits

    from config.plan import load_plan
    from config.settings import Settings
    from data.dataset import Dataset, DatasetMeta
    from models.build import build_model
    from models.client import artifact_location, tracking_client
    from models.registry import move_alias
    from models.tracking import log_training_run
    from models.train import train_model

    plan = load_plan(ROOT / "plan.yaml")
    plan_path = folder / "plan.yaml"
    shutil.copyfile(ROOT / "plan.yaml", plan_path)
    settings = Settings(root=folder, var_dir=folder / "var", plan_path=plan_path)
    settings.apply_environment()
    digits = load_digits()
    meta = DatasetMeta("sklearn:digits", "image", "classification", plan.data.classes or [], [8, 8])
    features, labels = digits.images.astype("float32"), digits.target.astype("int64")
    ids = np.array([str(i) for i in range(len(labels))])
    train = Dataset(features[:1400], labels[:1400], ids[:1400], meta)
    val = Dataset(features[1400:], labels[1400:], ids[1400:], meta)
    train_section = plan.train.model_copy(update={"epochs": 2})
    result = train_model(lambda: build_model(plan.model, meta, train_section), train, val, train_section,
                         plan.resources)  # fmt: skip
    client = tracking_client(settings)
    version = log_training_run(
        client, plan, result, meta, plan_path=plan_path, root=folder, input_example=features[:3],
        artifact_location=artifact_location(settings),
    )  # fmt: skip
    move_alias(
        client, plan.deploy.model_name, plan.deploy.alias, version.version, action="promote", reason="bench"
    )
    return {
        "LIFECYCLE_ROOT": str(folder),
        "LIFECYCLE_VAR_DIR": str(folder / "var"),
        "LIFECYCLE_PLAN_PATH": str(plan_path),
        "LIFECYCLE_TRACKING_URI": settings.resolved_tracking_uri,
    }


def project_registry() -> dict[str, str] | None:
    """The project's own registry, when its champion exists."""
    from config.plan import load_plan
    from config.settings import Settings
    from models.client import tracking_client
    from models.registry import alias_version

    settings = Settings(root=ROOT)
    if not settings.layout.mlflow_db.is_file():
        return None
    settings.apply_environment()
    plan = load_plan(settings.plan_path)
    if alias_version(tracking_client(settings), plan.deploy.model_name, plan.deploy.alias) is None:
        return None
    return {"LIFECYCLE_ROOT": str(ROOT), "LIFECYCLE_TRACKING_URI": settings.resolved_tracking_uri}


def bench_model_call(instance: list, rounds: int = 300) -> dict:
    """ms per call, batch 1 and 64: ONNX Runtime vs compiled Keras call vs ``model.predict``."""
    import keras
    import numpy as np

    from config.plan import load_plan
    from config.settings import Settings
    from models.client import tracking_client
    from models.export import export_onnx, onnx_session
    from models.registry import resolve_model

    settings = Settings()  # the registry's LIFECYCLE_* variables are in the environment by now
    plan = load_plan(settings.plan_path)
    resolved = resolve_model(tracking_client(settings), plan.deploy.model_name, plan.deploy.alias)
    model = keras.saving.load_model(resolved.model_path, safe_mode=True, compile=False)
    session = onnx_session(export_onnx(model, Path(tempfile.mkdtemp()) / "model.onnx"))
    name = session.get_inputs()[0].name
    results: dict[str, dict[str, float]] = {}
    for batch_size in (1, 64):
        batch = np.repeat(np.asarray([instance], dtype="float32"), batch_size, axis=0)
        calls = {
            "onnxruntime": lambda b=batch: session.run(None, {name: b}),
            "keras_predict_on_batch": lambda b=batch: model.predict_on_batch(b),
            "keras_predict": lambda b=batch: model.predict(b, verbose=0),
        }
        for label, call in calls.items():
            count = rounds if label != "keras_predict" else max(rounds // 10, 10)
            call()
            started = time.perf_counter()
            for _ in range(count):
                call()
            results.setdefault(label, {})[f"ms_batch{batch_size}"] = round(
                (time.perf_counter() - started) / count * 1000, 4
            )
    return results


def floor_environment(model_url: str) -> dict[str, str]:
    """FLOOR_INPUT_SHAPE and FLOOR_RANGE for bench/floor.py, from the service's ``GET /v1/model``."""
    import httpx

    info = httpx.get(model_url, timeout=10).json()
    found = {"FLOOR_INPUT_SHAPE": ",".join(str(size) for size in info["input_shape"])}
    if info["feature_range"]:
        bounds = info["feature_range"]
        found["FLOOR_RANGE"] = f"{bounds['low']},{bounds['high']},{bounds['tolerance']}"
    return found


def start(command: list[str], environment: dict[str, str], ready_url: str, log: Path) -> subprocess.Popen:
    import httpx

    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:3]} exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"{command[:3]} not ready in 240 s: {log.read_text()[-2000:]}")


def run_wrk(url: str, body: str, concurrency: int, duration: int, folder: Path) -> dict:
    """requests/s, p50, p99 (ms) and non-2xx count from one ``wrk`` run."""
    script = folder / "post.lua"
    body_file = folder / "body.json"
    body_file.write_text(body)
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "r")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    completed = subprocess.run(
        ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    )  # fmt: skip
    text = completed.stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {
        "requests_per_s": float(_field(r"Requests/sec:\s+([\d.]+)", text)),
        "p50_ms": _ms(_field(r"\s50%\s+([\d.]+\w+)", text)),
        "p99_ms": _ms(_field(r"\s99%\s+([\d.]+\w+)", text)),
        "requests": int(_field(r"(\d+) requests in", text)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else None,
    }


def _round(urls: dict[str, tuple[str, str]], concurrency: int, seconds: int, folder: Path) -> dict[str, dict]:
    """One wrk run per server, one after the other (seconds apart)."""
    return {name: run_wrk(url, body, concurrency, seconds, folder) for name, (url, body) in urls.items()}


def _median_run(runs: list[dict]) -> dict:
    """Median requests/s, p50 and p99 over the rounds; requests and non-2xx summed; every round's rate."""
    return {
        "requests_per_s": round(statistics.median(run["requests_per_s"] for run in runs), 1),
        "p50_ms": statistics.median(run["p50_ms"] for run in runs),
        "p99_ms": statistics.median(run["p99_ms"] for run in runs),
        "requests": sum(run["requests"] for run in runs),
        "non_2xx": sum(run["non_2xx"] for run in runs),
        "socket_errors": [run["socket_errors"] for run in runs if run["socket_errors"]] or None,
        "rounds_requests_per_s": [run["requests_per_s"] for run in runs],
    }


def _median_ratio(rounds: list[dict[str, dict]], peer: str) -> float:
    """Median over the rounds of the service's requests/s over the peer's, each from runs seconds apart."""
    return statistics.median(
        round_["service"]["requests_per_s"] / max(round_[peer]["requests_per_s"], 1e-9) for round_ in rounds
    )


def _field(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in wrk's report; a clear error when wrk printed something else."""
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"Expected wrk's report to match {pattern!r}. Received:\n{text[-2000:]}")
    return found.group(1)


def _ms(value: str) -> float:
    found = re.match(r"([\d.]+)(\w+)", value)
    if found is None:
        raise RuntimeError(f"Expected a wrk duration like 1.25ms. Received: {value!r}")
    number, unit = found.groups()
    return round(float(number) * {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit], 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per server and concurrency")
    parser.add_argument(
        "--scratch", action="store_true", help="train and register a model in a temp registry"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("bench/serve.py needs wrk on PATH (Debian: apt-get install -y wrk)")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    registry = None if args.scratch else project_registry()
    source = "project champion" if registry else "scratch (plan model, 2 epochs on digits)"
    if registry is None:
        with contextlib.redirect_stdout(sys.stderr):  # training progress: not in the JSON
            registry = scratch_registry(folder)
    os.environ.update(registry)
    from sklearn.datasets import load_digits

    from config.plan import load_plan

    plan = load_plan(registry.get("LIFECYCLE_PLAN_PATH", ROOT / "plan.yaml"))
    instance = load_digits().images[-1].tolist()  # a digit from the end of the set, raw 0..16
    body = json.dumps({"instances": [instance]})
    environment = {
        **os.environ, **registry,
        "LIFECYCLE_STORE_URL": f"sqlite:///{folder / 'predictions.db'}",
        "MLFLOW_TRACKING_URI": registry["LIFECYCLE_TRACKING_URI"],
        "MLFLOW_REGISTRY_URI": registry["LIFECYCLE_TRACKING_URI"],
        # mlflow models serve execs `uvicorn` from PATH
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }  # fmt: skip
    model_uri = f"models:/{plan.deploy.model_name}@{plan.deploy.alias}"
    servers = {
        "service": (
            [str(Path(sys.executable).parent / "lifecycle"), "serve", "--port", "{port}"],
            "/ready", "/v1/predict", body,
        ),
        "mlflow": (
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
             "-p", "{port}", "-h", "127.0.0.1", "-w", "1"],
            "/ping", "/invocations", json.dumps({"inputs": [instance]}),
        ),
        "floor": (
            [sys.executable, "-m", "uvicorn", "--factory", "bench.floor:floor_app_from_environment",
             "--port", "{port}", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
             "--log-level", "warning"],
            "/docs", "/v1/predict", body,
        ),
    }  # fmt: skip
    processes: dict[str, subprocess.Popen] = {}
    urls: dict[str, tuple[str, str]] = {}
    try:
        for name, (command, ready, path, payload) in servers.items():
            port = free_port()
            processes[name] = start(
                [part.replace("{port}", str(port)) for part in command],
                environment,
                f"http://127.0.0.1:{port}{ready}",
                folder / f"{name}.log",
            )
            urls[name] = (f"http://127.0.0.1:{port}{path}", payload)
            run_wrk(*urls[name], 8, 2, folder)  # warm-up
            if name == "service":  # the floor validates against the served model's shape and range
                environment = {**environment, **floor_environment(f"http://127.0.0.1:{port}/v1/model")}
        runs = {c: [_round(urls, c, args.duration, folder) for _ in range(args.rounds)] for c in CONCURRENCY}
    finally:
        for process in processes.values():
            stop_process(process)
    with contextlib.redirect_stdout(sys.stderr):
        model_call = bench_model_call(instance)
    http = {
        name: {f"c{c}": _median_run([one[name] for one in runs[c]]) for c in CONCURRENCY} for name in urls
    }
    ratios = {
        f"c{c}": {
            "service_over_mlflow": round(_median_ratio(runs[c], "mlflow"), 1),
            "service_over_floor": round(_median_ratio(runs[c], "floor"), 3),
        }
        for c in CONCURRENCY
    }
    report = {
        "model": {"uri": model_uri, "source": source},
        "load_generator": "wrk 4.1 (1 thread, keep-alive connections = concurrency)",
        "cores": os.cpu_count(),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "model_call": model_call,
        "http": http,
        "ratios": ratios,
        "targets": {
            "service_over_mlflow_c8_at_least_50": ratios["c8"]["service_over_mlflow"] >= 50,
            "service_over_floor_at_least_0.7": {c: r["service_over_floor"] >= 0.7 for c, r in ratios.items()},
        },
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
