"""Sources: where samples come from, each read into a :class:`~data.dataset.Dataset`.

``load_source(plan.data, root)`` picks the loader from ``data.source``:

- ``sklearn:digits`` (8x8 grey images, values 0..16) and ``sklearn:breast_cancer`` (30 columns, binary),
  bundled with scikit-learn, offline.
- ``keras:mnist`` and ``keras:fashion_mnist``: the files Keras's loaders cache under ``$KERAS_HOME/datasets``
  (default ``~/.keras/datasets``). Offline without them it fails at once, naming the files and where they go.
- ``images:DIR``: one sub-folder per class of PNG/JPEG files; files under ``unlabeled/`` get no label.
- ``table:PATH``: a CSV or Parquet file with a target column; rows with an empty target are unlabeled.

Every sample gets a stable id (the source's own naming), and ``data.max_samples`` caps a source stratified,
with a fixed seed so the cap never depends on ``data.split.seed``.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from config.plan import DataSection
from data.dataset import Dataset, DatasetMeta
from data.naming import SourceError, name_classes

log = logging.getLogger(__name__)

# The cap on a source is drawn with this seed: the same samples for every split seed.
CAP_SEED = 0
# Keras's published sha256 of mnist.npz (keras/src/datasets/mnist.py).
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


def load_source(data: DataSection, root: Path, *, environ: Mapping[str, str] | None = None) -> Dataset:
    """Read every sample of the plan's source.

    Args:
        data: the plan's data section (source, classes, image size, target, max_samples).
        root: the project root; relative source paths are taken from here.
        environ: where ``KERAS_HOME`` is looked up (default ``os.environ``).

    Returns:
        The dataset in source units; labels are ``UNLABELED`` (-1) where unknown (NaN for regression).

    Raises:
        SourceError: missing files, unreadable files, classes that don't fit, a missing Keras cache.
    """
    kind, arg = data.source_kind, data.source_arg
    if data.task == "regression" and kind != "table":
        raise SourceError(f"data.task: regression needs a table: source, got data.source {data.source!r}")
    if kind == "sklearn":
        dataset = _load_sklearn(arg, data)
    elif kind == "keras":
        dataset = _load_keras(arg, data, keras_datasets_dir(os.environ if environ is None else environ))
    elif kind == "images":
        from data.images import load_image_folder

        dataset = load_image_folder(resolve(arg, root), data)
    elif kind == "table":
        from data.tables import load_table

        dataset = load_table(resolve(arg, root), data)
    else:  # the plan schema rejects other kinds; kept for callers that build a DataSection by hand
        raise SourceError(f"data.source: unknown source kind {kind!r}")
    return cap_stratified(dataset, data.max_samples)


def resolve(path: str, root: Path) -> Path:
    """A plan path, taken from the project root when relative."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(root) / candidate


def cap_stratified(dataset: Dataset, cap: int | None) -> Dataset:
    """At most ``cap`` samples, each class (and the unlabeled) keeping its share; original order kept."""
    n = len(dataset)
    if cap is None or n <= cap:
        return dataset
    labels = np.asarray(dataset.labels)
    # Classes for classification; labeled vs not for regression targets.
    strata = np.isnan(labels).astype(np.int64) if dataset.meta.task == "regression" else labels
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    # Largest-remainder allocation: every stratum gets its share of the cap, rounded so they add up.
    quotas = counts * cap / n
    take = np.floor(quotas).astype(int)
    for index in np.argsort(-(quotas - take), kind="stable")[: cap - take.sum()]:
        take[index] += 1
    rng = np.random.default_rng(CAP_SEED)
    chosen = [rng.choice(np.flatnonzero(inverse == i), size=k, replace=False) for i, k in enumerate(take)]
    index = np.sort(np.concatenate(chosen))
    log.info("data.max_samples: kept %d of %d samples, stratified", cap, n)
    return dataset.take(index)


