"""Detection scores as the field computes them: one-to-one matching within a radius,
then precision, recall and F1, micro (summed over images) and per-image averaged; the
threshold sweep that picks the detection threshold; the Ki-67 index, its agreement with
the truth over images (Bland-Altman) and its interval; the record of an evaluation.

Pure numpy/scipy: points in, plain numbers out, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from .formats.points import Points

__all__ = ["Match", "Scores", "match_points", "detection_scores", "score_points", "average_precision", "radius_px",
           "micro_f1", "THRESHOLD_GRID", "PAPER_THRESHOLD", "UNSET_THRESHOLD", "Sweep", "threshold_sweep", "Evaluation",
           "ki67_index", "is_positive", "is_negative", "ki67_classes", "IndexAgreement", "ki67_agreement",
           "ki67_interval", "KI67_CUTOFFS"]  # fmt: skip

#: Thresholds tried on validation data: fine below 0.1, where sparse training puts
#: the best one, coarser above (0.01 .. 0.09 step 0.01, 0.1 .. 0.9 step 0.05).
THRESHOLD_GRID: tuple[float, ...] = tuple(
    np.round(np.concatenate([np.arange(0.01, 0.1, 0.01), np.arange(0.1, 0.95, 0.05)]), 3).tolist()
)
#: The paper's fixed detection threshold (reported beside the validation-chosen one).
PAPER_THRESHOLD = 0.7
#: The threshold a model holds before any validation has chosen one.
UNSET_THRESHOLD = 0.5


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


def micro_f1(tp, fp, fn):
    """F1 = 2 TP / (2 TP + FP + FN) (= 2PR / (P + R)); 1 where there is nothing to find
    and nothing was found. Works on numbers and on numpy arrays alike."""
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)


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
    f1 = float(micro_f1(tp, fp, fn))
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


# ---------------------------------------------------------------------------------------
# The threshold sweep
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sweep:
    """Micro TP/FP/FN over a dataset at each of several detection thresholds, at one
    matching radius (each threshold is matched on its own: with a maximum matching the
    pairs change as detections drop out).

    ``counts`` is (T, 3): tp, fp, fn per threshold; the counts of parts of a dataset
    (e.g. the images of each DDP rank) add up to the whole's.
    """

    thresholds: tuple[float, ...]
    radius: float
    counts: np.ndarray

    @property
    def f1(self) -> np.ndarray:
        """Micro F1 per threshold (:func:`micro_f1`)."""
        return micro_f1(*np.asarray(self.counts).T)

    def best(self) -> tuple[float, float]:
        """(threshold, F1) of the best micro F1; ties go to the lowest threshold."""
        f1 = self.f1
        k = int(np.argmax(f1))
        return float(self.thresholds[k]), float(f1[k])

    def f1_at(self, threshold: float) -> float:
        """Micro F1 at one of the swept thresholds."""
        return float(self.f1[self.thresholds.index(threshold)])


def threshold_sweep(truth: Sequence[Points], peaks: Sequence[Points], radius: float,
                    thresholds: Sequence[float] = THRESHOLD_GRID) -> Sweep:  # fmt: skip
    """Score scored detections (``peaks``, found at a threshold at or below the lowest
    of ``thresholds``) against ``truth`` at every threshold; see :meth:`Points.above`."""
    thresholds = tuple(float(t) for t in thresholds)
    counts = np.zeros((len(thresholds), 3), np.int64)
    if truth:
        for k, t in enumerate(thresholds):
            a = score_points(truth, [p.above(t) for p in peaks], radius)["all"]
            counts[k] = (a.tp, a.fp, a.fn)
    return Sweep(thresholds, float(radius), counts)


# ---------------------------------------------------------------------------------------
# The Ki-67 index
# ---------------------------------------------------------------------------------------
#: Clinical cut-offs of the index (the 2021 International Ki67 in Breast Cancer Working
#: Group: below 5% and at or above 30% are the ranges it considers reliable).
KI67_CUTOFFS: tuple[float, ...] = (0.05, 0.30)


def ki67_index(positive: int, negative: int) -> float | None:
    """positive / (positive + negative), or None when there are no tumour cells."""
    positive, negative = int(positive), int(negative)
    if positive < 0 or negative < 0:
        raise ValueError(f"ki67_index: counts must be >= 0, got {positive} and {negative}")
    total = positive + negative
    return None if total == 0 else positive / total


def _last_part(name: str) -> str:
    return str(name).split(":")[-1].strip()


def is_positive(name: str) -> bool:
    """QuPath's positive class (last part exactly ``Positive``, as in ``Tumor: Positive``)
    or sparsecell's raw ``positive`` (any case)."""
    return _last_part(name) == "Positive" or str(name).strip().lower() == "positive"


def is_negative(name: str) -> bool:
    """QuPath's negative class (last part exactly ``Negative``) or our raw ``negative``."""
    return _last_part(name) == "Negative" or str(name).strip().lower() == "negative"


