"""Detection scores as the field computes them: one-to-one matching within a radius,
then precision, recall and F1, micro (summed over images) and per-image averaged.

Pure numpy/scipy: points in, plain numbers out, no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from .points import Points

__all__ = ["Match", "Scores", "match_points", "detection_scores", "score_points", "average_precision", "radius_px"]


@dataclass(frozen=True)
class Match:
    """The matching of one image (one class)."""

    tp: int
    fp: int
    fn: int
    pairs: np.ndarray  # (tp, 2) int: (index into true, index into pred)

    @property
    def n_true(self) -> int:
        return self.tp + self.fn

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp


def _ratio(num: float, den: float, both_empty: float) -> float:
    return num / den if den > 0 else both_empty


@dataclass(frozen=True)
class Scores:
    """Precision, recall and F1 over a set of images.

    ``precision``/``recall``/``f1`` are micro: from TP, FP and FN summed over the
    images (the field's usual headline, e.g. OCELOT). ``*_per_image`` average precision
    and recall over images and take F1 = 2PR / (P + R) of those averages (the SEL
    reference's way). An image with no prediction has precision 1 if it also has no
    true point, else 0; likewise recall with no true point.
    """

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    precision_per_image: float
    recall_per_image: float
    f1_per_image: float
    n_images: int

    def as_dict(self) -> dict:
        return asdict(self)


def radius_px(radius: float, unit: str = "px", mpp: float | None = None) -> float:
    """A matching radius in px, given in px or in um (with the resolution ``mpp`` in um/px)."""
    if unit == "px":
        return float(radius)
    if unit in ("um", "µm"):
        if not mpp or mpp <= 0:
            raise ValueError("radius_px: a radius in um needs the resolution mpp (um per px) > 0")
        return float(radius) / float(mpp)
    raise ValueError(f"radius_px: unit must be 'px' or 'um', got {unit!r}")


def match_points(true_xy, pred_xy, radius: float) -> Match:
    """Match predicted to true points one-to-one within ``radius`` px.

    A maximum matching: the largest number of pairs closer than or at ``radius``,
    and among those the smallest total distance (Hungarian assignment on the
    within-radius graph; pairs beyond the radius are never used).

    Examples
    --------
    >>> m = match_points([[0, 0], [10, 0]], [[1, 0], [30, 0]], radius=5)
    >>> m.tp, m.fp, m.fn
    (1, 1, 1)
    """
    t = np.asarray(true_xy, np.float64).reshape(-1, 2)
    p = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    empty = np.zeros((0, 2), np.int64)
    if len(t) == 0 or len(p) == 0:
        return Match(0, len(p), len(t), empty)
    near = cKDTree(t).query_ball_tree(cKDTree(p), radius)  # exact, zero distances included
    rows = np.repeat(np.arange(len(t)), [len(n) for n in near])
    cols = np.fromiter((j for n in near for j in n), np.int64, count=len(rows))
    if len(rows) == 0:
        return Match(0, len(p), len(t), empty)
    dist = np.hypot(*(t[rows] - p[cols]).T)
    ur, ri = np.unique(rows, return_inverse=True)
    uc, ci = np.unique(cols, return_inverse=True)
    # Cost: a within-radius pair costs its distance; a missing edge costs more than any
    # full set of real edges together, so the assignment first maximises the count.
    big = radius * (min(len(ur), len(uc)) + 1) + 1.0
    cost = np.full((len(ur), len(uc)), big)
    cost[ri, ci] = dist
    r_idx, c_idx = linear_sum_assignment(cost)
    ok = cost[r_idx, c_idx] < big
    pairs = np.stack([ur[r_idx[ok]], uc[c_idx[ok]]], axis=1).astype(np.int64)
    tp = len(pairs)
    return Match(tp, len(p) - tp, len(t) - tp, pairs)


def detection_scores(matches: Iterable[Match]) -> Scores:
    """Aggregate per-image matches into micro and per-image-averaged scores."""
    matches = list(matches)
    tp = sum(m.tp for m in matches)
    fp = sum(m.fp for m in matches)
    fn = sum(m.fn for m in matches)
    p = _ratio(tp, tp + fp, 1.0 if fn == 0 else 0.0)
    r = _ratio(tp, tp + fn, 1.0 if fp == 0 else 0.0)
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    if matches:
        pi = float(np.mean([_ratio(m.tp, m.n_pred, 1.0 if m.fn == 0 else 0.0) for m in matches]))
        ri = float(np.mean([_ratio(m.tp, m.n_true, 1.0 if m.fp == 0 else 0.0) for m in matches]))
    else:
        pi = ri = 0.0
    f1i = 2 * pi * ri / (pi + ri) if pi + ri > 0 else 0.0
    return Scores(tp, fp, fn, p, r, f1, pi, ri, f1i, len(matches))


def score_points(truth: Sequence[Points], preds: Sequence[Points], radius: float) -> dict[str, Scores]:
    """Per-class scores and ``"all"`` (every class's matches pooled) over a dataset.

    Matching is within each class: a prediction of the wrong class is a false
    positive of its class and leaves a false negative in the true one.
    """
    if len(truth) != len(preds):
        raise ValueError(f"score_points: {len(truth)} truths but {len(preds)} predictions")
    if not truth:
        raise ValueError("score_points: no images")
    classes = truth[0].classes
    per_class: dict[str, list[Match]] = {c: [] for c in classes}
    for t, p in zip(truth, preds):
        if p.classes != classes:
            p = p.with_classes(classes)
        for c, name in enumerate(classes):
            per_class[name].append(match_points(t.xy[t.labels == c], p.xy[p.labels == c], radius))
    out = {name: detection_scores(ms) for name, ms in per_class.items()}
    if len(classes) == 1:
        out["all"] = out[classes[0]]
    else:
        # pool per image over classes, so per-image averages stay per image
        n = len(truth)
        pooled = []
        for i in range(n):
            ms = [per_class[c][i] for c in classes]
            pooled.append(Match(sum(m.tp for m in ms), sum(m.fp for m in ms), sum(m.fn for m in ms), np.zeros((0, 2), np.int64)))
        out["all"] = detection_scores(pooled)
    return out


def average_precision(truth: Sequence[Points], preds: Sequence[Points], radius: float) -> float:
    """Threshold-free average precision of scored detections, over all classes.

    Detections are ranked by score over the whole dataset; within each image and
    class, each detection (in that order) is a true positive when an unmatched true
    point lies within ``radius`` (the nearest is taken). AP is the area under the
    precision-recall curve with precision made monotone (all-point interpolation).
    """
    flags, scores = [], []
    n_true = 0
    for t, p in zip(truth, preds):
        if p.scores is None:
            raise ValueError("average_precision: predictions need scores")
        if p.classes != t.classes:
            p = p.with_classes(t.classes)
        n_true += len(t)
        for c in range(t.num_classes):
            txy = t.xy[t.labels == c]
            sel = p.labels == c
            pxy, ps = p.xy[sel], p.scores[sel]
            order = np.argsort(-ps, kind="stable")
            used = np.zeros(len(txy), bool)
            tree = cKDTree(txy) if len(txy) else None
            for k in order:
                hit = False
                if tree is not None:
                    cand = tree.query_ball_point(pxy[k], radius)
                    cand = [j for j in cand if not used[j]]
                    if cand:
                        j = min(cand, key=lambda j: np.hypot(*(txy[j] - pxy[k])))
                        used[j] = True
                        hit = True
                flags.append(hit)
                scores.append(ps[k])
    if n_true == 0:
        return float("nan")
    if not flags:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    f = np.asarray(flags, bool)[order]
    tp = np.cumsum(f)
    fp = np.cumsum(~f)
    recall = tp / n_true
    precision = tp / (tp + fp)
    # monotone precision envelope, then sum over recall steps
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    r_prev = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - r_prev) * precision))
