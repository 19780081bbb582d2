"""BCData (Huang et al., MICCAI 2020): Ki-67 IHC breast-cancer images (640x640) with
the centres of positive and negative tumour cells in HDF5 files.

Layout: ``<root>/images/<split>/<id>.png`` with
``<root>/annotations/<split>/{positive,negative}/<id>.h5`` (dataset ``coordinates``,
(x, y) 0-based).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..errors import AnnotationError, ImageError
from ..formats.points import Points, check_file, finite_xy
from .base import Item, PointDataset, child_dir, images_in, order_splits, require_dir

__all__ = ["CLASSES", "dataset", "splits", "read_bcdata", "folds"]


def _read_h5_coordinates(path: Path) -> np.ndarray:
    import h5py

    check_file(path)
    try:
        with h5py.File(path, "r") as fh:
            if "coordinates" not in fh:
                raise AnnotationError(f"{path}: no dataset 'coordinates' (found {list(fh.keys())})")
            arr = np.asarray(fh["coordinates"][()], dtype=np.float64)
    except OSError as e:
        raise AnnotationError(f"{path}: not a readable HDF5 file ({e})") from None
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise AnnotationError(f"{path}: 'coordinates' has shape {arr.shape}, expected (N, 2) = (x, y)")
    return finite_xy(arr, path)


#: Ki-67 positive and negative tumour cells.
CLASSES = ("positive", "negative")


def read_bcdata(root: str | Path, split: str, image_id: str | int) -> Points:
    """BCData: ``<root>/annotations/<split>/{positive,negative}/<id>.h5``, (x, y) 0-based.

    Classes: ``positive`` (Ki-67+ tumour cell) and ``negative`` (Ki-67- tumour cell).
    """
    root = Path(root)
    parts = []
    for c, name in enumerate(CLASSES):
        xy = _read_h5_coordinates(root / "annotations" / split / name / f"{image_id}.h5")
        parts.append(Points.from_xy(xy, CLASSES, label=c))
    return Points.concat(parts)


def splits(root: Path) -> list[str]:
    images = child_dir(root, "images")
    if images is None:
        return []
    return order_splits([p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")])


def dataset(root: str | Path, split: str = "test", drop_outside: bool = False) -> PointDataset:
    """BCData (Ki-67 IHC, 640x640): ``<root>/images/<split>/<id>.png`` with
    ``<root>/annotations/<split>/{positive,negative}/<id>.h5``; ids in numeric order;
    classes ``("positive", "negative")``."""
    root = require_dir(Path(root), "BCData folder")
    split = "test" if split is None else str(split)
    images_root = require_dir(root / "images", "BCData images folder", ImageError)
    img_dir = child_dir(images_root, split)
    if img_dir is None:
        have = ", ".join(splits(root)) or "none"
        raise ImageError(f"{images_root / split}: BCData split {split!r} not found; splits here: {have}")
    ann_split = require_dir(root / "annotations" / img_dir.name, "BCData annotation folder")
    for cname in CLASSES:
        require_dir(ann_split / cname, f"BCData {cname} annotation folder")
    items = []
    missing = []
    for img in images_in(img_dir):
        stem = img.stem
        for cname in CLASSES:
            if not (ann_split / cname / f"{stem}.h5").is_file():
                missing.append(ann_split / cname / f"{stem}.h5")
        items.append(Item(stem, img, ann_split / "positive" / f"{stem}.h5",
                          functools.partial(read_bcdata, root, img_dir.name, stem)))
    if missing:
        raise AnnotationError(f"{missing[0]}: BCData annotation not found ({len(missing)} files missing in {ann_split})")
    if not items:
        raise ImageError(f"{img_dir}: no images here")
    return PointDataset(items, CLASSES, name=f"bcdata/{img_dir.name}", drop_outside=drop_outside)


def folds(ids: list[str], k: int) -> list[tuple[list[str], list[str], list[str]]]:
    """k folds by image for a data set this small (26 images): ``(train, validation,
    test)`` ids per fold. Fold ``f`` tests every k-th image from the ``f``-th (ids in
    numeric order); its validation is 3 of the rest, spread over them."""
    order = sorted(ids, key=int)
    out = []
    for f in range(k):
        test = order[f::k]
        rest = [i for i in order if i not in test]
        val = rest[f::max(len(rest) // 3, 1)][:3]
        out.append(([i for i in rest if i not in val], val, test))
    return out
