"""What every data source shares: the sample record, the lazy dataset, folder helpers.

A :class:`PointDataset` is a list of samples loaded lazily: building one only lists
files (and, for a folder without given classes, reads the annotations once to find
the class names); ``ds[i]`` decodes image ``i`` and reads its points, and
``ds.points(i)`` reads the points alone (the image size comes from the file header,
so nothing is decoded).

Every sample's points are checked to lie inside its image; with ``drop_outside=True``
points outside are dropped with a warning giving the counts, otherwise they are an
:class:`~sparsecell.errors.AnnotationError` naming the annotation file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import AnnotationError
from ..formats.images import IMAGE_EXTENSIONS, image_size, read_image
from ..formats.points import Points

__all__ = ["Sample", "Item", "PointDataset", "natural_key"]

_SPLIT_ORDER = ("train", "training", "val", "valid", "validation", "test", "testing")


# ---------------------------------------------------------------------------------------
# Folder helpers (for the sources' error messages and layouts)
# ---------------------------------------------------------------------------------------
def natural_key(s: str) -> list:
    """Sort key putting ``img2`` before ``img10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(s))]


def listing(folder: Path, limit: int = 12) -> str:
    """What a folder holds, for error messages."""
    try:
        names = sorted((p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()), key=natural_key)
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def require_dir(path: Path, what: str, error: type[Exception] = AnnotationError) -> Path:
    """``path`` if it is a folder, else a one-line error naming it and what exists."""
    if path.is_dir():
        return path
    if path.exists():
        raise error(f"{path}: is a file; expected the {what}")
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    if parent.is_dir():
        raise error(f"{path}: {what} not found; {parent} holds: {listing(parent)}")
    raise error(f"{path}: {what} not found")


def child_dir(root: Path, name: str) -> Path | None:
    """``root/name``, matched case-insensitively when the exact name is absent."""
    exact = root / name
    if exact.is_dir():
        return exact
    matches = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def split_dir(root: Path, split: str, available: Sequence[str], what: str) -> Path:
    d = child_dir(root, split)
    if d is None:
        have = ", ".join(available) if available else f"none ({root} holds: {listing(root)})"
        raise AnnotationError(f"{root / split}: {what} split {split!r} not found; splits here: {have}")
    return d


def order_splits(names: Sequence[str]) -> list[str]:
    def key(n: str):
        low = n.lower()
        return (_SPLIT_ORDER.index(low) if low in _SPLIT_ORDER else len(_SPLIT_ORDER), natural_key(n))

    return sorted(names, key=key)


def images_in(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )


def image_folders(parent: Path) -> list[Path]:
    """The sub-folders of ``parent`` (hidden and ``_``-prefixed ones skipped), in natural order."""
    return sorted(
        (p for p in parent.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
        key=lambda p: natural_key(p.name),
    )


# ---------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Sample:
    """One image and its points."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    points: Points
    image_id: str
    #: boxes (x0, y0, x1, y1, px) of the image in which every cell was clicked (e.g. a
    #: suggested region the user annotated through); the loss is told of them
    complete: tuple = ()


@dataclass(frozen=True)
class Item:
    """Where one sample lives: its image, its annotation (for messages) and readers.

    ``read`` is called with no argument and returns the sample's :class:`Points`;
    ``load_image``, when given, returns its pixels (for images that are not files,
    e.g. the synthetic source); otherwise ``image_path`` is decoded. Both should be
    picklable (module-level functions or :func:`functools.partial` of one) so that the
    dataset can go to data-loader worker processes.
    """

    image_id: str
    image_path: Path
    annotation: Path
    read: Callable[[], Points]
    load_image: Callable[[], np.ndarray] | None = None
    complete: bool = False  # every cell of the whole image was clicked (a complete training region)

    def image(self) -> np.ndarray:
        return self.load_image() if self.load_image is not None else read_image(self.image_path)


class PointDataset:
    """A list of point-annotated images, loaded lazily.

    Parameters
    ----------
    items : sequence of :class:`Item`
    classes : tuple of str
        The class names every sample's points share.
    name : str
        For messages and ``repr``.
    drop_outside : bool
        Drop points outside their image with a warning instead of raising.
    """

    def __init__(self, items: Sequence[Item], classes: Sequence[str], name: str = "", drop_outside: bool = False):
        self.items: list[Item] = list(items)
        self.classes: tuple[str, ...] = tuple(classes)
        self.name = name
        self.drop_outside = bool(drop_outside)
        self._sizes: dict[int, tuple[int, int]] = {}
        seen: set[str] = set()
        for it in self.items:
            if it.image_id in seen:
                raise AnnotationError(f"{it.image_path}: image id {it.image_id!r} occurs twice in {name or 'the dataset'}")
            seen.add(it.image_id)

    # -- list protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def _index(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"{type(self).__name__} indices must be integers, not {type(i).__name__}")
        n = len(self.items)
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        return j

    def __getitem__(self, i: int) -> Sample:
        j = self._index(i)
        it = self.items[j]
        image = it.image()
        h, w = image.shape[:2]
        self._sizes[j] = (w, h)
        return Sample(image=image, points=self._checked(j, w, h), image_id=it.image_id,
                      complete=((0, 0, w, h),) if it.complete else ())  # fmt: skip

    def __iter__(self) -> Iterator[Sample]:
        for j in range(len(self)):
            yield self[j]

    def __repr__(self) -> str:
        return f"PointDataset({self.name!r}, {len(self)} images, classes={self.classes})"

    # -- annotation-only access ----------------------------------------------------------
    def ids(self) -> list[str]:
        return [it.image_id for it in self.items]

    def index(self, image_id: str) -> int:
        for j, it in enumerate(self.items):
            if it.image_id == image_id:
                return j
        raise KeyError(f"no image {image_id!r} in {self.name or 'the dataset'}")

    def image_path(self, i: int) -> Path:
        return self.items[self._index(i)].image_path

    def annotation_path(self, i: int) -> Path:
        return self.items[self._index(i)].annotation

    def image_size(self, i: int) -> tuple[int, int]:
        """(width, height) of image ``i`` from its file header."""
        j = self._index(i)
        if j not in self._sizes:
            it = self.items[j]
            if it.load_image is not None:
                h, w = it.image().shape[:2]
                self._sizes[j] = (w, h)
            else:
                self._sizes[j] = image_size(it.image_path)
        return self._sizes[j]

    def points(self, i: int) -> Points:
        """The points of image ``i``, checked against its size, without decoding it."""
        j = self._index(i)
        w, h = self.image_size(j)
        return self._checked(j, w, h)

    def counts(self) -> dict[str, int]:
        """Number of points per class over the whole dataset (annotations only)."""
        total = dict.fromkeys(self.classes, 0)
        for j in range(len(self)):
            for c, k in self.points(j).counts().items():
                total[c] += k
        return total

    def _checked(self, j: int, w: int, h: int) -> Points:
        it = self.items[j]
        pts = it.read()
        if pts.classes != self.classes:
            try:
                pts = pts.with_classes(self.classes)
            except ValueError as e:
                raise AnnotationError(f"{it.annotation}: {e}") from None
        return pts.check_inside(w, h, source=it.annotation, drop=self.drop_outside)
