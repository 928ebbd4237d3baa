"""The model behind the service: load a verified version, call it fast, follow the registry, swap atomically.

No web code here (the routes import this, never the reverse). ``Predictor.current`` is one reference to an
immutable ``ServedModel``; a request reads it once and finishes on that model even if a reload swaps in
another meanwhile. A reload loads, verifies and warms the new version beside the old one, then swaps with a
single assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from data.dataset import DatasetMeta
from serving.inputs import FeatureRange, trained_range, validate_instances

log = logging.getLogger("lifecycle.serving")

BACKENDS = ("auto", "onnx", "keras")


class ModelLoadError(RuntimeError):
    """A version that can't be served (missing, hash mismatch, unsafe or broken file); says why."""


@dataclass(frozen=True)
class ServedModel:
    """One loaded, verified, warmed model version. Immutable: swapping replaces the whole object."""

    name: str
    version: str
    run_id: str
    alias: str | None
    sha256: str
    meta: DatasetMeta
    metrics: dict[str, float]
    input_example: np.ndarray
    backend: str  # "onnx" or "keras"
    call: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    feature_range: FeatureRange | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def regression(self) -> bool:
        return self.meta.task == "regression"

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        """Raw model outputs for a validated float32 batch."""
        return self.call(batch)


class ModelSource(Protocol):
    """Where versions come from: the registry, in the service; a fixed local file in some tests."""

    def current_version(self) -> str | None: ...

    def fetch(self, version: str) -> Any: ...  # -> models.registry.ResolvedModel


def load_served_model(
    resolved: Any,
    *,
    backend: str = "auto",
    work_dir: Path | None = None,
    reference: np.ndarray | None = None,
    range_tolerance: float = 0.1,
) -> ServedModel:
    """Load a resolved version: re-check its sha256, load the native .keras file with safe mode, build the
    fast runner (ONNX Runtime, or the compiled Keras call as fallback), and warm it with the input example.

    Args:
        resolved: a ``models.registry.ResolvedModel`` (hash-verified file, meta, input example, metrics).
        backend: "onnx", "keras", or "auto" (ONNX, falling back to Keras if export or its check fails).
        work_dir: where the ONNX export is written; None for beside the .keras file.
        reference: reference-sample features, for the trained input range.
        range_tolerance: share of the trained span allowed beyond it.

    Returns:
        The model, ready to answer.

    Raises:
        ModelLoadError: the file changed since it was verified, or can't be loaded safely.
    """
    import keras

    from models.lineage import file_sha256

    if backend not in BACKENDS:
        raise ModelLoadError(f"Expected a backend in {BACKENDS}. Received: {backend!r}.")
    path = Path(resolved.model_path)
    if not path.is_file() or file_sha256(path) != resolved.sha256:
        raise ModelLoadError(
            f"{resolved.name} v{resolved.version}: {path} does not hash to the registry's {resolved.sha256}"
        )
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - any load failure: report, keep serving the old one
        raise ModelLoadError(
            f"{resolved.name} v{resolved.version}: can't load {path} safely: {error}"
        ) from None
    example = np.asarray(resolved.input_example, dtype="float32")
    if example.ndim == len(resolved.meta.input_shape):
        example = example[None]
    reference_outputs = keras.ops.convert_to_numpy(model(example, training=False))
    call, chosen = _runner(model, backend, work_dir or path.parent, example, reference_outputs)
    for _ in range(3):  # warm: first calls allocate and trace
        call(example)
        call(example[:1])
    log.info("loaded %s v%s (%s backend)", resolved.name, resolved.version, chosen)
    return ServedModel(
        name=resolved.name,
        version=str(resolved.version),
        run_id=resolved.run_id,
        alias=resolved.alias,
        sha256=resolved.sha256,
        meta=resolved.meta,
        metrics=dict(resolved.metrics),
        input_example=example,
        backend=chosen,
        call=call,
        feature_range=trained_range(resolved.meta, reference, tolerance=range_tolerance),
    )


