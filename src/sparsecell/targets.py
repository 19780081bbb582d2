"""Training targets from points: Gaussian heatmaps, node labels, simulated sparsity.

Channel layout (shared with the detector and the losses): a heatmap of ``C`` classes
has ``C + 1`` channels; channel 0 is background and channel ``c + 1`` is class ``c``.
"""

from __future__ import annotations

import math

import numpy as np

from .points import Points

__all__ = ["gaussian_heatmap", "node_labels", "sparsify"]


def gaussian_heatmap(points: Points, shape: tuple[int, int], sigma: float = 3.0, truncate: float = 4.0) -> np.ndarray:
    """Point heatmap G of shape (C + 1, H, W), float32, values in [0, 1].

    Class channel ``c + 1`` is the maximum over the points of class ``c`` of
    ``exp(-d^2 / (2 sigma^2))`` (``d`` the distance from the pixel centre to the
    point); channel 0 is ``1 - max`` over the class channels. Each Gaussian is
    evaluated within ``truncate * sigma`` of its point (beyond that it is below 3e-4
    at the default and set to 0).

    Parameters
    ----------
    points : Points
        (x, y) pixel coordinates, 0-based.
    shape : (H, W)
        Image size.
    sigma : float
        Gaussian width in px (about a nucleus radius).

    Examples
    --------
    >>> g = gaussian_heatmap(Points.from_xy([[2, 1]]), (4, 5), sigma=1.0)
    >>> g.shape, float(g[1, 1, 2]), float(g[0, 1, 2])
    ((2, 4, 5), 1.0, 0.0)
    """
    if sigma <= 0:
        raise ValueError(f"gaussian_heatmap: sigma must be > 0, got {sigma}")
    H, W = int(shape[0]), int(shape[1])
    C = points.num_classes
    out = np.zeros((C + 1, H, W), np.float32)
    r = int(math.ceil(truncate * sigma))
    inv = -1.0 / (2.0 * sigma * sigma)
    for (x, y), c in zip(points.xy, points.labels):
        x0, x1 = max(int(math.floor(x)) - r, 0), min(int(math.ceil(x)) + r + 1, W)
        y0, y1 = max(int(math.floor(y)) - r, 0), min(int(math.ceil(y)) + r + 1, H)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.exp(inv * (np.arange(x0, x1) - x) ** 2)  # separable Gaussian
        gy = np.exp(inv * (np.arange(y0, y1) - y) ** 2)
        win = out[c + 1, y0:y1, x0:x1]
        np.maximum(win, np.outer(gy, gx).astype(np.float32), out=win)
    if C:
        out[0] = 1.0 - out[1:].max(axis=0)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def node_labels(points: Points, shape: tuple[int, int], stride: int = 32) -> np.ndarray:
    """Labelled grid nodes, (C, ceil(H / stride), ceil(W / stride)) bool.

    Node (c, i, j) is True when an annotated point of class ``c`` falls in the grid
    cell of rows ``[i*s, (i+1)*s)`` and columns ``[j*s, (j+1)*s)``.
    """
    if stride < 1:
        raise ValueError(f"node_labels: stride must be >= 1, got {stride}")
    H, W = int(shape[0]), int(shape[1])
    h, w = -(-H // stride), -(-W // stride)
    out = np.zeros((points.num_classes, h, w), bool)
    if len(points):
        inside = points.inside(W, H)
        xy = points.xy[inside]
        col = np.floor(xy[:, 0] / stride).astype(np.int64)
        row = np.floor(xy[:, 1] / stride).astype(np.int64)
        out[points.labels[inside], row, col] = True
    return out


def sparsify(
    points: Points,
    keep: float = 0.25,
    seed: int = 0,
    per_class: bool = False,
    region: int | None = None,
    shape: tuple[int, int] | None = None,
) -> Points:
    """Simulate sparse annotation: keep a random fraction of the points.

    Parameters
    ----------
    keep : float in [0, 1]
        Fraction of points kept (``round(keep * n)`` of them).
    seed : int
        The same seed gives the same subset.
    per_class : bool
        Keep the fraction within each class separately (class balance preserved).
    region : int, optional
        Annotate whole square regions of this side (px) instead of single cells:
        regions are taken in random order until ``keep`` of the points are covered;
        the rest of the image is left blank, as annotators who skip areas do.
    shape : (H, W), optional
        Image size, for the region grid (default: the points' extent).

    Returns
    -------
    Points
        The kept points, in their original order.
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"sparsify: keep must lie in [0, 1], got {keep}")
    n = len(points)
    if n == 0 or keep >= 1.0:
        return points
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, bool)
    if region is not None:
        if region < 1:
            raise ValueError(f"sparsify: region must be >= 1 px, got {region}")
        W = shape[1] if shape else int(points.xy[:, 0].max()) + 1
        cols = -(-int(W) // region)
        cell = (np.floor(points.xy[:, 1] / region) * cols + np.floor(points.xy[:, 0] / region)).astype(np.int64)
        target = int(round(keep * n))
        for cid in rng.permutation(np.unique(cell)):
            if mask.sum() >= target:
                break
            mask |= cell == cid
        return points.subset(mask)
    groups = [np.flatnonzero(points.labels == c) for c in range(points.num_classes)] if per_class else [np.arange(n)]
    for idx in groups:
        k = int(round(keep * len(idx)))
        mask[rng.choice(idx, size=k, replace=False)] = True
    return points.subset(mask)
