"""The semantic energy a trained model assigns to an image given its clicks (for figures)."""

from __future__ import annotations

import numpy as np

from ..formats.points import Points
from ..inference.detector import Detector

__all__ = ["node_energy"]


def node_energy(detector: Detector, image: np.ndarray, points: Points) -> np.ndarray:
    """The semantic energy the model assigns to an image given its (sparse) points:
    (H, W) float, the background channel of E (1 at labelled nodes), in the formulation
    of the model's loss (the paper's single energy for ``sel``/``sel_sfl``, the per-class
    one for ``sel_pc``, ``sel_sfl_pc`` and ``sel_pu``)."""
    import torch

    from ..models.inputs import pad_to_multiple, to_tensor
    from ..losses.functional import pixel_energy
    from ..losses.methods import LOSS_CLASSES
    from .targets import node_labels

    loss = LOSS_CLASSES.get(detector.config.loss.name) if detector.config is not None else None
    per_class = True if loss is None else loss.per_class_energy
    x = pad_to_multiple(to_tensor(image)[None].to(detector.device), detector.model.stride)
    with torch.no_grad():
        emb = detector.model(x).embedding
        Hp, Wp = x.shape[-2:]
        lab = torch.from_numpy(node_labels(points.with_classes(detector.classes), (Hp, Wp), detector.model.stride))
        e = pixel_energy(emb, lab[None].to(emb.device), (Hp, Wp), per_class)
    H, W = image.shape[:2]
    return e[0, 0, :H, :W].cpu().numpy()