def _load_sklearn(name: str, data: DataSection) -> Dataset:
    from sklearn import datasets

    if name == "digits":
        bunch = datasets.load_digits()
        features = bunch.images.astype(np.float32)  # (n, 8, 8), 0..16
        names, kind, feature_names = [str(c) for c in bunch.target_names], "image", []
    elif name == "breast_cancer":
        bunch = datasets.load_breast_cancer()
        features = bunch.data.astype(np.float32)
        names, kind = [str(c) for c in bunch.target_names], "tabular"
        feature_names = [str(c) for c in bunch.feature_names]
    else:
        raise SourceError(
            f"data.source: expected sklearn:digits or sklearn:breast_cancer, got sklearn:{name}"
        )
    classes, labels = name_classes(names, bunch.target.astype(np.int64), data.classes, data.source)
    ids = np.array([f"{name}-{i:05d}" for i in range(len(features))])
    meta = DatasetMeta(
        source=data.source,
        kind=kind,  # type: ignore[arg-type]
        task="classification",
        classes=classes,
        input_shape=list(features.shape[1:]),
        feature_names=feature_names,
    )
    return Dataset(features, labels, ids, meta)


def keras_datasets_dir(environ: Mapping[str, str]) -> Path:
    """Where Keras's dataset loaders cache files: ``$KERAS_HOME/datasets``, else ``~/.keras/datasets``."""
    home = environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home).expanduser() / "datasets"


def _load_keras(name: str, data: DataSection, cache: Path) -> Dataset:
    """Read Keras's cached dataset files, in the layout and format its loaders use.

    Keras's ``load_data()`` would try to download what is missing (and re-download an ``mnist.npz`` whose
    hash differs from the published one); offline that hangs or fails obscurely, so the cache is checked
    first and read here directly, with the same parsing as Keras's loaders.
    """
    if name == "mnist":
        needed = [cache / "mnist.npz"]
        put = f"put mnist.npz (from {KERAS_BASE_URL}mnist.npz) at {needed[0]}"
    elif name == "fashion_mnist":
        needed = [cache / "fashion-mnist" / fname for fname in FASHION_FILES]
        put = f"put {', '.join(FASHION_FILES)} (from {KERAS_BASE_URL}) in {cache / 'fashion-mnist'}"
    else:
        raise SourceError(f"data.source: expected keras:mnist or keras:fashion_mnist, got keras:{name}")
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise SourceError(
            f"keras:{name} is not in the Keras cache and can't be downloaded offline: missing "
            f"{', '.join(missing)}; {put} (or set KERAS_HOME to the folder that holds datasets/)"
        )
    try:
        if name == "mnist":
            (x_train, y_train), (x_test, y_test) = _read_mnist_npz(needed[0])
            names = [str(i) for i in range(10)]
        else:
            x_train, y_train, x_test, y_test = (
                _read_idx(needed[1], images=True),
                _read_idx(needed[0], images=False),
                _read_idx(needed[3], images=True),
                _read_idx(needed[2], images=False),
            )
            names = list(FASHION_CLASSES)
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise SourceError(f"keras:{name}: can't read the cached files in {cache}: {error}") from None
    features = np.concatenate([x_train, x_test]).astype(np.float32)
    labels = np.concatenate([y_train, y_test]).astype(np.int64)
    ids = np.array(
        [f"{name}-train-{i:05d}" for i in range(len(x_train))]
        + [f"{name}-test-{i:05d}" for i in range(len(x_test))]
    )
    classes, labels = name_classes(names, labels, data.classes, data.source)
    meta = DatasetMeta(data.source, "image", "classification", classes, list(features.shape[1:]))
    return Dataset(features, labels, ids, meta)


def _read_mnist_npz(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MNIST_SHA256:
        log.warning(
            "%s is not Keras's published mnist.npz (sha256 %s…); reading it as it is", path, digest[:12]
        )
    with np.load(path, allow_pickle=False) as arrays:
        return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _read_idx(path: Path, *, images: bool) -> np.ndarray:
    # The IDX files Keras's fashion_mnist loader reads: 8 header bytes for labels, 16 for 28x28 images.
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    if images:
        pixels = np.frombuffer(raw, np.uint8, offset=16)
        if pixels.size % (28 * 28):
            raise ValueError(f"{path.name}: {pixels.size} pixels is not a whole number of 28x28 images")
        return pixels.reshape(-1, 28, 28)
    return np.frombuffer(raw, np.uint8, offset=8)
