"""Losses for training from sparse point annotations: one small class per loss
(:mod:`sparsecell.losses.methods`), built by name from the ``loss`` config section
with :func:`build_loss`; the tensor functions they share are in
:mod:`sparsecell.losses.functional`.

Every loss is called with one :class:`~sparsecell.losses.batch.LossBatch`: the model's
``logits`` (B, C+1, H, W), node ``embedding`` (B, D, h, w), the sparse target heatmap
``target`` (B, C+1, H, W), the labelled grid nodes ``labelled`` (B, C, h, w) bool and,
where the step has them, the input ``images``, the global ``step``, the completely
annotated regions ``known``, the pseudo-label target ``pseudo`` and the click
``weight``; it reads the fields it needs and returns a dict with the total ``loss`` and
its parts (detached, for logging). A new method that needs more adds a field to the
record, not a parameter to every loss.

The pixel loss of the weighting family is a weighted soft cross-entropy::

    L = mean_p  sum_c  E_c(p) * ( -G_c(p) * log clip(P_c(p), 1e-10, 1) )

and its members differ in the weight E:

- ``ce``: E = 1 (the paper's "full supervision on sparse labels" baseline);
- ``const``: E = w on unlabelled nodes, 1 on labelled ones (the control);
- ``sel``: E = the semantic energy (Xu et al., BIBM 2023): one energy against all
  labelled nodes, whatever their class, weighting every channel (the paper's formulation);
- ``sel_sfl``: SEL plus the stretched feature loss (the paper's method);
- ``sel_pc``, ``sel_sfl_pc``: the same with an energy per class, the background weighted
  by the smallest (sparsecell's multi-class variant; equal to the above with one class);
- ``teacher``: background weight ``1 - (1 - floor) * q`` on unlabelled nodes, with ``q``
  the foreground probability that a slowly updated (EMA) copy of the model gives
  the pixel (sparsecell's variant: don't punish cells the model already finds).

``pu`` (a peer for missing annotations) replaces the weighting by a non-negative
positive-unlabelled risk estimate. ``sel_pu`` (sparsecell's variant) is ``pu`` whose
unlabelled pixels are weighted by the semantic energy, plus SFL. ``pu_pseudo`` adds
progressive pseudo-labels; ``pu_sar`` weights each click by its inverse click
propensity (clicks biased towards conspicuous cells stand for all cells again).

The method names, their roles and the default are in :mod:`sparsecell.catalogue`; the
share of annotated cells PU-based losses need in :mod:`sparsecell.losses.prior`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..catalogue import DEFAULT_LOSS, PU_LOSSES, ROLES
from .batch import LossBatch
from .prior import FALLBACK_KEEP, annotated_share, needs_share

if TYPE_CHECKING:
    from ..config import DataConfig, LossConfig
    from .methods import SparseLoss

__all__ = ["ROLES", "PU_LOSSES", "DEFAULT_LOSS", "FALLBACK_KEEP", "LossBatch", "build_loss", "annotated_share", "needs_share"]

def build_loss(loss: "LossConfig", data: "DataConfig", keep_estimate: float | None = None) -> "SparseLoss":
    """The loss ``loss.name`` with its settings; ``data`` gives what a loss needs of
    the training data (the cell size for the teacher); ``keep_estimate`` the estimated
    share of annotated cells, for PU-based losses."""
    from .methods import LOSS_CLASSES

    return LOSS_CLASSES[loss.name](loss, data, keep_estimate)
