"""Training targets from points: Gaussian heatmaps, node labels, simulated sparsity.

Channel layout (shared with the detector and the losses): a heatmap of ``C`` classes
has ``C + 1`` channels; channel 0 is background and channel ``c + 1`` is class ``c``.
"""

from __future__ import annotations

import math

import numpy as np

from ..formats.points import Points

__all__ = ["clicks_in_boxes", "gaussian_heatmap", "node_labels", "conspicuity", "region_boxes", "in_boxes", "sparsify"]


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


def conspicuity(image: np.ndarray, points: Points, radius: float = 3.0, relative: bool = False) -> np.ndarray:
    """How conspicuous each cell is: the mean optical density (summed over R, G, B) in a
    box of side ``2 round(radius) + 1`` px around its point, float64 (n,).

    Darker, more strongly stained nuclei (DAB brown or haematoxylin blue) score higher,
    the ones an annotator sees first. Points outside the image score at the nearest pixel.
    ``relative``: instead, the share of the image's tissue pixels (box optical density
    above :data:`GLASS_OD`; all pixels where fewer than 100 are) whose box is lighter than
    the cell's, in [0, 1]: how the cell stands out *in its own image*, so that a darker
    scan or stain batch does not make all of its cells look conspicuous.
    """
    from scipy.ndimage import uniform_filter

    if not len(points):
        return np.zeros(0)
    rgb = np.asarray(image)[..., :3].astype(np.float32)
    od = -np.log((rgb + 1.0) / 256.0).sum(-1)  # (H, W)
    k = 2 * int(round(radius)) + 1
    box = uniform_filter(od, size=k, mode="nearest")
    H, W = od.shape
    col = np.clip(np.floor(points.xy[:, 0]).astype(np.int64), 0, W - 1)
    row = np.clip(np.floor(points.xy[:, 1]).astype(np.int64), 0, H - 1)
    z = box[row, col].astype(np.float64)
    if not relative:
        return z
    step = max(1, int(np.sqrt(box.size / 250_000)))  # a grid of at most about 250,000 reference pixels
    ref = box[::step, ::step].ravel()
    tissue = ref[ref > GLASS_OD]
    ref = np.sort(tissue if len(tissue) >= 100 else ref)
    return np.searchsorted(ref, z, side="right") / len(ref)


#: Box optical density (summed over R, G, B) below which a pixel is glass or blank
#: (about RGB 230 each): left out of :func:`conspicuity`'s relative reference.
GLASS_OD = 0.3


