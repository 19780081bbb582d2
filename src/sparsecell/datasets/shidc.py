"""SHIDC-B-Ki-67 (Negahbani et al., 2021): Ki-67 IHC breast-cancer images with a JSON
list of ``{"x", "y", "label_id"}`` beside each image."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..errors import AnnotationError, ImageError
from ..formats.points import Points, finite_xy, number, read_json
from .base import Item, PointDataset, image_folders, images_in, listing, order_splits, require_dir, split_dir

__all__ = ["CLASSES", "dataset", "splits", "read_shidc"]


#: label_id 1, 2, 3.
CLASSES = ("positive", "negative", "til")


def read_shidc(path: str | Path) -> Points:
    """SHIDC-B-Ki-67 JSON: a list of ``{"x", "y", "label_id"}``; label_id 1 = Ki-67+
    tumour, 2 = Ki-67- tumour, 3 = tumour-infiltrating lymphocyte."""
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, list):
        raise AnnotationError(f"{path}: expected a JSON list of {{x, y, label_id}} objects")
    xy, labels = [], []
    for i, obj in enumerate(doc):
        if not isinstance(obj, dict) or not {"x", "y", "label_id"} <= set(obj):
            raise AnnotationError(f"{path}: entry {i} is not an object with numeric x, y and label_id")
        x, y = number(obj["x"], path, f"entry {i}: x"), number(obj["y"], path, f"entry {i}: y")
        lid = obj["label_id"]
        if isinstance(lid, bool) or lid not in (1, 2, 3) or not isinstance(lid, (int, float)) or lid != int(lid):
            raise AnnotationError(f"{path}: entry {i} has label_id {lid!r}; expected 1, 2 or 3")
        lid = int(lid)
        xy.append((x, y))
        labels.append(lid - 1)
    xy_arr = finite_xy(np.array(xy, np.float64).reshape(-1, 2), path)
    return Points(xy_arr, np.array(labels, np.int64), CLASSES)


def _has_pairs(folder: Path) -> bool:
    return any(p.with_suffix(".json").is_file() for p in images_in(folder))


def splits(root: Path) -> list[str]:
    return order_splits([p.name for p in image_folders(root) if _has_pairs(p)])


def dataset(root: str | Path, split: str | None = None, drop_outside: bool = False) -> PointDataset:
    """SHIDC-B-Ki-67: a folder of ``<stem>.jpg`` (or .png) with ``<stem>.json``
    (``[{"x", "y", "label_id"}]``); ``root/<split>`` when given (matched
    case-insensitively, e.g. ``Train``). Classes ``("positive", "negative", "til")``."""
    root = require_dir(Path(root), "SHIDC folder")
    d = root if split is None else split_dir(root, str(split), splits(root), "SHIDC")
    images = images_in(d)
    if not images:
        raise ImageError(f"{d}: no images here; it holds: {listing(d)}")
    items, missing = [], []
    for img in images:
        ann = img.with_suffix(".json")
        if not ann.is_file():
            missing.append(img)
            continue
        items.append(Item(img.stem, img, ann, functools.partial(read_shidc, ann)))
    if missing:
        raise AnnotationError(f"{missing[0]}: no annotation {missing[0].stem}.json beside it ({len(missing)} of {len(images)} images lack one)")
    label = d.name if split is not None else root.name
    return PointDataset(items, CLASSES, name=f"shidc/{label}", drop_outside=drop_outside)
