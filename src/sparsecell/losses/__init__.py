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
unlabelled pixels are weighted by the semantic energy, plus SFL.

This module imports no torch: the config reads :data:`ROLES` from it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import DataConfig, LossConfig
    from .methods import SparseLoss

__all__ = ["ROLES", "DEFAULT_LOSS", "FALLBACK_KEEP", "build_loss", "annotated_share"]

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
}

#: sparsecell's default sparse method: the one with the best mean validation F1 in
#: the 3-seed evidence run on CRCHisto and BCData (see the README); the paper's
#: SEL+SFL stays available as ``sel_sfl``.
DEFAULT_LOSS = "pu"

#: The share of cells taken as annotated when the data is sparse already and the user
#: gave no ``loss.pu_keep`` (a guess, announced with a warning).
FALLBACK_KEEP = 0.25


def annotated_share(loss: "LossConfig", data: "DataConfig") -> float:
    """The share of cells that were annotated, as PU-based losses need it: the user's
    ``loss.pu_keep``; else the simulated ``data.keep``; else (data sparse already)
    :data:`FALLBACK_KEEP`, with a warning."""
    if loss.pu_keep is not None:
        return float(loss.pu_keep)
    if data.already_sparse:
        warnings.warn(f"loss {loss.name}: assuming {FALLBACK_KEEP:.0%} of the cells are annotated; "
                      "set loss.pu_keep to your estimate")  # fmt: skip
        return FALLBACK_KEEP
    return float(data.keep)  # the simulated sparsity


def build_loss(loss: "LossConfig", data: "DataConfig") -> "SparseLoss":
    """The loss ``loss.name`` with its settings; ``data`` gives what a loss needs of
    the training data (the annotated share for PU, the cell size for the teacher)."""
    from .methods import LOSS_CLASSES

    return LOSS_CLASSES[loss.name](loss, data)
