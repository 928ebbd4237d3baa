"""The ``images:DIR`` source: one sub-folder per class of PNG/JPEG files, resized as the plan says.

Files under ``DIR/unlabeled/`` (at any depth) are samples without a label yet. A sample's id is its path
relative to ``DIR`` (``cat/0001.png``), so labels from a labeling tool join back on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.dataset import UNLABELED, Dataset, DatasetMeta
from data.sources import IMAGE_SUFFIXES, UNLABELED_DIR, SourceError, name_classes
from pipeline.plan import DataSection


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
    from PIL import Image, UnidentifiedImageError

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
    mode = "L" if data.color_mode == "grayscale" else "RGB"
    size = None if data.image_size is None else (data.image_size[1], data.image_size[0])  # PIL: (w, h)
    arrays, labels, ids = [], [], []
    for path in files:
        relative = path.relative_to(directory).as_posix()
        try:
            with Image.open(path) as opened:
                image = opened.convert(mode)
                if size is not None and image.size != size:
                    image = image.resize(size, Image.Resampling.BILINEAR)
                arrays.append(np.asarray(image, dtype=np.float32))
        except (OSError, UnidentifiedImageError) as error:
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
