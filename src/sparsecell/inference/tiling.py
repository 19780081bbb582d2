"""Tiles of a large image or slide, and cell peaks found once across their seams.

A map too large to hold (a slide's heatmap) is computed tile by tile: each tile is run
with :data:`HALO` px of context around its *core*, and each pixel of the stitched map
comes from the one tile whose core holds it (:class:`TileGrid`). :class:`SeamPeaks`
then finds the peaks of that stitched map as the cores arrive, keeping only a thin
frame of each tile until its neighbours are in, so memory does not grow with the slide.

The rule, and why it finds every cell exactly once
--------------------------------------------------
``find_peaks`` keeps a pixel when it equals the maximum of its (2m+1)-square
neighbourhood (m = ``min_distance``) and exceeds the threshold; equal maxima closer
than m are thinned in row-major order. So whether a pixel is a peak depends only on the
map within m of it. For each core:

- its *interior* (farther than m from every side that has a neighbouring tile) is
  decided at once from the core alone;
- its *band* (the rest) is decided when its eight neighbours have arrived, from a
  window of the core's outer frame (2m wide) and the neighbours' frames (m wide).

Every pixel belongs to exactly one core and is decided once, from the same values the
whole stitched map would give: the peaks equal ``find_peaks`` on the stitched map, so a
cell on a seam or a corner is found once. (The one difference: a plateau of equal
maxima wider than m that crosses a seam may be thinned differently, since the
row-major tie-break then reaches beyond m. Softmax heatmaps do not have such
plateaus in practice.) Tiles that were skipped (no tissue) count as background:
class channels 0, background channel 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from ..formats.points import Points

__all__ = ["TILE", "HALO", "TileGrid", "SeamPeaks"]

#: Images with a side longer than this many px are predicted tile by tile (tiles of this
#: side, overlapping by :data:`HALO` px on every side, each keeping its core), so memory
#: stays bounded whatever the image size: the ViG's graph is over the nodes of one tile.
TILE = 1024
#: The overlap kept around each tile's core (px), so no core pixel sits on a tile's edge.
HALO = 64


@dataclass(frozen=True)
class TileGrid:
    """Cores and inputs of the tiles covering an (height, width) map, row-major.

    An image no larger than ``tile`` on either side is one tile, its core the whole
    image. Otherwise cores of ``tile - 2 * halo`` px start at 0; each tile's input adds
    up to ``halo`` px around its core, clipped to the image.

    >>> g = TileGrid(2000, 900)
    >>> g.shape, g.core_box(1, 0), g.input_box(1, 0)
    ((3, 2), (896, 1792, 0, 896), (832, 1856, 0, 900))
    """

    height: int
    width: int
    tile: int = TILE
    halo: int = HALO

    def __post_init__(self):
        if self.height < 1 or self.width < 1:
            raise ValueError(f"TileGrid: the map must be at least 1x1 px, got {self.height}x{self.width}")
        if self.tile <= 2 * self.halo:
            raise ValueError(f"TileGrid: tile {self.tile} must exceed twice the halo {self.halo}")

    @property
    def single(self) -> bool:
        return max(self.height, self.width) <= self.tile

    @property
    def core(self) -> int:
        return max(self.height, self.width) if self.single else self.tile - 2 * self.halo

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        c = self.core
        return -(-self.height // c), -(-self.width // c)

    def __len__(self) -> int:
        r, c = self.shape
        return r * c

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rows, cols = self.shape
        return ((r, c) for r in range(rows) for c in range(cols))

    def core_box(self, r: int, c: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the core of tile (r, c)."""
        k = self.core
        return r * k, min((r + 1) * k, self.height), c * k, min((c + 1) * k, self.width)

    def input_box(self, r: int, c: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the model input of tile (r, c): the core and its halo, clipped."""
        y0, y1, x0, x1 = self.core_box(r, c)
        h = 0 if self.single else self.halo
        return max(y0 - h, 0), min(y1 + h, self.height), max(x0 - h, 0), min(x1 + h, self.width)

    def neighbours(self, r: int, c: int) -> list[tuple[int, int]]:
        rows, cols = self.shape
        return [(r + dr, c + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                if (dr or dc) and 0 <= r + dr < rows and 0 <= c + dc < cols]  # fmt: skip


@dataclass
class _Tile:
    frame: dict | None  # the core's outer frame: {"top", "bottom", "left", "right"} strips (C+1, ., .); None: skipped
    band_done: bool = False


@dataclass
class SeamPeaks:
    """Peaks of a stitched heatmap fed one core at a time (see the module docstring).

    Parameters
    ----------
    grid : TileGrid
    classes : sequence of str
    threshold, min_distance, mode
        As for :func:`sparsecell.inference.peaks.find_peaks`.

    ``add(r, c, core)`` takes the (C+1, h, w) core of tile (r, c) and ``skip(r, c)``
    marks a tile that was not run; each returns the peaks decided by that step, in the
    map's pixel frame (x = column, y = row). After every tile was given, the peaks
    returned altogether are those of ``find_peaks`` on the stitched map.
    """

    grid: TileGrid
    classes: Sequence[str]
    threshold: float
    min_distance: int
    mode: str = "per_class"
    _tiles: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.classes = tuple(self.classes)
        self.m = max(int(self.min_distance), 1)
        self._held = 0  # bytes of frames held now
        self.peak_bytes = 0  # the most held at once

    # -- feeding ---------------------------------------------------------------------
    def add(self, r: int, c: int, core: np.ndarray) -> Points:
        """Take tile (r, c)'s core heatmap (C+1, h, w); the peaks this decides."""
        y0, y1, x0, x1 = self.grid.core_box(r, c)
        core = np.asarray(core, dtype=np.float32)
        if core.shape != (len(self.classes) + 1, y1 - y0, x1 - x0):
            raise ValueError(f"SeamPeaks.add: tile {(r, c)} core must be {(len(self.classes) + 1, y1 - y0, x1 - x0)}, "
                             f"got {core.shape}")  # fmt: skip
        if (r, c) in self._tiles:
            raise ValueError(f"SeamPeaks.add: tile {(r, c)} was given twice")
        w2 = 2 * self.m
        frame = {"top": core[:, :w2].copy(), "bottom": core[:, -w2:].copy(),
                 "left": core[:, :, :w2].copy(), "right": core[:, :, -w2:].copy()}  # fmt: skip
        self._tiles[(r, c)] = _Tile(frame)
        self._held += sum(a.nbytes for a in frame.values())
        self.peak_bytes = max(self.peak_bytes, self._held)
        inner = self._interior(r, c)
        found = [self._decide(core, (y0, x0), inner)] if inner is not None else []
        return _concat(found + self._settle(r, c), self.classes)

    def skip(self, r: int, c: int) -> Points:
        """Mark tile (r, c) as not run (background); the peaks this lets neighbours decide."""
        if (r, c) in self._tiles:
            raise ValueError(f"SeamPeaks.skip: tile {(r, c)} was given twice")
        self._tiles[(r, c)] = _Tile(None, band_done=True)
        return _concat(self._settle(r, c), self.classes)

    @property
    def pending(self) -> int:
        """Tiles whose band is still waiting for a neighbour."""
        return sum(not t.band_done for t in self._tiles.values())

    @property
    def held_bytes(self) -> int:
        """Bytes of tile frames held now (the pipeline's only per-slide map memory);
        ``peak_bytes`` is the most held at once."""
        return self._held

    # -- the rule --------------------------------------------------------------------
    def _sides(self, r: int, c: int) -> tuple[int, int, int, int]:
        """Margins (top, bottom, left, right): m where a neighbouring tile lies, else 0."""
        rows, cols = self.grid.shape
        m = self.m
        return (m if r > 0 else 0, m if r < rows - 1 else 0, m if c > 0 else 0, m if c < cols - 1 else 0)

    def _interior(self, r, c):
        y0, y1, x0, x1 = self.grid.core_box(r, c)
        t, b, lft, rgt = self._sides(r, c)
        iy0, iy1, ix0, ix1 = y0 + t, y1 - b, x0 + lft, x1 - rgt
        return (iy0, iy1, ix0, ix1) if iy0 < iy1 and ix0 < ix1 else None

    def _settle(self, r: int, c: int) -> list[Points]:
        """Decide the bands that (r, c)'s arrival completes; drop frames no longer needed."""
        found = []
        around = [(r, c)] + self.grid.neighbours(r, c)
        check = set(around)  # whose frames may be dropped: these and the neighbours of every band decided now
        for key in around:
            t = self._tiles.get(key)
            if t is not None and not t.band_done and all(n in self._tiles for n in self.grid.neighbours(*key)):
                found.append(self._band(*key))
                t.band_done = True
                check.update(self.grid.neighbours(*key))
        for key in check:
            t = self._tiles.get(key)
            if t is not None and t.frame is not None and t.band_done and all(
                    n in self._tiles and self._tiles[n].band_done for n in self.grid.neighbours(*key)):  # fmt: skip
                self._held -= sum(a.nbytes for a in t.frame.values())
                t.frame = None
        return found

    def _band(self, r: int, c: int) -> Points:
        """Peaks of tile (r, c)'s band, from a window of its frame and its neighbours' frames."""
        y0, y1, x0, x1 = self.grid.core_box(r, c)
        t, b, lft, rgt = self._sides(r, c)
        wy0, wy1, wx0, wx1 = y0 - t, y1 + b, x0 - lft, x1 + rgt  # the window, in map px
        win = np.zeros((len(self.classes) + 1, wy1 - wy0, wx1 - wx0), np.float32)
        win[0] = 1.0  # background where nothing is known (a skipped tile; the core's inside, never read)
        for key in [(r, c)] + self.grid.neighbours(r, c):
            frame = self._tiles[key].frame
            if frame is None:
                continue
            ty0, ty1, tx0, tx1 = self.grid.core_box(*key)
            h, w = ty1 - ty0, tx1 - tx0
            for side, arr in frame.items():  # each strip's place in the map
                sy0 = ty0 + (h - arr.shape[1] if side == "bottom" else 0)
                sx0 = tx0 + (w - arr.shape[2] if side == "right" else 0)
                # the part of the strip inside the window
                ay0, ay1 = max(sy0, wy0), min(sy0 + arr.shape[1], wy1)
                ax0, ax1 = max(sx0, wx0), min(sx0 + arr.shape[2], wx1)
                if ay0 < ay1 and ax0 < ax1:
                    win[:, ay0 - wy0:ay1 - wy0, ax0 - wx0:ax1 - wx0] = arr[:, ay0 - sy0:ay1 - sy0, ax0 - sx0:ax1 - sx0]
        inner = self._interior(r, c)
        pts = self._decide(win, (wy0, wx0), (y0, y1, x0, x1))
        if inner is None or not len(pts):
            return pts
        iy0, iy1, ix0, ix1 = inner
        x, y = pts.xy[:, 0], pts.xy[:, 1]
        return pts.subset(~((y >= iy0) & (y < iy1) & (x >= ix0) & (x < ix1)))  # the interior was decided on arrival

    def _decide(self, heat: np.ndarray, origin: tuple[int, int], region: tuple[int, int, int, int]) -> Points:
        """Peaks of ``heat`` (placed at ``origin`` = (y, x) in the map) that lie in ``region``."""
        from .peaks import find_peaks

        pts = find_peaks(heat, self.classes, self.threshold, self.min_distance, self.mode)
        if not len(pts):
            return pts
        xy = pts.xy + np.array([origin[1], origin[0]], np.float64)
        pts = Points(xy, pts.labels, pts.classes, pts.scores)
        y0, y1, x0, x1 = region
        x, y = xy[:, 0], xy[:, 1]
        return pts.subset((y >= y0) & (y < y1) & (x >= x0) & (x < x1))


def _concat(parts: list[Points], classes: tuple[str, ...]) -> Points:
    parts = [p for p in parts if len(p)]
    return Points.concat(parts) if parts else Points(np.zeros((0, 2)), np.zeros(0, np.int64), classes, np.zeros(0))
