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

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ..catalogue import PU_LOSSES

if TYPE_CHECKING:
    from ..config import DataConfig, LossConfig

__all__ = ["KeepEstimate", "estimate_keep", "click_weights", "SAR_BINS", "SAR_MAX_WEIGHT", "FALLBACK_KEEP", "annotated_share",
           "needs_share"]


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


#: Propensity weights: the conspicuity bins (quantiles of the validation cells of a class),
#: the pseudo-count added to every bin, and the largest weight relative to the mean.
SAR_BINS = 6
SAR_SMOOTHING = 1.0
SAR_MAX_WEIGHT = 5.0


def click_weights(click_z: Sequence[float], click_labels: Sequence[int], cell_z: Sequence[float],
                  cell_labels: Sequence[int], n_classes: int, bins: int = SAR_BINS,
                  max_weight: float = SAR_MAX_WEIGHT, shrink: bool = False, factors: list | None = None):  # fmt: skip
    """Importance weights of the clicked cells when the clicks favour conspicuous cells.

    An annotator who clicks dark cells first labels cells with a propensity ``e(z)``
    that rises with their conspicuity ``z`` (labelled *at random* only given z: the SAR
    assumption of Bekker et al., "Beyond the selected completely at random assumption
    for learning from positive and unlabeled data", ECML-PKDD 2019). The clicks are then
    a biased sample of the cells: ``p(z | clicked) = e(z) p(z | cell) / keep``. Reweighting
    each click by ``1 / e(z) ~ p(z | cell) / p(z | clicked)`` makes the clicks a fair sample
    of all cells again. Both densities are estimated without an oracle, per class:
    ``p(z | cell)`` from the cells of the completely annotated validation images,
    ``p(z | clicked)`` from the clicks, as histograms over the quantile bins of the
    validation cells (``bins`` of them, each count plus one). Weights are scaled to mean
    1 over each class's clicks and capped at ``max_weight`` (the few faint clicks must
    not carry the whole risk). Under random clicks both histograms agree and every
    weight is about 1. Returns an array of weights, one per click (1 for a class with no
    validation cells).

    ``shrink``: the histograms of a few hundred clicks differ by chance alone, and
    unbiased clicks then get weights that only add noise. So each class's weights are
    pulled towards 1 as ``1 + s (w - 1)`` with the positive-part James-Stein factor
    ``s = max(0, 1 - df / X2)``, ``X2`` the chi-square statistic of the two binned samples
    (clicks against validation cells; half a count added to every bin) and ``df = bins - 1``
    its expectation when the clicks are unbiased: no evidence of bias gives weights of 1,
    strong evidence the full weights. ``factors``, if given, receives each class's ``s``
    (1 without ``shrink``; None for a class left at 1).

    >>> w = click_weights([3, 3, 3, 1], [0, 0, 0, 0], [1, 1, 3, 3], [0, 0, 0, 0], 1, bins=2)
    >>> bool(w[3] > w[0])
    True
    """
    import numpy as np

    cz, cl = np.asarray(click_z, float), np.asarray(click_labels, int)
    vz, vl = np.asarray(cell_z, float), np.asarray(cell_labels, int)
    w = np.ones(len(cz))
    for c in range(n_classes):
        ci, vi = np.flatnonzero(cl == c), np.flatnonzero(vl == c)
        if len(ci) == 0 or len(vi) < bins:
            if factors is not None:
                factors.append(None)
            continue
        edges = np.quantile(vz[vi], np.linspace(0, 1, bins + 1)[1:-1])
        b_click = np.searchsorted(edges, cz[ci])
        n_cell = np.bincount(np.searchsorted(edges, vz[vi]), minlength=bins)
        n_click = np.bincount(b_click, minlength=bins)
        p_cell = (n_cell + SAR_SMOOTHING) / (len(vi) + bins * SAR_SMOOTHING)
        p_click = (n_click + SAR_SMOOTHING) / (len(ci) + bins * SAR_SMOOTHING)
        r = (p_cell / p_click)[b_click]
        s = 1.0
        if shrink:
            s = _bias_evidence(n_click, n_cell)
            r = 1.0 + s * (r / r.mean() - 1.0)
        if factors is not None:
            factors.append(s)
        r = r / r.mean()
        for _ in range(50):  # cap, then rescale to mean 1, until both hold
            r = np.minimum(r, max_weight)
            r = r / r.mean()
            if r.max() <= max_weight * (1 + 1e-9):
                break
        w[ci] = np.minimum(r, max_weight)
    return w


def _bias_evidence(clicks, cells) -> float:
    """The positive-part James-Stein factor ``max(0, 1 - df / X2)`` of two binned samples
    (``X2``: the chi-square statistic of homogeneity, half a count added to every bin)."""
    import numpy as np

    table = np.stack([np.asarray(clicks, float), np.asarray(cells, float)]) + 0.5
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    x2 = float(((table - expected) ** 2 / expected).sum())
    df = table.shape[1] - 1
    return max(0.0, 1.0 - df / x2) if x2 > 0 else 0.0


#: The share of cells taken as annotated when the data is sparse already and the user
#: gave no ``loss.pu_keep`` (a guess, announced with a warning).
FALLBACK_KEEP = 0.25


def annotated_share(loss: "LossConfig", data: "DataConfig", estimate: float | None = None) -> float:
    """The share of cells that were annotated, as PU-based losses need it: the user's
    ``loss.pu_keep`` if a number; else (``"auto"``) the ``estimate`` from the data
    (:func:`sparsecell.losses.prior.estimate_keep`, made by training); else
    :data:`FALLBACK_KEEP`, with a warning. The simulated ``data.keep`` is never read:
    a real user does not know it."""
    if loss.pu_keep not in (None, "auto"):
        return float(loss.pu_keep)
    if estimate is not None:
        return float(estimate)
    warnings.warn(f"loss {loss.name}: no completely annotated validation images to estimate the share of annotated "
                  f"cells from; assuming {FALLBACK_KEEP:.0%}; set loss.pu_keep to your estimate")  # fmt: skip
    return FALLBACK_KEEP


def needs_share(loss: "LossConfig") -> bool:
    """Whether the loss needs the annotated share and must estimate it (PU-based, no prior and no share given)."""
    return loss.name in PU_LOSSES and loss.pu_prior is None and loss.pu_keep in (None, "auto")
