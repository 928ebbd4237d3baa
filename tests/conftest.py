"""Shared test set-up: quiet, offline tools, and TensorFlow imported once per session."""

from __future__ import annotations

import os

# Before any tool is imported: no telemetry, no network, quiet TensorFlow, Keras on TensorFlow.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
