"""Whole slides annotated in QuPath: training windows read from the slides inside the
user's region annotations, at the model's resolution.

Layout: a folder of slides, each with its QuPath export beside it (``File > Export
objects as GeoJSON``), named after the slide: ``S1.svs`` with ``S1.geojson`` (or
``S1.svs.geojson``, ``.json``, ``.geojson.gz``). In QuPath:

- draw **region annotations** (rectangles, polygons) where you looked;
- click tumour cells inside them with the **Points** tool, classified e.g.
  ``Tumor: Positive`` / ``Tumor: Negative`` (the last part, Positive or Negative, gives
  the class ``positive`` / ``negative``; other names are matched to ``data.classes``);
- give a region the class **Exhaustive** (or a class or name containing "exhaustive")
  when you clicked *every* tumour cell inside it; an exhaustive region with no points
  means "I looked here and there is no tumour cell". Exhaustive regions are the
  validation split (threshold, checkpoint, the clicked-share estimate), so draw at
  least one; the other regions are the training split;
- regions of class ``Ignore*`` are never read, and points inside them are dropped;
- a training region of class **Complete** (or a square ``sparsecell suggest`` proposed,
  class ``Annotate next``, once it holds a click) is one where *every* tumour cell was
  clicked: the loss is told so (no cell there is unclicked). A suggested square with no
  click yet is left out; its proposed cells (class ``Annotate next: check``) count only
  once reclassified as a tumour class.

A slide whose file records no resolution (or a wrong one) takes it from **mpp.csv** in
the folder: a header ``slide,mpp`` and one line per such slide (``S1.tif,0.25``: its file
name and level-0 um per px). The value must be plausible for a slide (0.05-20 um/px); it
wins over the file's own, with a warning where the two differ.

Points outside every region are ignored (the log gives the count). Each region becomes
one or more windows of at most ``window`` px a side at the model's resolution
(``eval.mpp``): the samples. In a validation window the pixels outside the region are
painted white, so detections there are not counted against the model.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import numpy as np

from ..errors import AnnotationError, ConfigError
from ..formats.points import Points
from .base import Item, PointDataset, natural_key

__all__ = ["dataset", "splits", "SPLITS", "annotation_file", "is_exhaustive", "WINDOW", "MPP_FILE", "slide_mpps"]

SPLITS = ("train", "validation")
#: The largest window side at the model's resolution, px.
WINDOW = 2048
_ANNOTATION_SUFFIXES = (".geojson", ".json", ".geojson.gz", ".json.gz")
#: The per-slide resolution file in a slide folder, and the most bytes it may have.
MPP_FILE = "mpp.csv"
_MPP_FILE_MAX_BYTES = 10_000_000


def slide_mpps(root: Path, slides: list[Path]) -> dict[str, float]:
    """The resolutions ``root/mpp.csv`` gives (slide file name -> level-0 um/px), {} when
    there is no such file; a one-line AnnotationError naming the file and line for a
    bad header, value, duplicate or a name that is none of ``slides``."""
    import csv

    from ..slides.reader import MPP_RANGE

    path = root / MPP_FILE
    if not path.is_file():
        return {}
    if path.stat().st_size > _MPP_FILE_MAX_BYTES:
        raise AnnotationError(f"{path}: more than {_MPP_FILE_MAX_BYTES:,} bytes; it holds one line per slide")
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise AnnotationError(f"{path}: cannot read ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or [c.strip().lower() for c in rows[0]] != ["slide", "mpp"]:
        raise AnnotationError(f"{path}: the first line must be the header 'slide,mpp'")
    names = {p.name for p in slides}
    out: dict[str, float] = {}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise AnnotationError(f"{path}: line {n}: expected 'slide,mpp', got {','.join(row)!r}")
        name, value = row[0].strip(), row[1].strip()
        try:
            mpp = float(value)
        except ValueError:
            mpp = math.nan
        if not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
            raise AnnotationError(f"{path}: line {n}: {value!r} is not a plausible resolution for a slide "
                                  f"({MPP_RANGE[0]:g}-{MPP_RANGE[1]:g} um per px)")  # fmt: skip
        if name in out:
            raise AnnotationError(f"{path}: line {n}: {name!r} is given twice")
        if name not in names:
            raise AnnotationError(f"{path}: line {n}: {name!r} is none of the annotated slides in {root}")
        out[name] = mpp
    return out


def slide_mpp(sp: Path, s, given: dict[str, float]) -> float:
    """The level-0 um/px training reads ``sp`` (opened as ``s``) at: ``mpp.csv``'s value,
    else the file's own; a one-line error naming the slide when neither exists."""
    mpp = given.get(sp.name)
    if mpp is None:
        if s.mpp is None:
            why = f"states {s.mpp_raw:g} um/px, which is not plausible" if s.mpp_raw else "records no resolution (um per px)"
            raise AnnotationError(f"{sp}: the slide {why}; give it in {sp.parent / MPP_FILE} "
                                  f"(a header 'slide,mpp' and a line '{sp.name},0.25' with its um per px)")  # fmt: skip
        return s.mpp
    if s.mpp is not None and abs(mpp / s.mpp - 1) > 0.02:
        warnings.warn(f"{sp}: {MPP_FILE} gives {mpp:g} um/px; the file states {s.mpp:g}; {mpp:g} is used")
    return mpp


