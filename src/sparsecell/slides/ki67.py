"""Ki-67 proliferation index: counts, the positive/negative class rule, and the hot spot.

The index is positive / (positive + negative) over tumour cells. A class counts as
positive or negative by QuPath's rule (its last ':' part is exactly ``Positive`` /
``Negative``, as in ``Tumor: Positive``) or when it is one of sparsecell's raw names
``positive`` / ``negative`` (any case; these are what :func:`sparsecell.formats.qupath.qupath_class`
maps to QuPath's classes by default).

Each index comes with a 95% interval (:func:`index_interval`): the count's own sampling
error (Wilson), widened by the detector's per-image index error measured on validation
images where the model records one; an interval holding a clinical cut-off
(:data:`~sparsecell.metrics.KI67_CUTOFFS`, 5% and 30%) is flagged.

The hot spot is the square field of a stated side with the highest index among
fields holding at least ``min_cells`` tumour cells, found on a count grid whose step
divides the field side.
"""

from __future__ import annotations

import math

import numpy as np

from ..metrics import KI67_CUTOFFS, is_negative, is_positive, ki67_index, ki67_interval

__all__ = [
    "MIN_CELLS",
    "MAX_GRID_CELLS",
    "ki67_index",
    "is_positive",
    "is_negative",
    "report_warnings",
    "index_interval",
    "interval_basis",
    "cutoff_warning",
    "CountGrid",
]

MIN_CELLS = 500
"""The usual minimum number of tumour cells counted for a reliable Ki-67 index (e.g.
the International Ki67 in Breast Cancer Working Group recommends scoring at least 500
cells); below it the report warns, and hot-spot fields need at least this many."""

#: Largest count grid (number of grid cells) a :class:`CountGrid` allocates.
MAX_GRID_CELLS = 50_000_000


def report_warnings(total: int, min_cells: int = MIN_CELLS) -> list[str]:
    """Warnings for a report over ``total`` tumour cells (empty when there are enough)."""
    total = int(total)
    if total == 0:
        return ["no tumour cells were detected: the Ki-67 index is undefined"]
    if total < min_cells:
        return [f"only {total} tumour cells were counted (fewer than {min_cells}): the Ki-67 index is unreliable"]
    return []


def index_interval(positive: int, negative: int, index_error: float | None = None) -> tuple[list | None, list]:
    """The index's 95% interval ``[low, high]`` (fractions; None with no tumour cell) and
    the clinical cut-offs it holds. ``index_error``: the detector's root-mean-square
    per-image index error on validation images, in percentage points (None: the count's
    sampling error alone)."""
    ci = ki67_interval(positive, negative, None if index_error is None else index_error / 100.0)
    if ci is None:
        return None, []
    lo, hi = ci
    return [round(lo, 4), round(hi, 4)], [c for c in KI67_CUTOFFS if lo <= c <= hi]


def interval_basis(index_error: float | None) -> str:
    """What an index interval accounts for, in words (for a report)."""
    if index_error is None:
        return "the cell count only (the model records no validation index error)"
    return f"the cell count and the model's index error on its validation images (RMS {index_error:.1f} points)"


def cutoff_warning(index: float, ci: list, crossed: list) -> str | None:
    """A warning when the interval of ``index`` holds a clinical cut-off."""
    if not crossed:
        return None
    cuts = " and ".join(f"{c:.0%}" for c in crossed)
    return (f"the Ki-67 index {index:.1%} (95% interval {ci[0]:.1%}-{ci[1]:.1%}) spans the {cuts} cut-off: "
            "the call on either side is uncertain; review this slide")


