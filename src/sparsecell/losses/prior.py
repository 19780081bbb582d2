"""The share of cells a user annotated, estimated without being told it.

PU-based losses need the share of the cells that carry a click (``keep``): the prior of
positive pixels follows from it. A user does not know it. What they do have, and what
sparsecell asks them for, is validation images (or regions) annotated completely; the
density of cells there against the density of clicks on the training images estimates
the share::

    keep ~ (clicks / training area) / (cells / validation area)

It assumes the training and validation images hold cells at about the same density
(images from the same slides or cohort). Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["KeepEstimate", "estimate_keep"]


@dataclass(frozen=True)
class KeepEstimate:
    share: float  # the estimate, in (0, 1]
    clicks: int
    train_px: int
    cells: int
    val_px: int

    def text(self) -> str:
        return (f"annotated share estimated at {self.share:.1%} ({self.clicks} clicks on {self.train_px / 1e6:.2f} Mpx of "
                f"training images against {self.cells} cells on {self.val_px / 1e6:.2f} Mpx of validation images)")


def estimate_keep(clicks: Sequence[int], train_px: Sequence[int], cells: Sequence[int], val_px: Sequence[int]) -> KeepEstimate | None:
    """The share of annotated cells from per-image counts: ``clicks`` on training images
    of ``train_px`` pixels, ``cells`` on completely annotated validation images of
    ``val_px`` pixels. None when there is nothing to estimate from (no validation
    cells, or no click). Capped at 1 (denser clicks than cells: everything clicked).

    >>> estimate_keep([10, 15], [10_000, 10_000], [50], [10_000]).share
    0.25
    """
    n_click, a_train = int(sum(clicks)), int(sum(train_px))
    n_cell, a_val = int(sum(cells)), int(sum(val_px))
    if n_click == 0 or n_cell == 0 or a_train == 0 or a_val == 0:
        return None
    share = min(1.0, (n_click / a_train) / (n_cell / a_val))
    return KeepEstimate(share, n_click, a_train, n_cell, a_val)
