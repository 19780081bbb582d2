"""Which regions to annotate next: each candidate region described from one pass of the
model over its image, then a batch chosen by a strategy.

Everything here reads the model and the pixels only, never a label the user has not
given. A candidate region is a square of the image (model px); what the model says
about it:

- ``cells``: the cells it finds there at its threshold, per class;
- ``uncertainty``: the sum over its candidate cells (peaks above half the threshold)
  of how undecided each is: ``1 - |score - threshold| / max(threshold, 1 - threshold)``
  for being a cell at all, and, for a cell above the threshold, ``1 - (p1 - p2) / (p1 + p2)``
  between its two likeliest classes; a cell counts the larger of the two;
- ``disagreement`` (with test-time augmentation): the sum over its candidate cells of
  the spread (standard deviation) of the foreground probability under the identity,
  the two flips and the transpose: four passes of the model instead of one;
- ``embedding``: the model's node embeddings averaged over the region, unit length.

Strategies (:data:`STRATEGIES`) rank or pick a batch of ``n`` regions:

- ``uncertain``: the highest uncertainty;
- ``disagree``: the highest disagreement (needs the augmented passes);
- ``diverse``: greedy k-center over the embeddings: each next region the one farthest
  from every region annotated or chosen so far, so a batch is not ten copies of one field;
- ``balance``: the most predicted cells of the classes the clicks under-represent
  (each class weighed by its predicted share over its share of the clicks);
- ``combined``: greedy, each next region the one with the largest product of its
  uncertainty (over the largest) and its embedding distance to every region annotated
  or chosen (over the largest): uncertain *and* unlike what is known;
- ``per_click``: ``combined`` with each region's uncertainty divided by the clicks it
  will cost (its predicted cells + 1): the most undecided cells per click, for a budget
  counted in clicks (the other strategies favour crowded regions);
- ``random``: uniformly at random; ``densest``: the most predicted cells (what a person
  tends to pick). The baselines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..formats.points import Points

__all__ = ["STRATEGIES", "DEFAULT_STRATEGY", "REASONS", "Candidate", "Choice", "grid_boxes", "image_maps",
           "describe_regions", "choose"]  # fmt: skip

STRATEGIES = ("combined", "per_click", "uncertain", "disagree", "diverse", "balance", "random", "densest")
#: The strategy ``sparsecell suggest`` uses unless told: the best area under the
#: validation F1-versus-clicks curve on both CRCHisto and BCData in the simulated loops
#: (3 seeds each; docs/evidence.md, "Annotate next"). No model-based choice beat squares
#: spread at random over the tissue: they pick crowded fields, which cost more clicks.
DEFAULT_STRATEGY = "random"
#: Why a region was chosen, as its name in QuPath says.
REASONS = {"uncertain": "uncertain", "disagree": "uncertain", "diverse": "unlike anything annotated",
           "balance": "rare class", "random": "random", "densest": "many cells"}  # fmt: skip
#: Views of the test-time augmentation: the identity, two flips, the transpose.
TTA_VIEWS = 4


@dataclass
class Candidate:
    """One candidate region and what the model says about it."""

    image: int  # which image (or slide) of the run it lies in
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in that image's model px
    cells: np.ndarray  # (C,) predicted cells per class at the threshold
    uncertainty: float
    embedding: np.ndarray  # (D,), unit length (zeros where the region has no node)
    disagreement: float = float("nan")  # nan: not measured (no augmented passes)
    uncertain_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # the undecided cells, model px


@dataclass(frozen=True)
class Choice:
    index: int  # into the candidates
    rank: int  # 1 first
    score: float  # the strategy's score when it was chosen (larger first)
    reason: str


def grid_boxes(height: int, width: int, side: int, keep=None, exclude: Sequence = (), min_keep: float = 0.5) -> np.ndarray:
    """(n, 4) int boxes x0, y0, x1, y1: a grid of ``side`` px squares centred in the image.

    ``keep``: an optional (H, W) bool mask (tissue); a square needs ``min_keep`` of its
    pixels in it. ``exclude``: boxes (the regions already annotated) that no square may
    overlap.
    """
    side = int(side)
    if side < 1:
        raise ConfigError(f"region side {side} px: must be at least 1 px")
    ny, nx = height // side, width // side
    if ny == 0 or nx == 0:
        return np.zeros((0, 4), int)
    oy, ox = (height - ny * side) // 2, (width - nx * side) // 2
    ys, xs = np.meshgrid(oy + side * np.arange(ny), ox + side * np.arange(nx), indexing="ij")
    boxes = np.stack([xs.ravel(), ys.ravel(), xs.ravel() + side, ys.ravel() + side], 1).astype(int)
    ok = np.ones(len(boxes), bool)
    if keep is not None:
        keep = np.asarray(keep, bool)
        ok &= np.array([keep[y0:y1, x0:x1].mean() >= min_keep for x0, y0, x1, y1 in boxes])
    for ex in np.asarray(exclude, float).reshape(-1, 4):
        ok &= ~((boxes[:, 0] < ex[2]) & (boxes[:, 2] > ex[0]) & (boxes[:, 1] < ex[3]) & (boxes[:, 3] > ex[1]))
    return boxes[ok]


def _views(image: np.ndarray):
    """(forward, inverse) pairs of the augmented views, on (H, W, ...) and (C, H, W) arrays."""
    return [
        (lambda a: a, lambda h: h),
        (lambda a: a[:, ::-1], lambda h: h[:, :, ::-1]),
        (lambda a: a[::-1], lambda h: h[:, ::-1]),
        (lambda a: a.transpose(1, 0, 2), lambda h: h.transpose(0, 2, 1)),
    ]


def image_maps(detector, image: np.ndarray, tta: bool = False):
    """One image's heatmap (C+1, H, W), node embeddings (D, h, w) at the model's stride
    and, with ``tta``, the per-pixel spread of the foreground probability over
    :data:`TTA_VIEWS` views (H, W; else None)."""
    import torch

    from ..inference.detector import predict_heatmap
    from ..inference.tiling import TileGrid
    from ..models.inputs import to_tensor

    model, dev = detector.model, detector.device
    H, W = image.shape[:2]
    stride = int(model.stride)

    def run(img):
        grid = TileGrid(img.shape[0], img.shape[1], detector.tile, detector.halo)
        heat = np.empty((len(detector.classes) + 1, img.shape[0], img.shape[1]), np.float32)
        emb = None
        for r, c in ([(None, None)] if grid.single else grid):
            if r is None:
                y0, y1, x0, x1 = ys, ye, xs, xe = 0, img.shape[0], 0, img.shape[1]
            else:
                y0, y1, x0, x1 = grid.core_box(r, c)
                ys, ye, xs, xe = grid.input_box(r, c)
            with torch.no_grad():
                h, e = predict_heatmap(model, to_tensor(np.ascontiguousarray(img[ys:ye, xs:xe]))[None].to(dev))
            heat[:, y0:y1, x0:x1] = h[0].cpu().numpy()[:, y0 - ys:y1 - ys, x0 - xs:x1 - xs]
            e = e[0].float().cpu().numpy()
            if emb is None:
                emb = np.zeros((e.shape[0], -(-img.shape[0] // stride), -(-img.shape[1] // stride)), np.float32)
            gy0, gy1, gx0, gx1 = y0 // stride, -(-y1 // stride), x0 // stride, -(-x1 // stride)
            ly0, lx0 = gy0 - ys // stride, gx0 - xs // stride
            part = e[:, ly0:ly0 + gy1 - gy0, lx0:lx0 + gx1 - gx0]
            emb[:, gy0:gy0 + part.shape[1], gx0:gx0 + part.shape[2]] = part
        return heat, emb

    heat, emb = run(image)
    spread = None
    if tta:
        fg = [1.0 - heat[0]]
        for fwd, inv in _views(image)[1:]:
            h, _ = run(np.ascontiguousarray(fwd(image)))
            fg.append(1.0 - inv(h)[0])
        spread = np.std(np.stack(fg), axis=0).astype(np.float32)
    return heat, emb, spread


def _cell_uncertainty(heat: np.ndarray, peaks: Points, threshold: float) -> np.ndarray:
    """Per candidate cell, how undecided the model is (0 sure to 1 undecided)."""
    if not len(peaks):
        return np.zeros(0)
    s = np.asarray(peaks.scores, np.float64)
    det = np.clip(1.0 - np.abs(s - threshold) / max(threshold, 1.0 - threshold), 0.0, 1.0)
    if heat.shape[0] <= 2:
        return det
    x = np.clip(np.round(peaks.xy[:, 0]).astype(int), 0, heat.shape[2] - 1)
    y = np.clip(np.round(peaks.xy[:, 1]).astype(int), 0, heat.shape[1] - 1)
    p = np.sort(heat[1:, y, x], axis=0)[::-1]  # (C, n), likeliest first
    cls = 1.0 - (p[0] - p[1]) / np.maximum(p[0] + p[1], 1e-9)
    return np.maximum(det, np.where(s >= threshold, cls, 0.0))


def describe_regions(detector, image: np.ndarray, boxes, image_index: int = 0, tta: bool = False,
                     threshold: float | None = None) -> list[Candidate]:  # fmt: skip
    """What the model says about each of ``boxes`` (x0, y0, x1, y1) of ``image``: one
    pass of the model (four with ``tta``)."""
    from ..inference.peaks import find_peaks

    thr = detector.threshold if threshold is None else float(threshold)
    heat, emb, spread = image_maps(detector, image, tta)
    low = find_peaks(heat, detector.classes, max(thr * 0.5, 1e-3), detector.eval.min_distance, detector.eval.peak_mode)
    u = _cell_uncertainty(heat, low, thr)
    stride = int(detector.model.stride)
    out = []
    for x0, y0, x1, y1 in np.asarray(boxes, int).reshape(-1, 4):
        x, y = low.xy[:, 0], low.xy[:, 1]
        inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        found = inside & (np.asarray(low.scores) >= thr)
        cells = np.bincount(low.labels[found], minlength=len(detector.classes)).astype(float)
        e = emb[:, y0 // stride:max(y0 // stride + 1, y1 // stride), x0 // stride:max(x0 // stride + 1, x1 // stride)]
        e = e.reshape(e.shape[0], -1).mean(1) if e.size else np.zeros(emb.shape[0])
        e = e / max(float(np.linalg.norm(e)), 1e-12)
        dis = float("nan")
        if spread is not None:
            xi = np.clip(np.round(x[inside]).astype(int), 0, spread.shape[1] - 1)
            yi = np.clip(np.round(y[inside]).astype(int), 0, spread.shape[0] - 1)
            dis = float(spread[yi, xi].sum())
        undecided = inside & (u >= 0.5)
        out.append(Candidate(image_index, (int(x0), int(y0), int(x1), int(y1)), cells, float(u[inside].sum()), e,
                             dis, low.xy[undecided].copy()))  # fmt: skip
    return out


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b)) of unit vectors."""
    if not len(a) or not len(b):
        return np.full((len(a), len(b)), np.inf)
    return np.sqrt(np.clip(2.0 - 2.0 * a @ b.T, 0.0, None))