def is_exhaustive(region) -> bool:
    return any("exhaustive" in (t or "").lower() for t in (region.classification, region.name))


def is_complete(region) -> bool:
    """A training region in which every tumour cell was clicked: class ``Complete``, or a
    square ``sparsecell suggest`` proposed (class ``Annotate next``) that holds clicks. The
    class decides; the name only where the region has none, so a suggested square
    reclassified (say ``Region``) is an ordinary region whose clicks are a sample, whatever
    its name still says."""
    told = region.classification or region.name or ""
    return any(w in told.lower() for w in ("complete", "annotate next"))


def _is_ignore(region) -> bool:
    return (region.classification or "").lower().startswith("ignore")


def annotation_file(slide: Path) -> Path | None:
    """The QuPath export beside a slide: ``<stem>.geojson``, ``<name>.geojson`` (and .json, .gz)."""
    for base in (slide.with_suffix(""), slide):
        for sfx in _ANNOTATION_SUFFIXES:
            p = base.parent / (base.name + sfx)
            if p.is_file():
                return p
    return None


def _confirmed(names) -> np.ndarray:
    """Which points are clicks: not the candidate cells a suggestion file proposed
    (class ``Annotate next: check``) and the user left unconfirmed (reclassifying one as
    a tumour class confirms it)."""
    return np.array([not (n or "").strip().lower().startswith("annotate next") for n in names], bool)


def _is_rectangle(region) -> bool:
    """One axis-aligned rectangle (its area that of its bounds): its window is all region."""
    x0, y0, x1, y1 = region.bounds
    return len(region.polygons) == 1 and region.area >= 0.99 * (x1 - x0) * (y1 - y0)


