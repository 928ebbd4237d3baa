"""The ``images:DIR`` source: one sub-folder per class of PNG/JPEG files, resized as the plan says.

Files under ``DIR/unlabeled/`` (at any depth) are samples without a label yet. A sample's id is its path
relative to ``DIR`` (``cat/0001.png``), so labels from a labeling tool join back on it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from config.plan import DataSection
from data.dataset import UNLABELED, Dataset, DatasetMeta
from data.naming import SourceError, name_classes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
UNLABELED_DIR = "unlabeled"  # files under DIR/unlabeled/ wait for labels


class ImageDecodeError(ValueError):
    """Bytes or a file that Pillow can't decode as an image."""


def decode_image(source: bytes | Path, image_size: tuple[int, int] | None, color_mode: str) -> np.ndarray:
    """One image as a model trained on ``images:`` data takes it: the one code path for training and serving.

    Decoded with Pillow, converted to grey (``L``) or ``RGB``, resized to (height, width) with bilinear
    filtering when it differs, float32 in source units (0..255).

    Args:
        source: an image file's path, or its bytes (an upload).
        image_size: (height, width), or None to keep the image's own size.
        color_mode: "grayscale" or "rgb".

    Returns:
        ``(height, width)`` for grayscale, ``(height, width, 3)`` for rgb, float32.

    Raises:
        ImageDecodeError: not an image Pillow can decode.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            image = opened.convert("L" if color_mode == "grayscale" else "RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(str(error)) from None
    if image_size is not None:
        height, width = image_size
        if image.size != (width, height):  # PIL sizes are (width, height)
            image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def load_image_folder(directory: Path, data: DataSection) -> Dataset:
    """Read every image under ``directory``.

    Args:
        directory: the folder with one sub-folder per class (and optionally ``unlabeled/``).
        data: the plan's data section: ``image_size`` (height, width), ``color_mode``, ``classes``.

    Returns:
        Features float32 ``(n, h, w)`` (grayscale) or ``(n, h, w, 3)`` (rgb) in 0..255, sorted by id.

    Raises:
        SourceError: no such folder, no class folders, no images, an unreadable image, or images of
            different sizes with no ``data.image_size`` to resize them to.
    """
    if not directory.is_dir():
        raise SourceError(f"data.source: images folder {directory} does not exist")
    folders = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name != UNLABELED_DIR)
    if not folders:
        raise SourceError(f"{directory}: expected one sub-folder per class, found none")
    files = sorted(
        (path for path in directory.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda path: path.relative_to(directory).as_posix(),
    )
    if not files:
        raise SourceError(f"{directory}: no {'/'.join(IMAGE_SUFFIXES)} files in its class folders")
    loose = [path.name for path in files if path.parent == directory]
    if loose:
        raise SourceError(
            f"{directory}: images must sit in a class sub-folder (or {UNLABELED_DIR}/), found "
            f"{', '.join(loose[:10])}{f' and {len(loose) - 10} more' if len(loose) > 10 else ''} at the top"
        )
    arrays, labels, ids = [], [], []
    for path in files:
        relative = path.relative_to(directory).as_posix()
        try:
            arrays.append(decode_image(path, data.image_size, data.color_mode))
        except ImageDecodeError as error:
            raise SourceError(f"{path}: not a readable image ({error})") from None
        top = relative.split("/", 1)[0]
        labels.append(UNLABELED if top == UNLABELED_DIR else folders.index(top))
        ids.append(relative)
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        found = ", ".join(f"{w}x{h}" for h, w, *_ in sorted(shapes)[:5])
        raise SourceError(
            f"{directory}: images have different sizes ({found}); set data.image_size: [height, width]"
        )
    classes, label_ids = name_classes(
        folders, np.array(labels, dtype=np.int64), data.classes, f"{data.source} (its class folders)"
    )
    features = np.stack(arrays)
    meta = DatasetMeta(data.source, "image", "classification", classes, list(features.shape[1:]))
    return Dataset(features, label_ids, np.array(ids), meta)