def choose(candidates: Sequence[Candidate], n: int, strategy: str = DEFAULT_STRATEGY, annotated=None,
           clicks_per_class=None, seed: int = 0) -> list[Choice]:  # fmt: skip
    """A batch of ``n`` regions (at most as many as there are candidates), best first.

    ``annotated``: (m, D) embeddings of the regions already annotated (the diversity
    strategies keep away from them); ``clicks_per_class``: the user's clicks per class
    so far (``balance``); ``seed``: ``random``'s draw.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy {strategy!r} is not known; choose one of {', '.join(STRATEGIES)}")
    n = min(int(n), len(candidates))
    if n <= 0:
        return []
    cells = np.array([c.cells.sum() for c in candidates], float)
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(candidates))[:n]
        return [Choice(int(i), k + 1, 0.0, "random") for k, i in enumerate(order)]
    if strategy in ("uncertain", "disagree", "densest", "balance"):
        if strategy == "disagree":
            score = np.array([c.disagreement for c in candidates], float)
            if np.isnan(score).any():
                raise ConfigError("strategy disagree needs the augmented passes (describe_regions(..., tta=True))")
        elif strategy == "uncertain":
            score = np.array([c.uncertainty for c in candidates], float)
        else:
            score = cells if strategy == "densest" else _balance_scores(candidates, clicks_per_class)
        order = np.lexsort((-cells, -score))[:n]  # ties: more cells first
        return [Choice(int(i), k + 1, float(score[i]), REASONS[strategy]) for k, i in enumerate(order)]
    emb = np.stack([c.embedding for c in candidates])
    known = np.asarray(annotated, float).reshape(-1, emb.shape[1]) if annotated is not None and len(annotated) else np.zeros((0, emb.shape[1]))
    unc = np.array([c.uncertainty for c in candidates], float)
    if strategy == "per_click":  # undecided cells per click the region will cost
        unc = unc / (cells + 1.0)
    unc = unc / unc.max() if unc.max() > 0 else np.ones(len(candidates))
    near = _dist(emb, known).min(1) if len(known) else np.full(len(candidates), np.inf)
    chosen: list[Choice] = []
    free = np.ones(len(candidates), bool)
    for k in range(n):
        if np.isinf(near).all():  # nothing known yet: start where the model sees most (uncertain) cells
            start = unc if strategy == "per_click" else cells * (unc if strategy == "combined" else 1.0)
            i = int(np.argmax(np.where(free, start, -np.inf)))
            s, why = float(start[i]), ("many cells" if strategy == "diverse" else REASONS["uncertain"])
        else:
            d = np.where(free, near, -np.inf)
            dn = np.where(free, near, 0.0) / max(float(d[free].max()), 1e-12)
            if strategy == "diverse":
                i = int(np.argmax(d))
                s, why = float(d[i]), REASONS["diverse"]
            else:
                prod = np.where(free, unc * dn, -np.inf)
                i = int(np.argmax(prod))
                s = float(prod[i])
                why = REASONS["uncertain"] if unc[i] >= dn[i] else REASONS["diverse"]
        chosen.append(Choice(i, k + 1, s, why))
        free[i] = False
        near = np.minimum(near, _dist(emb, emb[i:i + 1])[:, 0])
    return chosen


def _balance_scores(candidates: Sequence[Candidate], clicks_per_class) -> np.ndarray:
    """Predicted cells per region, each class weighed by its predicted share over its
    share of the clicks (the under-represented class weighs most; max weight 1)."""
    counts = np.stack([c.cells for c in candidates])  # (n, C)
    if counts.shape[1] < 2 or clicks_per_class is None:
        return counts.sum(1)
    clicks = np.asarray(clicks_per_class, float).reshape(-1)[: counts.shape[1]]
    pred = counts.sum(0) / max(counts.sum(), 1.0)
    got = clicks / max(clicks.sum(), 1.0)
    w = pred / np.maximum(got, 0.5 / max(clicks.sum(), 1.0))
    w = w / max(float(w.max()), 1e-12)
    return counts @ w