def ki67_classes(classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Boolean masks over ``classes`` of the positive and the negative ones, or None when
    the classes hold no positive or no negative one (no index to compute)."""
    pos = np.array([is_positive(c) for c in classes], bool)
    neg = np.array([is_negative(c) for c in classes], bool)
    return (pos, neg) if pos.any() and neg.any() else None


def _counts(p: Points, pos: np.ndarray, neg: np.ndarray) -> tuple[int, int]:
    labels = np.asarray(p.labels, np.int64)
    return int(pos[labels].sum()) if len(labels) else 0, int(neg[labels].sum()) if len(labels) else 0


@dataclass(frozen=True)
class IndexAgreement:
    """How a detector's Ki-67 index agrees with the truth over images, in percentage
    points: per image the error is predicted minus true index (images whose truth has
    no tumour cell are left out; one where nothing was detected counts as index 0).

    ``mae``: mean absolute error; ``within_5`` / ``within_10``: share of images within
    5 / 10 points; ``bias``: mean error; ``loa``: Bland-Altman 95% limits of agreement
    (bias -+ 1.96 SD of the errors, NaN with fewer than 2 images); ``rmse``;
    ``pooled_true`` / ``pooled_pred``: the index over all cells of all images, in %.
    """

    errors: tuple[float, ...]
    pooled_true: float
    pooled_pred: float

    @property
    def n_images(self) -> int:
        return len(self.errors)

    def _e(self) -> np.ndarray:
        return np.asarray(self.errors, float)

    @property
    def mae(self) -> float:
        return float(np.abs(self._e()).mean()) if self.errors else float("nan")

    @property
    def rmse(self) -> float:
        return float(np.sqrt((self._e() ** 2).mean())) if self.errors else float("nan")

    @property
    def bias(self) -> float:
        return float(self._e().mean()) if self.errors else float("nan")

    @property
    def loa(self) -> tuple[float, float]:
        if len(self.errors) < 2:
            return float("nan"), float("nan")
        sd = float(self._e().std(ddof=1))
        return self.bias - 1.96 * sd, self.bias + 1.96 * sd

    def within(self, points: float) -> float:
        return float((np.abs(self._e()) <= points).mean()) if self.errors else float("nan")

    def as_dict(self) -> dict:
        lo, hi = self.loa
        return {"n_images": self.n_images, "mae": self.mae, "within_5": self.within(5.0),
                "within_10": self.within(10.0), "bias": self.bias, "loa": [lo, hi], "rmse": self.rmse,
                "pooled_true": self.pooled_true, "pooled_pred": self.pooled_pred,
                "errors": [float(e) for e in self.errors]}  # fmt: skip


def ki67_agreement(truth: Sequence[Points], preds: Sequence[Points]) -> IndexAgreement | None:
    """The index agreement of ``preds`` with ``truth`` (both in the same classes; see
    :class:`IndexAgreement`), or None where the classes define no index."""
    if not truth:
        return None
    masks = ki67_classes(truth[0].classes)
    if masks is None:
        return None
    pos, neg = masks
    errors, tp_, tn_, pp_, pn_ = [], 0, 0, 0, 0
    for t, p in zip(truth, preds, strict=True):
        a, b = _counts(t, pos, neg)
        c, d = _counts(p, pos, neg)
        tp_, tn_, pp_, pn_ = tp_ + a, tn_ + b, pp_ + c, pn_ + d
        if a + b == 0:
            continue
        errors.append(100.0 * ((ki67_index(c, d) or 0.0) - a / (a + b)))
    pooled_t, pooled_p = ki67_index(tp_, tn_), ki67_index(pp_, pn_)
    return IndexAgreement(tuple(errors), float("nan") if pooled_t is None else 100 * pooled_t,
                          float("nan") if pooled_p is None else 100 * pooled_p)  # fmt: skip


def ki67_interval(positive: int, negative: int, model_error: float | None = None) -> tuple[float, float] | None:
    """A 95% interval of the index (fractions) from ``positive`` / ``negative`` counts:
    the Wilson score interval of the count, widened in quadrature by ``model_error``
    (the detector's root-mean-square index error measured on validation images, as a
    fraction; None: the count's sampling error alone). None with no tumour cell."""
    n = int(positive) + int(negative)
    if n == 0:
        return None
    z = 1.959964
    p = positive / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    if model_error:
        half = math.hypot(half, z * float(model_error))
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------------------------------
# The record of an evaluation
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """Scores of a detector on fully annotated images, with the settings that made them.

    ``scores``: per class and ``"all"`` (:class:`Scores`); ``ap``: threshold-free
    average precision (NaN with no true point); ``f1_at``: micro F1 at fixed thresholds
    (the paper's 0.7 and 0.5); ``ki67``: the index agreement where the classes are
    positive and negative (:class:`IndexAgreement`), else None.
    """

    threshold: float
    radius: float
    n_images: int
    scores: dict[str, Scores]
    ap: float
    f1_at: dict[float, float]
    ki67: IndexAgreement | None = None

    @property
    def all(self) -> Scores:
        return self.scores["all"]

    def as_dict(self) -> dict:
        """A JSON-ready dict: ``threshold``, ``radius_px``, ``n_images``, one entry per
        class and ``all`` (:meth:`Scores.as_dict`), ``ap``, ``f1_at`` (keys as strings) and,
        on Ki-67 data, ``ki67`` (:meth:`IndexAgreement.as_dict`)."""
        out = {"threshold": self.threshold, "radius_px": self.radius, "n_images": self.n_images}
        out.update({k: v.as_dict() for k, v in self.scores.items()})
        out["ap"] = self.ap
        out["f1_at"] = {f"{t:g}": f for t, f in self.f1_at.items()}
        if self.ki67 is not None:
            out["ki67"] = self.ki67.as_dict()
        return out
