"""Image arrays to model input: the normalisation every model sees, and padding to its stride."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["to_tensor", "pad_to_multiple"]


def to_tensor(image: np.ndarray) -> "torch.Tensor":
    """uint8 RGB (H, W, 3) -> float (3, H, W), normalised with mean = std = 0.5."""
    import torch

    arr = np.ascontiguousarray(image)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def pad_to_multiple(x: "torch.Tensor", stride: int) -> "torch.Tensor":
    """Pad (..., H, W) at the bottom/right by reflection up to multiples of ``stride``."""
    import torch.nn.functional as F

    H, W = x.shape[-2:]
    ph, pw = (-H) % stride, (-W) % stride
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < H and pw < W else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
