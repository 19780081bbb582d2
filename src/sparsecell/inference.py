"""From heatmaps to points (and, with a model, from images to points).

``find_peaks`` is the paper's post-processing: per class channel, threshold the
heatmap, then keep local maxima at least ``min_distance`` px apart
(``skimage.feature.peak_local_max`` semantics, but border peaks are kept: cells on
the image edge count in the ground truth too).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .points import Points

__all__ = ["find_peaks", "filter_scores", "THRESHOLD_GRID"]

#: Thresholds tried on validation data: fine below 0.1, where sparse training puts
#: the best one, coarser above (0.01 .. 0.09 step 0.01, 0.1 .. 0.9 step 0.05).
THRESHOLD_GRID = tuple(np.round(np.concatenate([np.arange(0.01, 0.1, 0.01), np.arange(0.1, 0.95, 0.05)]), 3).tolist())


def find_peaks(
    heatmap: np.ndarray,
    classes: Sequence[str],
    threshold: float = 0.7,
    min_distance: int = 6,
    mode: str = "per_class",
) -> Points:
    """Detected cell centres from a (C + 1, H, W) probability heatmap.

    Parameters
    ----------
    heatmap : array (C + 1, H, W)
        Channel 0 background, channel c + 1 class c (softmax probabilities).
    classes : sequence of str
        The C class names.
    threshold : float
        A peak must exceed this value (``threshold_abs``; the paper uses 0.7, but
        under sparse training the best value is far lower: pick it on validation).
    min_distance : int
        Minimum distance between peaks in px (the paper uses 6).
    mode : {"per_class", "foreground"}
        ``per_class``: peaks in each class channel separately (the paper's way).
        ``foreground``: peaks of 1 - background, each given the class whose channel is
        largest there; one cell then never yields two detections of different classes.

    Returns
    -------
    Points
        Peaks with ``scores`` = the heatmap value at the peak.
    """
    from skimage.feature import peak_local_max

    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 3 or heatmap.shape[0] != len(classes) + 1:
        raise ValueError(
            f"find_peaks: heatmap must be (C + 1, H, W) with C = {len(classes)} classes, got shape {heatmap.shape}"
        )
    parts = []
    if mode == "per_class":
        for c in range(len(classes)):
            ch = heatmap[c + 1]
            rc = peak_local_max(ch, min_distance=min_distance, threshold_abs=threshold, exclude_border=False)
            rc = rc[ch[rc[:, 0], rc[:, 1]] > threshold]  # strictly above, as in filter_scores
            parts.append(Points(rc[:, ::-1].astype(np.float64), np.full(len(rc), c), tuple(classes), ch[rc[:, 0], rc[:, 1]]))
        return Points.concat(parts)
    if mode == "foreground":
        fg = 1.0 - heatmap[0]
        rc = peak_local_max(fg, min_distance=min_distance, threshold_abs=threshold, exclude_border=False)
        rc = rc[fg[rc[:, 0], rc[:, 1]] > threshold]
        labels = heatmap[1:, rc[:, 0], rc[:, 1]].argmax(axis=0) if len(rc) else np.zeros(0, np.int64)
        return Points(rc[:, ::-1].astype(np.float64), labels, tuple(classes), fg[rc[:, 0], rc[:, 1]])
    raise ValueError(f"find_peaks: mode must be 'per_class' or 'foreground', got {mode!r}")


def filter_scores(points: Points, threshold: float) -> Points:
    """The peaks above a higher threshold: equal to ``find_peaks`` at that threshold
    when ``points`` came from ``find_peaks`` at a lower one (peak suppression only
    depends on stronger peaks), so a threshold sweep needs one peak search."""
    return points.subset(points.scores > threshold)


# ---------------------------------------------------------------------------------------
# Running a model
# ---------------------------------------------------------------------------------------
def to_tensor(image: np.ndarray) -> "torch.Tensor":
    """uint8 RGB (H, W, 3) -> float (3, H, W), normalised with mean = std = 0.5."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def pad_to_multiple(x: "torch.Tensor", stride: int) -> "torch.Tensor":
    """Pad (..., H, W) at the bottom/right by reflection up to multiples of ``stride``."""
    import torch.nn.functional as F

    H, W = x.shape[-2:]
    ph, pw = (-H) % stride, (-W) % stride
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < H and pw < W else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def predict_heatmap(model, images: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Softmax heatmaps (B, C+1, H, W) and node embeddings of normalised images
    (B, 3, H, W) of any size: padded to the model's stride, cropped back."""
    import torch

    H, W = images.shape[-2:]
    out = model(pad_to_multiple(images, model.stride))
    return torch.softmax(out.logits.float(), dim=1)[..., :H, :W], out.embedding
