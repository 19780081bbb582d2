"""Dataset adapters: images paired with their point annotations.

A :class:`PointDataset` is a list of samples loaded lazily: building one only lists
files (and, for :func:`folder` without ``classes``, reads the annotations once to
find the class names); ``ds[i]`` decodes image ``i`` and reads its points, and
``ds.points(i)`` reads the points alone (the image size comes from the file header,
so nothing is decoded).

Every sample's points are checked to lie inside its image; with ``drop_outside=True``
points outside are dropped with a warning giving the counts, otherwise they are an
:class:`~sparsecell.errors.AnnotationError` naming the annotation file.

Adapters:

* :func:`crchisto` - CRCHistoPhenotypes (H&E), split folders or the authors' layout.
* :func:`bcdata` - BCData (Ki-67 IHC).
* :func:`shidc` - SHIDC-B-Ki-67 (Ki-67 IHC).
* :func:`folder` - any folder of images with same-stem ``.csv`` / ``.geojson`` files.
* :func:`open_dataset` - any of the above by name; :func:`splits` lists the splits.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import AnnotationError, ConfigError, ImageError
from .points import (
    BCDATA_CLASSES,
    CRCHISTO_CLASSES,
    SHIDC_CLASSES,
    Points,
    read_bcdata,
    read_crchisto,
    read_points,
    read_shidc,
)

__all__ = [
    "Sample",
    "Item",
    "PointDataset",
    "read_image",
    "image_size",
    "crchisto",
    "bcdata",
    "shidc",
    "folder",
    "open_dataset",
    "splits",
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "augment",
    "CropDataset",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
DATASETS = ("crchisto", "bcdata", "shidc", "folder", "synthetic")
_SPLIT_ORDER = ("train", "training", "val", "valid", "validation", "test", "testing")


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------
def natural_key(s: str) -> list:
    """Sort key putting ``img2`` before ``img10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(s))]


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def _listing(folder: Path, limit: int = 12) -> str:
    """What a folder holds, for error messages."""
    try:
        names = sorted((p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()), key=natural_key)
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _require_dir(path: Path, what: str, error: type[Exception] = AnnotationError) -> Path:
    """``path`` if it is a folder, else a one-line error naming it and what exists."""
    if path.is_dir():
        return path
    if path.exists():
        raise error(f"{path}: {what} is not a folder")
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    if parent.is_dir():
        raise error(f"{path}: {what} not found; {parent} holds: {_listing(parent)}")
    raise error(f"{path}: {what} not found")


def _child_dir(root: Path, name: str) -> Path | None:
    """``root/name``, matched case-insensitively when the exact name is absent."""
    exact = root / name
    if exact.is_dir():
        return exact
    matches = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def _split_dir(root: Path, split: str, available: Sequence[str], what: str) -> Path:
    d = _child_dir(root, split)
    if d is None:
        have = ", ".join(available) if available else f"none ({root} holds: {_listing(root)})"
        raise AnnotationError(f"{root / split}: {what} split {split!r} not found; splits here: {have}")
    return d


def _order_splits(names: Sequence[str]) -> list[str]:
    def key(n: str):
        low = n.lower()
        return (_SPLIT_ORDER.index(low) if low in _SPLIT_ORDER else len(_SPLIT_ORDER), natural_key(n))

    return sorted(names, key=key)


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------
def _to_rgb_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    """Any grey / grey+alpha / RGB / RGBA array of any numeric type -> (H, W, 3) uint8."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels-first (some TIFFs)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"{path}: image has shape {arr.shape}; expected grey, grey+alpha, RGB or RGBA")
    if arr.shape[-1] in (1, 2):  # grey (+ alpha)
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    else:  # RGB (+ alpha)
        arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0:
            raise ImageError(f"{path}: image has negative pixel values ({arr.dtype}); cannot convert to 8-bit RGB")
        if hi <= 255:
            return arr.astype(np.uint8)
        if hi <= 65535:  # 16-bit data held in a wider integer (PIL mode "I")
            return ((arr.astype(np.int64) + 128) // 257).astype(np.uint8)
        raise ImageError(f"{path}: {arr.dtype} pixel values up to {hi} do not fit 16 bits; cannot convert to 8-bit RGB")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ImageError(f"{path}: image has NaN or infinite pixel values")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1:
            return np.round(arr * 255).astype(np.uint8)
        if lo >= 0 and hi <= 255:
            return np.round(arr).astype(np.uint8)
        raise ImageError(f"{path}: floating-point pixel values span {lo:g}..{hi:g}; expected 0..1 or 0..255")
    raise ImageError(f"{path}: unsupported pixel type {arr.dtype}")


def _read_tiff(path: Path) -> np.ndarray | None:
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(path) as tf:
            return tf.pages[0].asarray()
    except Exception:  # tifffile raises many types for files it cannot read
        return None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB.

    Grey images are repeated to 3 channels, alpha is dropped, 16-bit images are scaled
    to 8 bits (``v / 257``, rounded; PIL itself keeps the high byte of 16-bit RGB). A TIFF that PIL cannot read is tried with ``tifffile``
    (first page) when it is installed. A missing or unreadable file is an
    :class:`ImageError` naming it.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: image file not found")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    is_tiff = path.suffix.lower() in (".tif", ".tiff")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "L", "RGBA", "LA", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
                arr = np.asarray(im)
            elif im.mode in ("P", "PA"):
                arr = np.asarray(im.convert("RGBA"))
            else:  # 1, CMYK, YCbCr, LAB, HSV, ...
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        arr = _read_tiff(path) if is_tiff else None
        if arr is None:
            raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {_one_line(e)})") from None
    return _to_rgb_uint8(arr, path)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image, from its header (nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        if path.suffix.lower() in (".tif", ".tiff"):
            arr = _read_tiff(path)
            if arr is not None:
                h, w = _to_rgb_uint8(arr, path).shape[:2]
                return w, h
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {_one_line(e)})") from None


# ---------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Sample:
    """One image and its points."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    points: Points
    image_id: str