def region_boxes(points: Points, keep: float, seed: int, side: int, shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The square regions (x0, y0, x1, y1) an annotator who works region by region
    annotates: cells of a ``side`` px grid holding points, in random order, until
    ``round(keep * n)`` points are covered (at least one region where there are points)."""
    if side < 1:
        raise ValueError(f"sparsify: region must be >= 1 px, got {side}")
    H, W = int(shape[0]), int(shape[1])
    if not len(points):
        return []
    cols = -(-W // side)
    cell = (np.floor(points.xy[:, 1] / side) * cols + np.floor(points.xy[:, 0] / side)).astype(np.int64)
    rng = np.random.default_rng(seed)
    target = int(round(keep * len(points)))
    covered, boxes = 0, []
    for cid in rng.permutation(np.unique(cell)):
        if covered >= max(target, 1):
            break
        covered += int((cell == cid).sum())
        r, c = divmod(int(cid), cols)
        boxes.append((c * side, r * side, min((c + 1) * side, W), min((r + 1) * side, H)))
    return boxes


def in_boxes(points: Points, boxes) -> np.ndarray:
    """Which points lie in any of the boxes (x0, y0, x1, y1), bool (n,)."""
    mask = np.zeros(len(points), bool)
    x, y = points.xy[:, 0], points.xy[:, 1]
    for x0, y0, x1, y1 in boxes:
        mask |= (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
    return mask


def clicks_in_boxes(points: Points, boxes, keep: float = 1.0, seed: int = 0, mode: str = "region",
                    image: np.ndarray | None = None, beta: float = 2.0, radius: float = 3.0,
                    per_class: bool = False) -> Points:
    """The cells an annotator clicks inside given square regions.

    ``mode="region"``: every cell inside (a region annotated completely). ``random`` or
    ``salient``: in each box on its own, ``keep`` of its cells (at least one where it has
    any), drawn as :func:`sparsify` draws them; salient conspicuity is standardised over
    all the image's cells, so a box of faint cells gets its faint cells clicked last.
    Each box's draw depends only on ``seed`` and the box, so adding boxes in a later
    round leaves the clicks of the earlier ones as they were.
    """
    inside = [in_boxes(points, [b]) for b in boxes]
    if mode == "region" or keep >= 1.0 or not len(points):
        return points.subset(np.logical_or.reduce(inside) if inside else np.zeros(len(points), bool))
    if mode not in ("random", "salient"):
        raise ValueError(f"clicks_in_boxes: mode must be region, random or salient, got {mode!r}")
    if mode == "salient" and image is None:
        raise ValueError("clicks_in_boxes: salient clicking needs the image")
    groups = _groups(points, per_class)
    z = _salient_scores(points, groups, image, beta, radius) if mode == "salient" else np.zeros(len(points))
    mask = np.zeros(len(points), bool)
    for b, m in zip(boxes, inside):
        idx = np.flatnonzero(m & ~mask)  # a cell on two boxes' common edge is drawn once
        if len(idx):
            rng = np.random.default_rng([seed, *(int(v) for v in b)])
            mask[_gumbel_top_k(z, idx, max(1, int(round(keep * len(idx)))), rng)] = True
    return points.subset(mask)


def _groups(points: Points, per_class: bool) -> list[np.ndarray]:
    """The indices drawn from together: each class's (``per_class``) or all."""
    return [np.flatnonzero(points.labels == c) for c in range(points.num_classes)] if per_class else [np.arange(len(points))]


def _salient_scores(points: Points, groups, image: np.ndarray, beta: float, radius: float) -> np.ndarray:
    """``beta`` times each cell's :func:`conspicuity` standardised within its group."""
    z = conspicuity(image, points, radius)
    score = np.zeros(len(points))
    for idx in groups:
        if len(idx):
            score[idx] = beta * (z[idx] - z[idx].mean()) / (z[idx].std() + 1e-12)
    return score


def _gumbel_top_k(score: np.ndarray, idx: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` of ``idx`` drawn without replacement, each with chance proportional to
    ``exp(score)`` (Gumbel top-k; a score of 0 everywhere is a uniform draw)."""
    key = score[idx] + rng.gumbel(size=len(idx))
    return idx[np.argsort(-key, kind="stable")[:k]]


def sparsify(
    points: Points,
    keep: float = 0.25,
    seed: int = 0,
    per_class: bool = False,
    region: int | None = None,
    shape: tuple[int, int] | None = None,
    mode: str | None = None,
    image: np.ndarray | None = None,
    beta: float = 2.0,
    radius: float = 3.0,
) -> Points:
    """Simulate sparse annotation: keep a fraction of the points, as an annotator who
    clicks some of the cells would.

    Parameters
    ----------
    keep : float in [0, 1]
        Fraction of points kept (``round(keep * n)`` of them; in region mode, at least).
    seed : int
        The same seed gives the same subset.
    per_class : bool
        Keep the fraction within each class separately (class balance preserved).
    mode : {"random", "salient", "region"}
        ``random``: every cell equally likely (default; ``region`` given means "region").
        ``salient``: conspicuous cells first: the clicked set is drawn without
        replacement with chance proportional to ``exp(beta * z)``, ``z`` the
        :func:`conspicuity` standardised over the image's cells (Gumbel top-k; beta 0 is
        random; with ``per_class``, standardised and drawn within each class: an
        annotator who clicks the obvious cells of every class). ``region``: whole square regions of side ``region`` px
        (:func:`region_boxes`), every cell inside, none outside.
    image : (H, W, 3) uint8
        The image, for ``salient``.
    radius : float
        The box half-side of :func:`conspicuity`, px (about a nucleus radius).
    shape : (H, W), optional
        Image size, for the region grid (default: the points' extent).

    Returns
    -------
    Points
        The kept points, in their original order.
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"sparsify: keep must lie in [0, 1], got {keep}")
    mode = mode or ("region" if region is not None else "random")
    if mode not in ("random", "salient", "region"):
        raise ValueError(f"sparsify: mode must be random, salient or region, got {mode!r}")
    n = len(points)
    if n == 0 or keep >= 1.0:
        return points
    if mode == "region":
        if shape is None:
            shape = (int(points.xy[:, 1].max()) + 1, int(points.xy[:, 0].max()) + 1)
        return points.subset(in_boxes(points, region_boxes(points, keep, seed, region or 128, shape)))
    rng = np.random.default_rng(seed)
    groups = _groups(points, per_class)
    if mode == "salient":
        if image is None:
            raise ValueError("sparsify: salient sparsity needs the image")
        score = _salient_scores(points, groups, image, beta, radius)  # with per_class, the conspicuous cells of each class
    mask = np.zeros(n, bool)
    for idx in groups:
        k = int(round(keep * len(idx)))
        if mode == "random":
            mask[rng.choice(idx, size=k, replace=False)] = True
        else:
            mask[_gumbel_top_k(score, idx, k, rng)] = True
    return points.subset(mask)