class CountGrid:
    """Positive and total tumour-cell counts on a square grid over a slide.

    Parameters
    ----------
    width, height : level-0 size of the slide in px.
    cell : grid step in px (level 0); a hot-spot field side must be a multiple of it.

    Raises ValueError for a grid of more than :data:`MAX_GRID_CELLS` cells.
    """

    def __init__(self, width: float, height: float, cell: float):
        for what, v in (("width", width), ("height", height), ("cell", cell)):
            if not (isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v) and v > 0):
                raise ValueError(f"CountGrid: {what} must be a positive number, got {v!r}")
        self.width, self.height, self.cell = float(width), float(height), float(cell)
        self.nx = max(1, math.ceil(self.width / self.cell))
        self.ny = max(1, math.ceil(self.height / self.cell))
        if self.nx * self.ny > MAX_GRID_CELLS:
            raise ValueError(
                f"CountGrid: a {self.nx}x{self.ny} grid ({self.nx * self.ny} cells) is over the "
                f"{MAX_GRID_CELLS} limit; use a larger grid step than {self.cell:g} px"
            )
        self.positive = np.zeros((self.ny, self.nx), np.int32)
        self.total = np.zeros((self.ny, self.nx), np.int32)

    def add(self, xy, positive_mask) -> None:
        """Count tumour cells at ``xy`` (N, 2) level-0 px; ``positive_mask`` (N,) marks
        the positive ones (the others are negative). Points just outside the slide are
        counted in the nearest edge cell."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        pos = np.asarray(positive_mask, dtype=bool).reshape(-1)
        if len(pos) != len(xy):
            raise ValueError(f"CountGrid.add: {len(xy)} coordinates but {len(pos)} mask values")
        if len(xy) == 0:
            return
        if not np.isfinite(xy).all():
            raise ValueError("CountGrid.add: coordinates must be finite")
        ix = np.clip(np.floor(xy[:, 0] / self.cell), 0, self.nx - 1).astype(np.int64)
        iy = np.clip(np.floor(xy[:, 1] / self.cell), 0, self.ny - 1).astype(np.int64)
        flat = iy * self.nx + ix
        for grid, sel in ((self.total, flat), (self.positive, flat[pos])):
            if len(sel):
                u, c = np.unique(sel, return_counts=True)
                grid.reshape(-1)[u] += c.astype(np.int32)

    @staticmethod
    def _window_sums(grid: np.ndarray, k: int) -> np.ndarray:
        """Sums of every k x k window (rows: top, columns: left), via 2-D cumulative sums."""
        s = np.zeros((grid.shape[0] + 1, grid.shape[1] + 1), np.int64)
        np.cumsum(grid, axis=0, dtype=np.int64, out=s[1:, 1:])
        np.cumsum(s[1:, 1:], axis=1, out=s[1:, 1:])
        return s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]

    def hotspot(self, field: float, min_cells: int = MIN_CELLS) -> dict | None:
        """The square field of side ``field`` px (a multiple of the grid step, moved in
        grid steps) with the highest Ki-67 index among fields holding at least
        ``min_cells`` tumour cells (ties: the topmost, then leftmost). Returns
        ``{index, positive, total, x0, y0, x1, y1}`` in level-0 px, or None when no
        field qualifies (or the field is larger than the slide)."""
        k = round(float(field) / self.cell)
        if k < 1 or abs(k * self.cell - float(field)) > 1e-6 * max(float(field), self.cell):
            raise ValueError(f"CountGrid.hotspot: field {field!r} px is not a multiple of the grid step {self.cell:g} px")
        if k > self.nx or k > self.ny:
            return None
        total = self._window_sums(self.total, k)
        ok = total >= max(int(min_cells), 1)
        if not ok.any():
            return None
        positive = self._window_sums(self.positive, k)
        index = np.full(total.shape, -1.0)
        index[ok] = positive[ok] / total[ok]
        i, j = np.unravel_index(int(np.argmax(index)), index.shape)  # first maximum: row-major
        x0, y0 = j * self.cell, i * self.cell
        return {
            "index": float(index[i, j]),
            "positive": int(positive[i, j]),
            "total": int(total[i, j]),
            "x0": float(x0),
            "y0": float(y0),
            "x1": float(x0 + k * self.cell),
            "y1": float(y0 + k * self.cell),
        }