@dataclass(frozen=True)
class Item:
    """Where one sample lives: its image, its annotation (for messages) and a reader.

    ``read`` is called with no argument and returns the sample's :class:`Points`; it
    should be picklable (a module-level function or a :func:`functools.partial` of
    one) so that the dataset can go to data-loader worker processes.
    """

    image_id: str
    image_path: Path
    annotation: Path
    read: Callable[[], Points]


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
        image = read_image(it.image_path)
        h, w = image.shape[:2]
        self._sizes[j] = (w, h)
        return Sample(image=image, points=self._checked(j, w, h), image_id=it.image_id)

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
            self._sizes[j] = image_size(self.items[j].image_path)
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


# ---------------------------------------------------------------------------------------
# CRCHisto
# ---------------------------------------------------------------------------------------
def _crchisto_image(folder: Path, name: str) -> Path:
    bmp = folder / f"{name}.bmp"
    if bmp.is_file():
        return bmp
    for ext in IMAGE_EXTENSIONS:
        for cand in (folder / f"{name}{ext}", folder / f"{name}{ext.upper()}"):
            if cand.is_file():
                return cand
    raise ImageError(f"{bmp}: CRCHisto image not found; {folder} holds: {_listing(folder)}")


def _image_folders(parent: Path) -> list[Path]:
    return sorted(
        (p for p in parent.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
        key=lambda p: natural_key(p.name),
    )


def _crchisto_layout(root: Path) -> str:
    """'authors' (Detection/ + Classification/), 'splits' (<split>/imgN/) or 'flat' (imgN/)."""
    if _child_dir(root, "Detection") is not None or _child_dir(root, "Classification") is not None:
        return "authors"
    subs = _image_folders(root)
    if any(any(p.suffix == ".mat" for p in s.iterdir() if p.is_file()) for s in subs):
        return "flat"
    return "splits"


def _crchisto_splits(root: Path) -> list[str]:
    layout = _crchisto_layout(root)
    if layout != "splits":
        return ["all"]
    return _order_splits([s.name for s in _image_folders(root) if _image_folders(s)])


def crchisto(root: str | Path, split: str | None = None, mode: str = "detection", drop_outside: bool = False) -> PointDataset:
    """CRCHistoPhenotypes: 100 H&E images (500x500) with nucleus centres.

    ``root`` holds split folders ``<split>/imgN/{imgN.bmp, imgN_*.mat}`` (``split=None``
    or ``"all"``: every split), or is one such split folder, or is the authors' folder
    with ``Detection/imgN/`` and ``Classification/imgN/`` (no splits: ``split`` must be
    None or ``"all"``).

    ``mode="detection"``: every marked nucleus, class ``("nucleus",)``.
    ``mode="classes"``: the classified subset in :data:`CRCHISTO_CLASSES`
    (epithelial = malignant epithelium, the tumour class).

    Images are in natural order (img1, img2, ..., img10). Coordinates are converted
    from MATLAB's 1-based convention to 0-based (see :func:`read_crchisto`).
    """
    if mode not in ("detection", "classes"):
        raise ConfigError(f"crchisto: mode must be 'detection' or 'classes', got {mode!r}")
    root = _require_dir(Path(root), "CRCHisto folder")
    layout = _crchisto_layout(root)
    every = split is None or str(split).lower() == "all"
    if layout == "authors":
        if not every:
            raise AnnotationError(
                f"{root}: the authors' CRCHisto layout (Detection/, Classification/) has no split {split!r}; "
                "use split=None or 'all'"
            )
        sub = "Detection" if mode == "detection" else "Classification"
        parent = _child_dir(root, sub)
        if parent is None:
            raise AnnotationError(f"{root / sub}: CRCHisto folder not found; {root} holds: {_listing(root)}")
        groups = [parent]
    elif layout == "flat":
        if not every and split != root.name:
            raise AnnotationError(f"{root}: this CRCHisto folder holds images directly and has no split {split!r}")
        groups = [root]
    else:
        available = _crchisto_splits(root)
        if every:
            if not available:
                raise AnnotationError(f"{root}: no CRCHisto split folders (<split>/imgN/) here; it holds: {_listing(root)}")
            groups = [root / s for s in available]
        else:
            d = _split_dir(root, str(split), available, "CRCHisto")
            groups = [d]

    items = []
    for parent in groups:
        for img_dir in _image_folders(parent):
            name = img_dir.name
            image = _crchisto_image(img_dir, name)
            if mode == "detection":
                ann = img_dir / f"{name}_detection.mat"
                if not ann.is_file():
                    raise AnnotationError(f"{ann}: CRCHisto detection file not found; {img_dir} holds: {_listing(img_dir)}")
            else:
                ann = img_dir
            items.append(Item(name, image, ann, functools.partial(read_crchisto, parent, name, mode)))
    items.sort(key=lambda it: natural_key(it.image_id))
    classes = ("nucleus",) if mode == "detection" else CRCHISTO_CLASSES
    label = "all" if every else str(split)
    return PointDataset(items, classes, name=f"crchisto/{label}/{mode}", drop_outside=drop_outside)


# ---------------------------------------------------------------------------------------
# BCData
# ---------------------------------------------------------------------------------------
def _bcdata_splits(root: Path) -> list[str]:
    images = _child_dir(root, "images")
    if images is None:
        return []
    return _order_splits([p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")])


def bcdata(root: str | Path, split: str = "test", drop_outside: bool = False) -> PointDataset:
    """BCData (Ki-67 IHC, 640x640): ``<root>/images/<split>/<id>.png`` with
    ``<root>/annotations/<split>/{positive,negative}/<id>.h5``; ids in numeric order;
    classes ``("positive", "negative")``."""
    root = _require_dir(Path(root), "BCData folder")
    split = "test" if split is None else str(split)
    images_root = _require_dir(root / "images", "BCData images folder", ImageError)
    img_dir = _child_dir(images_root, split)
    if img_dir is None:
        have = ", ".join(_bcdata_splits(root)) or "none"
        raise ImageError(f"{images_root / split}: BCData split {split!r} not found; splits here: {have}")
    ann_split = _require_dir(root / "annotations" / img_dir.name, "BCData annotation folder")
    for cname in BCDATA_CLASSES:
        _require_dir(ann_split / cname, f"BCData {cname} annotation folder")
    items = []
    missing = []
    for img in _images_in(img_dir):
        stem = img.stem
        for cname in BCDATA_CLASSES:
            if not (ann_split / cname / f"{stem}.h5").is_file():
                missing.append(ann_split / cname / f"{stem}.h5")
        items.append(Item(stem, img, ann_split / "positive" / f"{stem}.h5",
                          functools.partial(read_bcdata, root, img_dir.name, stem)))
    if missing:
        raise AnnotationError(f"{missing[0]}: BCData annotation not found ({len(missing)} files missing in {ann_split})")
    if not items:
        raise ImageError(f"{img_dir}: no images here")
    return PointDataset(items, BCDATA_CLASSES, name=f"bcdata/{img_dir.name}", drop_outside=drop_outside)


# ---------------------------------------------------------------------------------------
# SHIDC-B-Ki-67
# ---------------------------------------------------------------------------------------
def _has_pairs(folder: Path) -> bool:
    return any(p.with_suffix(".json").is_file() for p in _images_in(folder))


def _shidc_splits(root: Path) -> list[str]:
    return _order_splits([p.name for p in _image_folders(root) if _has_pairs(p)])


def shidc(root: str | Path, split: str | None = None, drop_outside: bool = False) -> PointDataset:
    """SHIDC-B-Ki-67: a folder of ``<stem>.jpg`` (or .png) with ``<stem>.json``
    (``[{"x", "y", "label_id"}]``); ``root/<split>`` when given (matched
    case-insensitively, e.g. ``Train``). Classes ``("positive", "negative", "til")``."""
    root = _require_dir(Path(root), "SHIDC folder")
    d = root if split is None else _split_dir(root, str(split), _shidc_splits(root), "SHIDC")
    images = _images_in(d)
    if not images:
        raise ImageError(f"{d}: no images here; it holds: {_listing(d)}")
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
    return PointDataset(items, SHIDC_CLASSES, name=f"shidc/{label}", drop_outside=drop_outside)


# ---------------------------------------------------------------------------------------
# A plain folder of images with CSV / GeoJSON points
# ---------------------------------------------------------------------------------------
_ANNOTATION_SUFFIXES = (".csv", ".geojson", ".json")


def _annotation_for(img: Path, by_stem: dict[str, list[Path]]) -> Path | None:
    cands = by_stem.get(img.stem, [])
    if len(cands) > 1:
        raise AnnotationError(f"{img}: several annotation files share its name ({', '.join(p.name for p in cands)}); keep one")
    return cands[0] if cands else None


def _read_as(path: Path, classes: tuple[str, ...] | None, target: tuple[str, ...]) -> Points:
    """Read a point file (with ``classes`` when given) and relabel onto ``target``."""
    pts = read_points(path, classes)
    if pts.classes != target:
        try:
            pts = pts.with_classes(target)
        except ValueError as e:
            raise AnnotationError(f"{path}: {e}") from None
    return pts


def _empty(classes: tuple[str, ...]) -> Points:
    return Points.empty(classes)


def folder(
    root: str | Path,
    classes: Sequence[str] | None = None,
    allow_missing: bool = False,
    drop_outside: bool = False,
) -> PointDataset:
    """Images (.png .jpg .jpeg .tif .tiff .bmp) with same-stem ``.csv`` or
    ``.geojson`` / ``.json`` point files (see :func:`~sparsecell.points.read_points`).

    ``classes``: the class names (CSV integer labels index them); None means the union
    of the class names found across the files, sorted, so that every sample shares
    one class tuple. An image without an annotation file is an error naming it, or,
    with ``allow_missing``, has no points (with a warning giving the count).
    """
    root = _require_dir(Path(root), "image folder", ImageError)
    images = _images_in(root)
    if not images:
        raise ImageError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) here; it holds: {_listing(root)}")
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
                found.update(pts.classes[k] for k in np.unique(pts.labels))
        target = tuple(sorted(found, key=natural_key)) or ("tumour",)
    else:
        target = given

    items = []
    for img, ann in pairs:
        if ann is None:
            items.append(Item(img.stem, img, img, functools.partial(_empty, target)))
        else:
            items.append(Item(img.stem, img, ann, functools.partial(_read_as, ann, given, target)))
    return PointDataset(items, target, name=f"folder/{root.name}", drop_outside=drop_outside)


# ---------------------------------------------------------------------------------------
# By name
# ---------------------------------------------------------------------------------------
def open_dataset(name: str, root: str | Path, split: str | None = None, **kw) -> PointDataset:
    """Open a dataset by name: ``crchisto``, ``bcdata``, ``shidc``, ``folder`` or
    ``synthetic``; ``kw`` goes to the adapter (e.g. ``mode="classes"``,
    ``drop_outside=True``). For ``folder`` a split is a subfolder of ``root``."""
    key = str(name).lower()
    if key == "crchisto":
        return crchisto(root, split, **kw)
    if key == "bcdata":
        return bcdata(root, "test" if split is None else split, **kw)
    if key == "shidc":
        return shidc(root, split, **kw)
    if key == "folder":
        base = _require_dir(Path(root), "image folder", ImageError)
        if split is not None:
            subs = [p.name for p in _image_folders(base)]
            base = _split_dir(base, str(split), subs, "folder")
        return folder(base, **kw)
    if key == "synthetic":
        raise NotImplementedError("the synthetic dataset is not available yet")
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def splits(name: str, root: str | Path) -> list[str]:
    """The splits of dataset ``name`` that exist under ``root`` (train, validation and
    test first). CRCHisto in the authors' layout has the one split ``"all"``."""
    key = str(name).lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if key == "synthetic":
        raise NotImplementedError("the synthetic dataset is not available yet")
    root = _require_dir(Path(root), f"{key} folder")
    if key == "crchisto":
        return _crchisto_splits(root)
    if key == "bcdata":
        return _bcdata_splits(root)
    if key == "shidc":
        return _shidc_splits(root)
    return _order_splits([p.name for p in _image_folders(root) if _images_in(p)])


# ---------------------------------------------------------------------------------------
# Training crops and augmentation
# ---------------------------------------------------------------------------------------
def augment(image: np.ndarray, points: Points, rng: np.random.Generator, flips: bool = True, rot90: bool = True,
            colour_jitter: float = 0.0) -> tuple[np.ndarray, Points]:
    """Random flips, 90-degree rotations and stain jitter of a (H, W, 3) uint8 crop and its points.

    Stain jitter scales and shifts each channel's optical density by up to
    ``colour_jitter`` (relative), a cheap stand-in for stain variation.
    """
    H, W = image.shape[:2]
    xy = points.xy.copy()
    if flips and rng.random() < 0.5:
        image = image[:, ::-1]
        xy[:, 0] = W - 1 - xy[:, 0]
    if flips and rng.random() < 0.5:
        image = image[::-1]
        xy[:, 1] = H - 1 - xy[:, 1]
    if rot90:
        k = int(rng.integers(4))
        for _ in range(k):  # rotate 90 degrees counter-clockwise: (x, y) -> (y, W' - 1 - x)
            h, w = image.shape[:2]
            image = np.rot90(image)
            xy = np.stack([xy[:, 1], w - 1 - xy[:, 0]], axis=1)
    image = np.ascontiguousarray(image)
    if colour_jitter > 0:
        od = -np.log((image.astype(np.float32) + 1.0) / 256.0)
        scale = 1.0 + rng.uniform(-colour_jitter, colour_jitter, size=3).astype(np.float32)
        shift = rng.uniform(-colour_jitter, colour_jitter, size=3).astype(np.float32) * 0.2
        od = np.clip(od * scale + shift, 0.0, None)
        image = np.clip(256.0 * np.exp(-od) - 1.0, 0, 255).astype(np.uint8)
    return image, Points(xy, points.labels, points.classes)


class CropDataset:
    """Random training crops with targets, for a torch DataLoader.

    Item: ``(image (3, crop, crop) float normalised, target (C+1, crop, crop),
    labelled nodes (C, crop/stride, crop/stride) bool)``. The targets come from the
    (sparse) training points only. Each epoch draws ``crops_per_image`` crops of
    every image; crops are reproducible from ``seed``, the epoch and the index.
    Images smaller than the crop are padded by reflection (points kept).
    """

    def __init__(self, images: Sequence[np.ndarray], points: Sequence[Points], crop: int, stride: int, sigma: float,
                 crops_per_image: int = 4, seed: int = 0, flips: bool = True, rot90: bool = True,
                 colour_jitter: float = 0.0):
        if crop % stride:
            raise ConfigError(f"data.crop = {crop} is not a multiple of the model stride {stride}")
        if len(images) != len(points) or not images:
            raise ConfigError(f"CropDataset: {len(images)} images and {len(points)} point sets")
        self.images, self.points = list(images), list(points)
        self.crop, self.stride, self.sigma = crop, stride, sigma
        self.crops_per_image, self.seed = crops_per_image, seed
        self.flips, self.rot90, self.colour_jitter = flips, rot90, colour_jitter
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.crops_per_image

    def __getitem__(self, i: int):
        import torch

        from .inference import to_tensor
        from .targets import gaussian_heatmap, node_labels

        rng = np.random.default_rng((self.seed, self.epoch, i))
        k = i % len(self.images)
        img, pts = self.images[k], self.points[k]
        H, W = img.shape[:2]
        c = self.crop
        if H < c or W < c:
            ph, pw = max(c - H, 0), max(c - W, 0)
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect" if ph < H and pw < W else "edge")
            H, W = img.shape[:2]
        y0, x0 = int(rng.integers(H - c + 1)), int(rng.integers(W - c + 1))
        crop = img[y0:y0 + c, x0:x0 + c]
        near = (pts.xy[:, 0] > x0 - 4 * self.sigma - 1) & (pts.xy[:, 0] < x0 + c + 4 * self.sigma) & \
               (pts.xy[:, 1] > y0 - 4 * self.sigma - 1) & (pts.xy[:, 1] < y0 + c + 4 * self.sigma)
        local = pts.subset(near).translate(-x0, -y0)  # points just outside still shape the target
        crop, local = augment(crop, local, rng, self.flips, self.rot90, self.colour_jitter)
        target = gaussian_heatmap(local, (c, c), self.sigma)
        labelled = node_labels(local, (c, c), self.stride)
        return to_tensor(crop), torch.from_numpy(target), torch.from_numpy(labelled)
