"""The one record every loss is called with (:class:`LossBatch`).

A loss reads the fields it needs and ignores the rest, so a new method that needs
something more adds a field here (default None) instead of a parameter to every
loss's ``forward``. Imports no torch (the annotations are strings), so
:mod:`sparsecell.losses` can export it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["LossBatch"]


@dataclass(frozen=True)
class LossBatch:
    """What a training step gives the loss.

    Attributes
    ----------
    logits : torch.Tensor
        The model's logits (B, C+1, H, W), channel 0 the background.
    embedding : torch.Tensor or None
        The node embedding (B, D, h, w) on the grid of graph nodes; read by the
        losses with ``uses_embedding`` (the semantic energy, SFL). None where the
        loss does not need it.
    target : torch.Tensor
        The sparse target heatmap (B, C+1, H, W) from the clicks.
    labelled : torch.Tensor or None
        The labelled grid nodes (B, C, h, w) bool, per class; read by the
        energy, SFL, ``const`` and the teacher. None where the loss does not need it.
    images : torch.Tensor or None
        The normalised input images (B, 3, H, W), for the EMA teacher's forward pass;
        None: no teacher weights (plain cross-entropy).
    step : int or None
        The global step, for warm-ups (SFL, the teacher); None: no warm-up.
    known : torch.Tensor or None
        (B, H, W): 1 inside regions annotated completely (region annotations), where an
        unclicked pixel is background; None: no region is known.
    pseudo : torch.Tensor or None
        (B, C+1, H, W): the target of the pseudo-labelled cells (``pu_pseudo``); None
        before the first round of pseudo-labels.
    weight : torch.Tensor or None
        (B, H, W): each clicked pixel's click weight (``pu_sar``), 1 elsewhere; None:
        every click weighs 1.
    """

    logits: torch.Tensor
    embedding: torch.Tensor | None
    target: torch.Tensor
    labelled: torch.Tensor | None
    images: torch.Tensor | None = None
    step: int | None = None
    known: torch.Tensor | None = None
    pseudo: torch.Tensor | None = None
    weight: torch.Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        """The pixel grid (H, W) of the logits."""
        return tuple(self.logits.shape[-2:])
