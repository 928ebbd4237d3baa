"""Benchmark: one monitor check on 10k and 100k stored predictions, ours vs Evidently on the raw pixels.

Prints one JSON object. The default image model (the plan's MLP on sklearn digits, 8x8 = 64 pixels) is
trained for a few epochs; a real prediction store (SQLite under a temp dir, written through
``PredictionWriter``) is filled with N predictions of digits drawn with replacement (in-distribution
traffic). The reference is 500 shuffled digits. Each check reads the window back from the store, builds its
columns and runs Evidently (``detect_drift``) against the reference:

- ``ours``: the monitoring frame (5 intensity statistics, ``embedding_components`` PCA components of the
  penultimate layer, predicted class, confidence: 10 columns) and ``detect_drift``.
- ``raw_pixels``: the same window as the 64 raw pixel columns plus predicted class and confidence (66
  columns) through the same ``detect_drift``: what monitoring raw inputs would cost. For 28x28 images it
  would be 784 columns.

Both sides include reading the window from the store; ``read_seconds`` is reported apart too.

Usage: ``python bench/drift.py [--sizes 10000 100000]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SIZE = 500


def trained_model(images: np.ndarray, labels: np.ndarray):
    import keras

    from config.plan import load_plan
    from data.dataset import DatasetMeta
    from models.build import build_model

    plan = load_plan(ROOT / "plan.yaml")
    meta = DatasetMeta(
        source="sklearn:digits", kind="image", task="classification",
        classes=[str(i) for i in range(10)], input_shape=[8, 8],
    )  # fmt: skip
    keras.utils.set_random_seed(0)
    model = build_model(plan.model, meta, plan.train)
    model.fit(images, labels, epochs=5, batch_size=64, verbose=0)
    return model, meta, plan


def fill_store(url: str, model, images: np.ndarray, n: int, seed: int) -> float:
    """N predictions of noisy digits through the store's writer; returns the seconds it took."""
    from models.evaluate import predict_outputs
    from serving.store.records import PredictionRecord
    from serving.store.writer import PredictionWriter

    rng = np.random.default_rng(seed)
    inputs = images[rng.integers(0, len(images), n)]  # in-distribution traffic
    outputs = predict_outputs(model, inputs, batch_size=1024)
    started = time.perf_counter()
    writer = PredictionWriter(url, queue_size=20_000)
    records = [
        PredictionRecord(f"b{i}", "1", inputs[i], int(outputs[i].argmax()), float(outputs[i].max()))
        for i in range(n)
    ]
    writer.record_predictions(records)
    writer.close()
    return time.perf_counter() - started


def read_window(url: str, n: int):
    from serving.store.reader import PredictionReader

    with PredictionReader(url) as store:
        return store.window(n)


def check_ours(url: str, n: int, champion, policy) -> dict:
    from monitoring.check import window_frame
    from monitoring.drift import detect_drift

    started = time.perf_counter()
    window = read_window(url, n)
    read = time.perf_counter() - started
    frame = window_frame(champion, window)
    features = time.perf_counter() - started - read
    result = detect_drift(champion.reference, frame, policy, labels=None)
    total = time.perf_counter() - started
    return {
        "seconds": round(total, 3), "read_seconds": round(read, 3), "features_seconds": round(features, 3),
        "evidently_seconds": round(result.seconds, 3), "columns": len(frame.columns),
        "drift_share": round(result.share, 4),
    }  # fmt: skip


def pixel_frame(images: np.ndarray, predicted: np.ndarray, confidence: np.ndarray):
    import pandas as pd

    flat = images.reshape(len(images), -1).astype("float64")
    frame = pd.DataFrame(flat, columns=[f"pixel_{j}" for j in range(flat.shape[1])])
    frame["predicted"] = np.asarray(predicted).astype("int64")
    frame["confidence"] = np.asarray(confidence, dtype="float64")
    return frame


def check_raw(url: str, n: int, reference_frame, policy) -> dict:
    from monitoring.drift import detect_drift

    started = time.perf_counter()
    window = read_window(url, n)
    read = time.perf_counter() - started
    frame = pixel_frame(np.stack(window["features"].to_list()), window["predicted"], window["confidence"])
    result = detect_drift(reference_frame, frame, policy, labels=None)
    total = time.perf_counter() - started
    return {
        "seconds": round(total, 3), "read_seconds": round(read, 3),
        "evidently_seconds": round(result.seconds, 3), "columns": len(frame.columns),
        "drift_share": round(result.share, 4),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    from sklearn.datasets import load_digits

    from config.plan import MonitoringSection
    from models.evaluate import predict_outputs as model_outputs
    from monitoring.check import Champion
    from monitoring.features import build_frame, embedding_function, fit_features, predict_outputs

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))  # sklearn's order groups writers
    images, labels = digits.images[order].astype("float32"), digits.target[order].astype("int64")
    model, meta, plan = trained_model(images, labels)
    reference = images[:REFERENCE_SIZE]
    embed = embedding_function(model)
    spec = fit_features(meta, reference, components=plan.monitoring.embedding_components, embed=embed)
    outputs = predict_outputs(lambda x: model_outputs(model, x, batch_size=1024), reference, "classification")
    champion = Champion(
        "bench", "1", model, meta, spec, build_frame(spec, reference, *outputs, embed=embed), "bench", embed
    )
    raw_reference = pixel_frame(reference, *outputs)
    from monitoring.drift import detect_drift

    warm = MonitoringSection(window=200, min_samples=100)  # imports and first-call costs, for neither side
    detect_drift(champion.reference, champion.reference.iloc[:200], warm)
    detect_drift(raw_reference, raw_reference.iloc[:200], warm)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            url = f"sqlite:///{Path(tmp) / f'store-{n}.db'}"
            write = fill_store(url, model, images, n, seed=n)
            read_window(url, n)  # the first read warms the page cache: not charged to either side
            policy = MonitoringSection(window=n, min_samples=100)
            ours = check_ours(url, n, champion, policy)
            raw = check_raw(url, n, raw_reference, policy)
            results.append(
                {
                    "predictions": n,
                    "store_write_seconds": round(write, 3),
                    "ours": ours,
                    "raw_pixels": raw,
                    "speedup_total": round(raw["seconds"] / ours["seconds"], 2),
                    "speedup_evidently": round(raw["evidently_seconds"] / ours["evidently_seconds"], 2),
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr)
    print(
        json.dumps(
            {
                "benchmark": "one monitor check: our compact features vs Evidently on raw pixels",
                "model": "plan.yaml MLP on sklearn digits (8x8 = 64 raw pixel columns)",
                "reference_size": REFERENCE_SIZE,
                "cpu_count": os.cpu_count(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
