"""Losses for training from sparse point annotations: one small class per loss
(:mod:`sparsecell.losses.methods`), built by name from the ``loss`` config section
with :func:`build_loss`; the tensor functions they share are in
:mod:`sparsecell.losses.functional`.

Called with the model's ``logits`` (B, C+1, H, W), node ``embedding`` (B, D, h, w), the
sparse target heatmap ``target`` (B, C+1, H, W) and the labelled grid nodes
``labelled`` (B, C, h, w) bool, every loss returns a dict with the total ``loss`` and
its parts (detached, for logging).

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

This module imports no torch: the config reads :data:`ROLES` from it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import DataConfig, LossConfig
    from .methods import SparseLoss

__all__ = ["ROLES", "PU_LOSSES", "DEFAULT_LOSS", "FALLBACK_KEEP", "build_loss", "annotated_share", "needs_share"]

#: The losses by name, and whether each is a baseline or one of ours (the paper's
#: method counts as ours: it is what this project implements).
ROLES = {
    "ce": "baseline",
    "const": "baseline",
    "pu": "baseline",
    "sel": "ours",
    "sel_sfl": "ours",
    "sel_pc": "ours",
    "sel_sfl_pc": "ours",
    "sel_pu": "ours",
    "teacher": "ours",
    "pu_pseudo": "ours",
    "pu_sar": "ours",
}

#: The losses built on the PU risk (they need the share of annotated cells or a prior).
PU_LOSSES = ("pu", "sel_pu", "pu_pseudo", "pu_sar")

#: sparsecell's default sparse method: the one with the best mean validation F1, without
#: an oracle, over the 3-seed runs of random and salient clicks on CRCHisto and BCData
#: (README, "Clicks as users make them"); ``pu`` before 2026-11-28. The paper's SEL+SFL
#: stays available as ``sel_sfl``.
DEFAULT_LOSS = "pu_sar"

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


def build_loss(loss: "LossConfig", data: "DataConfig", keep_estimate: float | None = None) -> "SparseLoss":
    """The loss ``loss.name`` with its settings; ``data`` gives what a loss needs of
    the training data (the cell size for the teacher); ``keep_estimate`` the estimated
    share of annotated cells, for PU-based losses."""
    from .methods import LOSS_CLASSES

    return LOSS_CLASSES[loss.name](loss, data, keep_estimate)
