"""Where images and their points come from: one module per source, one way in.

Sources (each a module here, owning its layout, its annotation reader and its classes):

* :mod:`~sparsecell.datasets.crchisto` - CRCHistoPhenotypes (H&E), split folders or the authors' layout.
* :mod:`~sparsecell.datasets.bcdata` - BCData (Ki-67 IHC), and the k folds the benchmark uses.
* :mod:`~sparsecell.datasets.shidc` - SHIDC-B-Ki-67 (Ki-67 IHC).
* :mod:`~sparsecell.datasets.folder` - any folder of images with same-stem CSV / GeoJSON points.
* :mod:`~sparsecell.datasets.slides` - whole slides with QuPath region and point annotations.
* :mod:`~sparsecell.datasets.synthetic` - the embedded default: procedural Ki-67 tiles.

Every module has ``dataset(root, split, ...) -> PointDataset`` and ``splits(root)``;
this package adds the ways in: :func:`open_dataset` and :func:`splits` by name,
:func:`detect_source` (guess a folder's kind), :func:`dataset_options` (the one road
from the ``data`` config section to a source's options) and :func:`load_samples` (a
training run's training and validation samples).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import ConfigError
from . import bcdata, crchisto, folder, shidc, slides, synthetic
from .base import Item, PointDataset, Sample, image_folders, require_dir

if TYPE_CHECKING:
    from ..config import Config, DataConfig

__all__ = ["Sample", "Item", "PointDataset", "SOURCES", "open_dataset", "splits", "detect_source", "dataset_options", "load_samples"]

#: The sources by name.
SOURCES: dict[str, ModuleType] = {"crchisto": crchisto, "bcdata": bcdata, "shidc": shidc, "folder": folder, "slides": slides,
                                   "synthetic": synthetic}  # fmt: skip


def _source(name: str) -> ModuleType:
    try:
        return SOURCES[str(name).lower()]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}") from None


def open_dataset(source: str, root: str | Path | None = None, split: str | None = None, **options) -> PointDataset:
    """Open a dataset by name (see :data:`SOURCES`). ``split`` None means the source's
    default (CRCHisto and folders: all of ``root``; BCData: ``test``; synthetic:
    ``train``). ``options`` go to the source's ``dataset`` (e.g. ``mode="classes"``
    for CRCHisto, ``classes=[...]`` for a folder, ``drop_outside=True`` for any);
    an option the source does not take is an error unless it is None."""
    import inspect

    mod = _source(source)
    if root is None and mod is not synthetic:
        raise ConfigError(f"a {source} dataset needs its folder (data.root)")
    takes = set(inspect.signature(mod.dataset).parameters)
    bad = sorted(k for k, v in options.items() if k not in takes and v is not None)
    if bad:
        raise ConfigError(f"{source} data takes no option {bad[0]!r}")
    kw = {k: v for k, v in options.items() if k in takes and v is not None}
    if split is not None:
        kw["split"] = split
    return mod.dataset(root, **kw)


def splits(source: str, root: str | Path | None = None) -> list[str]:
    """The splits of a source that exist under ``root`` (train, validation and test
    first). CRCHisto in the authors' layout has the one split ``"all"``."""
    mod = _source(source)
    if mod is synthetic:
        return synthetic.splits()
    return mod.splits(require_dir(Path(root), f"{str(source).lower()} folder"))


def detect_source(root: str | Path) -> str:
    """Guess the kind of a dataset folder: ``bcdata`` (images/ + annotations/),
    ``crchisto`` (``imgN_detection.mat`` files), ``shidc`` (``.json`` lists of
    ``{x, y, label_id}`` beside the images, in ``root`` or its split folders) or else
    ``folder`` (CSV or GeoJSON, QuPath's ``.json`` exports included)."""
    root = Path(root)
    if (root / "annotations").is_dir() and (root / "images").is_dir():
        return "bcdata"
    if any(root.glob("**/img*_detection.mat")):
        return "crchisto"
    for where in [root] + (image_folders(root) if root.is_dir() else []):
        for p in sorted(where.glob("*.json"))[:1]:
            return "shidc" if _looks_like_shidc(p) else "folder"
    return "folder"


def _looks_like_shidc(path: Path) -> bool:
    """A JSON list whose first entry has ``label_id`` (GeoJSON is an object or a list of features)."""
    import json

    try:
        if path.stat().st_size > 64 << 20:
            return False
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, list) and bool(doc) and isinstance(doc[0], dict) and "label_id" in doc[0]


def dataset_options(data: "DataConfig", split: str | None = None, mpp: float | None = None) -> dict:
    """The options the ``data`` config section gives its source: CRCHisto's ``mode``,
    a folder's ``classes``, the synthetic tiles' count, size and seed; slides' classes
    and the resolution to read them at (``mpp``: the model's, ``eval.mpp``)."""
    source = str(data.source).lower()
    if source == "slides":
        return {"classes": tuple(data.classes) if data.classes else None, "mpp": mpp}
    if source == "crchisto":
        return {"mode": data.mode}
    if source == "folder":
        return {"classes": tuple(data.classes) if data.classes else None}
    if source == "synthetic":
        n = {"train": data.synthetic_train, "validation": data.synthetic_val, "test": data.synthetic_test}
        return {"n": n.get(split or "train"), "size": data.synthetic_size, "seed": data.synthetic_seed}
    return {}


def load_samples(cfg: "Config") -> tuple[list[Sample], list[Sample], tuple[str, ...]]:
    """A training run's (training samples, validation samples, classes), with their
    full annotations (the sparse ones are drawn by :func:`sparsecell.training.crops.sparse_points`).

    Validation is ``data.val_ids`` taken out of the training split, or else the split
    ``data.val_split``; ``data.train_ids`` restricts training to those images.
    """
    d = cfg.data

    def open_split(split):
        return open_dataset(d.source, d.root, split, **dataset_options(d, split, cfg.eval.mpp))

    train_ds = open_split(d.train_split)
    train = [train_ds[i] for i in range(len(train_ds))]
    if d.val_ids:
        val_set = set(d.val_ids)
        val = [s for s in train if s.image_id in val_set]
        train = [s for s in train if s.image_id not in val_set]
        if len(val) != len(val_set):
            missing = sorted(val_set - {s.image_id for s in val})
            raise ConfigError(f"data.val_ids: {missing[:3]} not found in {d.root} split {d.train_split!r}")
    elif d.val_split:
        val_ds = open_split(d.val_split)
        val = [val_ds[i] for i in range(len(val_ds))]
    else:
        raise ConfigError("set data.val_split or data.val_ids: validation chooses the threshold and the checkpoint")
    if d.train_ids:
        want = set(d.train_ids)
        train = [s for s in train if s.image_id in want]
    if not train or not val:
        raise ConfigError(f"no training ({len(train)}) or validation ({len(val)}) images for {d.source} at {d.root}")
    return train, val, train_ds.classes
