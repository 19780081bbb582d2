"""From heatmaps to points (and, with a model, from images to points).

``find_peaks`` is the paper's post-processing: per class channel, threshold the
heatmap, then keep local maxima at least ``min_distance`` px apart
(``skimage.feature.peak_local_max`` semantics, but border peaks are kept: cells on
the image edge count in the ground truth too).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import EvalConfig
from ..formats.points import Points
from ..metrics import PAPER_THRESHOLD

__all__ = ["find_peaks"]


def find_peaks(
    heatmap: np.ndarray,
    classes: Sequence[str],
    threshold: float = PAPER_THRESHOLD,
    min_distance: int = EvalConfig.min_distance,
    mode: str = EvalConfig.peak_mode,
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
            rc = rc[ch[rc[:, 0], rc[:, 1]] > threshold]  # strictly above, as in Points.above
            parts.append(Points(rc[:, ::-1].astype(np.float64), np.full(len(rc), c), tuple(classes), ch[rc[:, 0], rc[:, 1]]))
        return Points.concat(parts)
    if mode == "foreground":
        fg = 1.0 - heatmap[0]
        rc = peak_local_max(fg, min_distance=min_distance, threshold_abs=threshold, exclude_border=False)
        rc = rc[fg[rc[:, 0], rc[:, 1]] > threshold]
        labels = heatmap[1:, rc[:, 0], rc[:, 1]].argmax(axis=0) if len(rc) else np.zeros(0, np.int64)
        return Points(rc[:, ::-1].astype(np.float64), labels, tuple(classes), fg[rc[:, 0], rc[:, 1]])
    raise ValueError(f"find_peaks: mode must be 'per_class' or 'foreground', got {mode!r}")