def _slides_in(root: Path) -> list[Path]:
    from ..slides.reader import SLIDE_EXTENSIONS

    if not root.is_dir():
        raise AnnotationError(f"{root}: slide folder not found" if not root.exists() else f"{root}: is a file; expected a folder of slides")
    exts = set(SLIDE_EXTENSIONS) | {".png", ".jpg", ".jpeg"}
    found = sorted((p for p in root.iterdir() if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")),
                   key=lambda p: natural_key(p.name))  # fmt: skip
    pairs = [p for p in found if annotation_file(p) is not None]
    if not pairs:
        raise AnnotationError(f"{root}: no slide with a QuPath GeoJSON beside it (e.g. S1.svs and S1.geojson)")
    return pairs


@functools.lru_cache(maxsize=8)
def _annotations(path: str, mtime: float):
    from ..formats.qupath import read_annotations

    return read_annotations(path)


def _read(path: Path):
    return _annotations(str(path), path.stat().st_mtime)


def class_of(name: str | None, classes: tuple[str, ...], path: Path) -> int:
    """The model class of a QuPath class name: the whole name or its last part, matched
    case-insensitively; an unclassified point is the single class of a one-class model."""
    if name is None:
        if len(classes) == 1:
            return 0
        raise AnnotationError(f"{path}: a clicked point has no class; classify points as one of {list(classes)} "
                              "(e.g. 'Tumor: Positive')")  # fmt: skip
    low = [c.lower() for c in classes]
    for cand in (name, name.split(":")[-1]):
        if cand.strip().lower() in low:
            return low.index(cand.strip().lower())
    raise AnnotationError(f"{path}: points of class {name!r} match none of the classes {list(classes)}")


def _windows(bounds, scale: float, window: int, W0: int, H0: int):
    """Level-0 boxes of at most ``window`` model px covering ``bounds``, clipped to the slide."""
    x0, y0, x1, y1 = max(bounds[0], 0.0), max(bounds[1], 0.0), min(bounds[2], W0), min(bounds[3], H0)
    if x1 - x0 < scale or y1 - y0 < scale:
        return []
    side = window * scale
    nx, ny = math.ceil((x1 - x0) / side), math.ceil((y1 - y0) / side)
    sx, sy = (x1 - x0) / nx, (y1 - y0) / ny
    return [(x0 + i * sx, y0 + j * sy, x0 + (i + 1) * sx, y0 + (j + 1) * sy) for j in range(ny) for i in range(nx)]


def _size(box, scale: float) -> tuple[int, int]:
    return max(int(round((box[2] - box[0]) / scale)), 1), max(int(round((box[3] - box[1]) / scale)), 1)


def _window_image(slide_path: str, box, scale: float, region_index: int | None, annotation: str, backend: str) -> np.ndarray:
    """The pixels of one window at model resolution (validation: white outside the region)."""
    from ..slides.reader import open_slide

    w, h = _size(box, scale)
    with open_slide(slide_path, backend=backend) as s:
        img = s.read(box, (w, h))
    if region_index is not None:
        reg = _read(Path(annotation)).regions[region_index]
        inside = _inside_mask(reg, box, scale, w, h)
        img = img.copy()
        img[~inside] = 255
    return img


def _inside_mask(reg, box, scale: float, w: int, h: int) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    xy = np.c_[(xs.ravel() + 0.5) * scale - 0.5 + box[0], (ys.ravel() + 0.5) * scale - 0.5 + box[1]]
    return reg.contains(xy).reshape(h, w)


def _window_points(annotation: str, region_index: int, box, scale: float, classes: tuple[str, ...]) -> Points:
    """The clicked points inside one region and window, in the window's model px."""
    ann = _read(Path(annotation))
    reg = ann.regions[region_index]
    xy = ann.xy
    w, h = _size(box, scale)
    x = (xy[:, 0] - box[0] + 0.5) / scale - 0.5
    y = (xy[:, 1] - box[1] + 0.5) / scale - 0.5
    keep = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    keep &= reg.contains(xy) if len(xy) else keep
    keep &= _confirmed(ann.names)
    for k, other in enumerate(ann.regions):  # Ignore* regions win over every other
        if _is_ignore(other) and len(xy):
            keep &= ~other.contains(xy)
    labels = np.array([class_of(ann.names[i], classes, Path(annotation)) for i in np.flatnonzero(keep)], np.int64)
    return Points(np.c_[x[keep], y[keep]], labels, classes)


def dataset(root: str | Path, split: str = "train", classes=None, mpp: float | None = None, window: int = WINDOW,
            backend: str = "auto", drop_outside: bool = False) -> PointDataset:  # fmt: skip
    """The windows of one split (``train``: the regions; ``validation``: the exhaustive
    regions) of every slide in ``root`` with a QuPath export beside it, at ``mpp`` um
    per px (the model's resolution, ``eval.mpp``)."""
    from ..slides.reader import open_slide

    if split not in SPLITS:
        raise ConfigError(f"slide data has the splits {list(SPLITS)}, not {split!r}")
    if mpp is None:
        raise ConfigError("slide data needs the model's resolution: set eval.mpp (um per px), e.g. eval.mpp=0.5")
    classes = tuple(classes) if classes else ("positive", "negative")
    root = Path(root)
    items = []
    outside = untouched = 0
    slides = _slides_in(root)
    given = slide_mpps(root, slides)
    for sp in slides:
        ann_path = annotation_file(sp)
        ann = _read(ann_path)
        with open_slide(sp, backend=backend) as s:
            scale = mpp / slide_mpp(sp, s, given)
            if abs(scale - 1) < 0.02:
                scale = 1.0
            W0, H0 = s.dimensions
        if split == "train" and len(ann.xy):
            inside = np.zeros(len(ann.xy), bool)
            for reg in ann.regions:
                if not _is_ignore(reg):
                    inside |= reg.contains(ann.xy)
            outside += int((~inside).sum())
        for k, reg in enumerate(ann.regions):
            if _is_ignore(reg) or is_exhaustive(reg) != (split == "validation"):
                continue
            complete = split == "train" and is_complete(reg) and _is_rectangle(reg)
            if (complete and "complete" not in f"{reg.classification} {reg.name}".lower()
                    and not (reg.contains(ann.xy) & _confirmed(ann.names)).any()):  # fmt: skip
                untouched += 1  # a suggestion not annotated yet: neither complete nor a training region
                continue
            for j, box in enumerate(_windows(reg.bounds, scale, window, W0, H0)):
                iid = f"{sp.stem}#r{k}" + (f"w{j}" if j else "")
                items.append(Item(iid, sp, ann_path,
                                  functools.partial(_window_points, str(ann_path), k, box, scale, classes),
                                  functools.partial(_window_image, str(sp), box, scale,
                                                    k if split == "validation" else None, str(ann_path), backend),
                                  complete))  # fmt: skip
    if outside:
        warnings.warn(f"{root}: {outside} clicked points lie outside every region and were ignored")
    if untouched:
        warnings.warn(f"{root}: {untouched} suggested region(s) (class 'Annotate next') hold no click yet and were left "
                      "out; click every tumour cell in them, or class one 'Complete' to say it has none")  # fmt: skip
    if not items:
        what = "exhaustive regions (class 'Exhaustive')" if split == "validation" else "region annotations"
        raise AnnotationError(f"{root}: the slides' QuPath exports hold no {what} for the {split} split")
    return PointDataset(items, classes, name=f"slides/{split}", drop_outside=True)


def splits(root: str | Path | None = None) -> list[str]:
    return list(SPLITS)
