"""CRCHistoPhenotypes (Sirinukunwattana et al., 2016): 100 H&E images of colorectal
adenocarcinoma (500x500 px at 20x) with nucleus centres in MATLAB files.

Layouts read: split folders ``<split>/imgN/{imgN.bmp, imgN_*.mat}``, one such split
folder, or the authors' folder ``Detection/imgN/`` + ``Classification/imgN/``.
``mode="detection"`` gives every marked nucleus (one class ``nucleus``);
``mode="classes"`` the classified subset in :data:`CLASSES`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..errors import AnnotationError, ConfigError, ImageError
from ..formats.images import IMAGE_EXTENSIONS
from ..formats.points import Points, check_file, finite_xy
from .base import Item, PointDataset, child_dir, image_folders, listing, natural_key, order_splits, require_dir, split_dir

__all__ = ["CLASSES", "MODES", "dataset", "splits", "read_crchisto"]

#: What a CRCHisto dataset can hold: every nucleus, or the four classified kinds.
MODES = ("detection", "classes")
#: The four classes of the classified subset (epithelial = malignant epithelium, the tumour class).
CLASSES = ("epithelial", "fibroblast", "inflammatory", "others")


def _read_mat_detection(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    check_file(path)
    try:
        mat = loadmat(path)
    except Exception as e:  # scipy raises several types for corrupt files
        raise AnnotationError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from None
    if "detection" not in mat:
        keys = [k for k in mat if not k.startswith("__")]
        raise AnnotationError(f"{path}: no key 'detection' (found {keys})")
    arr = np.asarray(mat["detection"], dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise AnnotationError(f"{path}: 'detection' has shape {arr.shape}, expected (N, 2) = (x, y)")
    xy = finite_xy(arr, path) - 1.0  # 1-based -> 0-based
    # MATLAB clicks are continuous: a 1-based value in (0, 1) is a nucleus cut by the
    # top or left edge, clicked up to one pixel outside (CRCHisto has 9 such points,
    # down to 0.15). Its mirror, a value in (W, W + 1), already maps inside, so clamp
    # the lower side to the edge; anything further out is left for check_inside.
    edge = (xy < 0) & (xy >= -1)
    xy[edge] = 0.0
    return xy


def _crchisto_dir(root: Path, name: str, kind: str) -> Path:
    """Where CRCHisto keeps ``<name>_<kind>.mat``, in either layout."""
    if (root / name).is_dir():  # <split>/imgN/imgN_*.mat
        return root / name
    sub = "Detection" if kind == "detection" else "Classification"
    return root / sub / name


def read_crchisto(root: str | Path, name: str, mode: str = "detection") -> Points:
    """CRCHisto points of image ``name`` (e.g. ``"img1"``), converted to 0-based.

    ``root`` is a split folder holding ``imgN/imgN_*.mat`` or the authors' folder holding
    ``Detection/imgN/`` and ``Classification/imgN/``. ``mode="detection"`` gives every
    marked nucleus as one class ``nucleus``; ``mode="classes"`` gives the classified
    subset in the four classes (epithelial = tumour), a missing class file meaning no
    cell of that class.
    """
    root = Path(root)
    if mode == "detection":
        xy = _read_mat_detection(_crchisto_dir(root, name, "detection") / f"{name}_detection.mat")
        return Points.from_xy(xy, ("nucleus",))
    if mode != "classes":
        raise ValueError(f"read_crchisto: mode must be 'detection' or 'classes', got {mode!r}")
    folder = _crchisto_dir(root, name, "classes")
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: CRCHisto image folder not found")
    parts = []
    for c, cname in enumerate(CLASSES):
        f = folder / f"{name}_{cname}.mat"
        xy = _read_mat_detection(f) if f.exists() else np.zeros((0, 2))
        parts.append(Points.from_xy(xy, CLASSES, label=c))
    return Points.concat(parts)


def _crchisto_image(folder: Path, name: str) -> Path:
    bmp = folder / f"{name}.bmp"
    if bmp.is_file():
        return bmp
    for ext in IMAGE_EXTENSIONS:
        for cand in (folder / f"{name}{ext}", folder / f"{name}{ext.upper()}"):
            if cand.is_file():
                return cand
    raise ImageError(f"{bmp}: CRCHisto image not found; {folder} holds: {listing(folder)}")


def _crchisto_layout(root: Path) -> str:
    """'authors' (Detection/ + Classification/), 'splits' (<split>/imgN/) or 'flat' (imgN/)."""
    if child_dir(root, "Detection") is not None or child_dir(root, "Classification") is not None:
        return "authors"
    subs = image_folders(root)
    if any(any(p.suffix == ".mat" for p in s.iterdir() if p.is_file()) for s in subs):
        return "flat"
    return "splits"


def splits(root: Path) -> list[str]:
    layout = _crchisto_layout(root)
    if layout != "splits":
        return ["all"]
    return order_splits([s.name for s in image_folders(root) if image_folders(s)])


def dataset(root: str | Path, split: str | None = None, mode: str = "detection", drop_outside: bool = False) -> PointDataset:
    """CRCHistoPhenotypes: 100 H&E images (500x500) with nucleus centres.

    ``root`` holds split folders ``<split>/imgN/{imgN.bmp, imgN_*.mat}`` (``split=None``
    or ``"all"``: every split), or is one such split folder, or is the authors' folder
    with ``Detection/imgN/`` and ``Classification/imgN/`` (no splits: ``split`` must be
    None or ``"all"``).

    ``mode="detection"``: every marked nucleus, class ``("nucleus",)``.
    ``mode="classes"``: the classified subset in :data:`CLASSES`
    (epithelial = malignant epithelium, the tumour class).

    Images are in natural order (img1, img2, ..., img10). Coordinates are converted
    from MATLAB's 1-based convention to 0-based (see :func:`read_crchisto`).
    """
    if mode not in MODES:
        raise ConfigError(f"crchisto: mode must be 'detection' or 'classes', got {mode!r}")
    root = require_dir(Path(root), "CRCHisto folder")
    layout = _crchisto_layout(root)
    every = split is None or str(split).lower() == "all"
    if layout == "authors":
        if not every:
            raise AnnotationError(
                f"{root}: the authors' CRCHisto layout (Detection/, Classification/) has no split {split!r}; "
                "use split=None or 'all'"
            )
        sub = "Detection" if mode == "detection" else "Classification"
        parent = child_dir(root, sub)
        if parent is None:
            raise AnnotationError(f"{root / sub}: CRCHisto folder not found; {root} holds: {listing(root)}")
        groups = [parent]
    elif layout == "flat":
        if not every and split != root.name:
            raise AnnotationError(f"{root}: this CRCHisto folder holds images directly and has no split {split!r}")
        groups = [root]
    else:
        available = splits(root)
        if every:
            if not available:
                raise AnnotationError(f"{root}: no CRCHisto split folders (<split>/imgN/) here; it holds: {listing(root)}")
            groups = [root / s for s in available]
        else:
            d = split_dir(root, str(split), available, "CRCHisto")
            groups = [d]

    items = []
    for parent in groups:
        for img_dir in image_folders(parent):
            name = img_dir.name
            image = _crchisto_image(img_dir, name)
            if mode == "detection":
                ann = img_dir / f"{name}_detection.mat"
                if not ann.is_file():
                    raise AnnotationError(f"{ann}: CRCHisto detection file not found; {img_dir} holds: {listing(img_dir)}")
            else:
                ann = img_dir
            items.append(Item(name, image, ann, functools.partial(read_crchisto, parent, name, mode)))
    items.sort(key=lambda it: natural_key(it.image_id))
    classes = ("nucleus",) if mode == "detection" else CLASSES
    label = "all" if every else str(split)
    return PointDataset(items, classes, name=f"crchisto/{label}/{mode}", drop_outside=drop_outside)
