"""The embedded default: procedural Ki-67 tiles (:mod:`sparsecell.datasets.synthetic_tiles`) with exact
points, generated from a seed, so nothing needs downloading.

Splits ``train``, ``validation`` and ``test`` draw their tiles from the seeds
``seed``, ``seed + 1`` and ``seed + 2`` (tile ``i`` of a split from
``tile_seed(split seed, i)``), so they never share a tile.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..formats.points import Points
from .base import Item, PointDataset

__all__ = ["CLASSES", "SPLITS", "dataset", "splits"]

SPLITS = ("train", "validation", "test")


CLASSES = ("positive", "negative")  # = sparsecell.datasets.synthetic_tiles.TUMOUR_CLASSES (checked in the tests)


@functools.lru_cache(maxsize=32)
def _tile(seed: int, size: int) -> tuple[np.ndarray, Points]:
    from .synthetic_tiles import SyntheticConfig, synthetic_tile

    img, pts = synthetic_tile(seed, SyntheticConfig(size=size))
    img.setflags(write=False)  # shared through the cache
    return img, pts


def _image(seed: int, size: int) -> np.ndarray:
    return _tile(seed, size)[0]


def _points(seed: int, size: int) -> Points:
    return _tile(seed, size)[1]


def dataset(root: str | Path | None = None, split: str = "train", n: int = 8, size: int = 256, seed: int = 0,
            drop_outside: bool = False) -> PointDataset:
    """``n`` synthetic tiles of ``size`` px of one split; ``root`` is not used."""
    from .synthetic_tiles import tile_seed

    if split not in SPLITS:
        raise ConfigError(f"synthetic data has the splits {list(SPLITS)}, not {split!r}")
    if n < 1:
        raise ConfigError(f"synthetic data: the {split} split needs at least one tile, got {n}")
    base = int(seed) + SPLITS.index(split)
    items = []
    for i in range(n):
        s = tile_seed(base, i)
        items.append(Item(f"syn{i:04d}", Path(f"synthetic/{split}/syn{i:04d}"), Path(f"synthetic/{split}/syn{i:04d}"),
                          functools.partial(_points, s, int(size)), functools.partial(_image, s, int(size))))  # fmt: skip
    return PointDataset(items, CLASSES, name=f"synthetic/{split}", drop_outside=drop_outside)


def splits(root: str | Path | None = None) -> list[str]:
    return list(SPLITS)