def _runner(
    model: Any, backend: str, work_dir: Path, example: np.ndarray, expected: np.ndarray
) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    from models.export import check_onnx_matches, export_onnx, onnx_session

    if backend in ("auto", "onnx"):
        try:
            session = onnx_session(export_onnx(model, work_dir / "model.onnx"))
            check_onnx_matches(session, expected, example)
            input_name = session.get_inputs()[0].name
            output_names = [session.get_outputs()[0].name]

            def call_onnx(batch: np.ndarray) -> np.ndarray:
                return session.run(output_names, {input_name: batch})[0]

            return call_onnx, "onnx"
        except Exception as error:  # noqa: BLE001 - export, ORT load or the output check: fall back
            if backend == "onnx":
                raise ModelLoadError(str(error)) from None
            log.warning("ONNX unavailable, serving with the compiled Keras call: %s", error)
    lock = threading.Lock()  # one compiled Keras call at a time: its state is not documented thread-safe
    predict_on_batch = model.predict_on_batch  # the compiled predict function, without predict()'s overhead

    def call_keras(batch: np.ndarray) -> np.ndarray:
        with lock:
            return np.asarray(predict_on_batch(batch))

    return call_keras, "keras"


class Predictor:
    """Holds the served model and follows its source (the registry alias).

    Args:
        source: where versions come from.
        loader: turns a resolved version into a ``ServedModel`` (``load_served_model`` with settings bound).
        max_batch_size: the largest batch one request may send.
    """

    def __init__(self, source: ModelSource, loader: Callable[[Any], ServedModel], *, max_batch_size: int):
        self.source = source
        self.loader = loader
        self.max_batch_size = max_batch_size
        self.current: ServedModel | None = None
        self.last_error: str | None = None
        self._reload_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.current is not None

    def refresh(self) -> bool:
        """Check the source; when it points at another version, load it beside the current one and swap.

        A failed load keeps the current model and records the error in ``last_error``. Concurrent calls
        wait for each other instead of loading the same version twice.

        Returns:
            True when a new version was swapped in.
        """
        with self._reload_lock:
            try:
                version = self.source.current_version()
                current = self.current
                if version is None or (current is not None and current.version == version):
                    if version is None and current is None:
                        self.last_error = "the registry has no version under the alias yet"
                    return False
                served = self.loader(self.source.fetch(version))
            except Exception as error:  # noqa: BLE001 - a broken new version must not take the service down
                self.last_error = f"{type(error).__name__}: {error}"
                log.error("reload failed, still serving %s: %s", self.version, self.last_error)
                return False
            self.current = served  # the swap: one reference assignment
            self.last_error = None
            log.info("serving %s v%s", served.name, served.version)
            return True

    @property
    def version(self) -> str | None:
        current = self.current
        return None if current is None else current.version

    def validate(self, instances: Any, model: ServedModel) -> np.ndarray:
        """A checked float32 batch for ``model``; raises ``InputError`` with what was wrong."""
        return validate_instances(instances, model.meta.input_shape, self.max_batch_size, model.feature_range)


@dataclass(frozen=True)
class RegistrySource:
    """Versions of a registered model: the one an alias points at, or one fixed version.

    Args:
        client: the project's ``MlflowClient``.
        name: registered model name.
        alias: the alias to follow (None with a fixed ``version``).
        version: a fixed version instead of an alias.
        download_dir: where versions are downloaded (one folder per version).
    """

    client: Any
    name: str
    alias: str | None = "champion"
    version: str | None = None
    download_dir: Path | None = None

    def current_version(self) -> str | None:
        from models.registry import alias_version

        if self.version is not None:
            return self.version
        return alias_version(self.client, self.name, self.alias or "champion")

    def fetch(self, version: str) -> Any:
        from dataclasses import replace

        from models.registry import resolve_model

        dst = None if self.download_dir is None else self.download_dir / self.name / f"v{version}"
        resolved = resolve_model(self.client, self.name, version=version, dst=dst)
        return replace(resolved, alias=self.alias if self.version is None else None)


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` as (name, alias, version).

    Raises:
        ModelLoadError: any other form.
    """
    body = uri.removeprefix("models:/") if uri.startswith("models:/") else None
    if body:
        if "@" in body and "/" not in body:
            name, _, alias = body.partition("@")
            if name and alias:
                return name, alias, None
        name, _, version = body.partition("/")
        if name and version.isdigit():
            return name, None, version
    raise ModelLoadError(
        f"Expected a model URI models:/<name>@<alias> or models:/<name>/<version>. Received: {uri!r}."
    )
