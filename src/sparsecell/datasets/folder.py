"""Any folder of images with same-stem point files: ``tile1.png`` + ``tile1.csv`` (or
``.geojson`` / ``.json``, QuPath's export), read by :func:`sparsecell.formats.points.read_points`.
Sub-folders are splits."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import AnnotationError, ConfigError, ImageError
from ..formats.images import IMAGE_EXTENSIONS
from ..formats.points import Points, read_points
from .base import Item, PointDataset, image_folders, images_in, listing, natural_key, order_splits, require_dir, split_dir

__all__ = ["dataset", "splits"]


_ANNOTATION_SUFFIXES = (".csv", ".geojson", ".json")


def _annotation_for(img: Path, by_stem: dict[str, list[Path]]) -> Path | None:
    cands = by_stem.get(img.stem, [])
    if len(cands) > 1:
        raise AnnotationError(f"{img}: several annotation files share its name ({', '.join(p.name for p in cands)}); keep one")
    return cands[0] if cands else None


def _read_as(path: Path, classes: tuple[str, ...] | None, target: tuple[str, ...]) -> Points:
    """Read a point file (with ``classes`` when given) and relabel onto ``target``;
    repeated points (same place, same class: a double click) are kept once, with a
    warning, since only one of them could ever be matched."""
    pts = read_points(path, classes)
    if pts.classes != target:
        try:
            pts = pts.with_classes(target)
        except ValueError as e:
            raise AnnotationError(f"{path}: {e}") from None
    if len(pts) > 1:
        _, first = np.unique(np.column_stack([pts.xy, pts.labels]), axis=0, return_index=True)
        if len(first) < len(pts):
            warnings.warn(f"{path}: {len(pts) - len(first)} of {len(pts)} points repeat another (same place and class); "
                          "each is kept once")  # fmt: skip
            pts = pts.subset(np.sort(first))
    return pts


def dataset(
    root: str | Path,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    allow_missing: bool = False,
    drop_outside: bool = False,
) -> PointDataset:
    """Images (.png .jpg .jpeg .tif .tiff .bmp) with same-stem ``.csv`` or
    ``.geojson`` / ``.json`` point files (see :func:`~sparsecell.formats.points.read_points`).

    ``classes``: the class names (CSV integer labels index them); None means the union
    of the class names found across the files, sorted, so that every sample shares
    one class tuple. An image without an annotation file is an error naming it, or,
    with ``allow_missing``, has no points (with a warning giving the count).
    ``split``: a sub-folder of ``root`` (matched case-insensitively); None: ``root`` itself.
    """
    root = require_dir(Path(root), "image folder", ImageError)
    if split is not None:
        root = split_dir(root, str(split), [p.name for p in image_folders(root)], "folder")
    images = images_in(root)
    if not images:
        raise ImageError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) here; it holds: {listing(root)}")
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in _ANNOTATION_SUFFIXES and not p.name.startswith("."):
            by_stem.setdefault(p.stem, []).append(p)
    stems: dict[str, Path] = {}
    pairs: list[tuple[Path, Path | None]] = []
    for img in images:
        if img.stem in stems:
            raise ImageError(f"{img}: two images share the name {img.stem!r} ({stems[img.stem].name}, {img.name})")
        stems[img.stem] = img
        pairs.append((img, _annotation_for(img, by_stem)))
    missing = [img for img, ann in pairs if ann is None]
    if missing and not allow_missing:
        raise AnnotationError(
            f"{missing[0]}: no annotation file ({missing[0].stem}.csv or .geojson) beside it "
            f"({len(missing)} of {len(images)} images lack one; allow_missing=True gives them no points)"
        )
    if missing:
        warnings.warn(f"{root}: {len(missing)} of {len(images)} images have no annotation file; they get no points")

    given = tuple(classes) if classes is not None else None
    if given is not None and len(given) == 0:
        raise ConfigError("folder: classes must name at least one class")
    if given is None:
        found: set[str] = set()
        for _, ann in pairs:
            if ann is not None:
                pts = read_points(ann)
                if len(pts) == 0 and pts.classes != Points.empty().classes:
                    found.update(pts.classes)  # no point, but the classes it declares (our writers do)
                found.update(pts.classes[k] for k in np.unique(pts.labels))
        target = tuple(sorted(found, key=natural_key)) or Points.empty().classes
    else:
        target = given

    items = []
    for img, ann in pairs:
        if ann is None:
            items.append(Item(img.stem, img, img, functools.partial(Points.empty, target)))
        else:
            items.append(Item(img.stem, img, ann, functools.partial(_read_as, ann, given, target)))
    return PointDataset(items, target, name=f"folder/{root.name}", drop_outside=drop_outside)


def splits(root: Path) -> list[str]:
    """Sub-folders of ``root`` that hold images."""
    return order_splits([p.name for p in image_folders(root) if images_in(p)])
