"""Progressive pseudo-labelling: the cells the model finds confidently on the training
images, and were not clicked, join the clicks as positives (the ``pu_pseudo`` method).

One round runs after each validation from ``loss.pseudo_start`` of the epochs on:

1. **Calibrate.** The pseudo-label threshold is the lowest swept threshold, at or
   above the one that maximises validation F1, whose validation precision reaches
   ``loss.pseudo_precision`` (validation images are completely annotated, so this
   is a measured precision, not a guess); no round when no threshold reaches it.
   As the model improves, the threshold falls and more cells qualify: easy cells
   first.
2. **Detect.** The model (in eval mode) runs on every whole training image; its peaks
   above that threshold, farther than ``eval.min_distance`` px from every click, are
   the round's candidates.
3. **Keep what is stable.** With ``loss.pseudo_stable`` a candidate becomes a
   pseudo-label only if the previous round found it too (same class, within
   ``eval.radius``); the labels of a round replace those of the round before.
4. **Re-estimate the annotated share.** The model's detections on the training
   images at the F1-best threshold, clicked or not, scaled by the ratio of true cells
   to detections on validation at that threshold, count the training images' cells;
   the clicks over that count is the share of annotated cells
   (:attr:`RoundStats.keep_estimate`), logged as ``keep_model``; with
   ``loss.pseudo_reestimate`` (off by default) the loss takes it unless the user gave
   a share. Off because in a first BCData run (keep 0.1) it moved the share from the
   density estimate's 0.11 to 0.16 and validation F1 fell after it took effect.

The training crops then carry the pseudo-labels' Gaussians as a separate target; the
loss (:class:`~sparsecell.losses.methods.PseudoLabelPU`) counts them as positives
and takes them out of the unlabelled set, while its prior still comes from the clicks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..metrics import Sweep, match_points
from ..formats.points import Points

__all__ = ["PseudoLabeller", "RoundStats", "pseudo_threshold", "count_ratio"]


def pseudo_threshold(sweep: Sweep, precision: float) -> float | None:
    """The lowest threshold of ``sweep``, at or above its F1-best one, whose precision
    is at least ``precision``; None when none is."""
    best, _ = sweep.best()
    tp, fp = np.asarray(sweep.counts, np.float64)[:, 0], np.asarray(sweep.counts, np.float64)[:, 1]
    prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    ok = [t for t, p in zip(sweep.thresholds, prec) if t >= best and p >= precision]
    return min(ok) if ok else None


@dataclass(frozen=True)
class RoundStats:
    epoch: int
    threshold: float  # the pseudo-label threshold
    candidates: int
    labels: int
    clicks: int
    keep_estimate: float  # clicks / the calibrated count of cells on the training images (nan: no detection)


def count_ratio(sweep: Sweep, threshold: float) -> float:
    """True cells per detection on validation at ``threshold``: (tp + fn) / (tp + fp)."""
    tp, fp, fn = np.asarray(sweep.counts, np.float64)[sweep.thresholds.index(threshold)]
    return float((tp + fn) / (tp + fp)) if tp + fp > 0 else float("nan")


def _far_from(points: Points, clicks: Points, distance: float) -> np.ndarray:
    """Which of ``points`` lie farther than ``distance`` from every click, bool (n,)."""
    if not len(points) or not len(clicks):
        return np.ones(len(points), bool)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(clicks.xy).query(points.xy, k=1)
    return d > distance


def _stable(new: Points, old: Points, radius: float) -> np.ndarray:
    """Which of ``new`` match a point of ``old`` of the same class within ``radius``."""
    keep = np.zeros(len(new), bool)
    for c in range(new.num_classes):
        a, b = np.flatnonzero(new.labels == c), np.flatnonzero(old.labels == c)
        if len(a) and len(b):
            m = match_points(old.xy[b], new.xy[a], radius)
            keep[a[np.asarray(m.pairs, np.int64).reshape(-1, 2)[:, 1]]] = True
    return keep


class PseudoLabeller:
    """The pseudo-labels of every training image and the rounds that make them."""

    def __init__(self, n_images: int, classes: Sequence[str], precision: float, stable: bool,
                 min_distance: int, radius: float, peak_mode: str):  # fmt: skip
        self.classes = tuple(classes)
        self.precision, self.stable = precision, stable
        self.min_distance, self.radius, self.peak_mode = min_distance, radius, peak_mode
        empty = Points.empty(self.classes)
        self.labels: list[Points] = [empty] * n_images  # used in training
        self.candidates: list[Points] = [empty] * n_images  # the last round's detections
        self.history: list[RoundStats] = []

    def round(self, model, images: Sequence[np.ndarray], clicks: Sequence[Points], sweep: Sweep, epoch: int) -> RoundStats | None:
        """One round (see the module): returns its statistics, or None if no threshold
        reached the precision (the labels stay as they were)."""
        import torch

        from ..models.inputs import to_tensor
        from ..inference.peaks import find_peaks
        from ..inference.detector import predict_heatmap

        thr = pseudo_threshold(sweep, self.precision)
        if thr is None:
            return None
        if len(self.labels) != len(images):  # built before the training images were known
            empty = Points.empty(self.classes)
            self.labels, self.candidates = [empty] * len(images), [empty] * len(images)
        best, _ = sweep.best()
        was_training = model.training
        model.eval()
        n_cand = n_lab = n_det = 0
        try:
            with torch.no_grad():
                dev = next(model.parameters()).device
                for i, (img, pts) in enumerate(zip(images, clicks)):
                    heat, _ = predict_heatmap(model, to_tensor(img)[None].to(dev))
                    found = find_peaks(heat[0].cpu().numpy(), self.classes, best, self.min_distance, self.peak_mode)
                    n_det += len(found)
                    peaks = found.above(thr)
                    peaks = peaks.subset(_far_from(peaks, pts, self.min_distance))
                    new = peaks.subset(_stable(peaks, self.candidates[i], self.radius)) if self.stable else peaks
                    self.candidates[i], self.labels[i] = peaks, new
                    n_cand += len(peaks)
                    n_lab += len(new)
        finally:
            model.train(was_training)
        n_click = int(sum(len(p) for p in clicks))
        cells = n_det * count_ratio(sweep, best)
        share = min(1.0, n_click / cells) if cells > 0 else float("nan")
        stats = RoundStats(epoch, thr, n_cand, n_lab, n_click, share)
        self.history.append(stats)
        return stats

    # -- checkpoints (torch.load(weights_only=True) reads tensors, lists and numbers) --
    def state_dict(self) -> dict:
        import torch

        def pack(ps: list[Points]) -> list:
            return [torch.as_tensor(np.column_stack([p.xy, p.labels]).astype(np.float64)) for p in ps]

        return {"labels": pack(self.labels), "candidates": pack(self.candidates),
                "history": [list(vars(h).values()) for h in self.history]}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        def unpack(ts) -> list[Points]:
            out = []
            for t in ts:
                a = t.numpy().reshape(-1, 3)
                out.append(Points(a[:, :2], a[:, 2].astype(np.int64), self.classes))
            return out

        if len(state["labels"]) != len(self.labels):
            raise ValueError(f"pseudo-labels for {len(state['labels'])} images, training has {len(self.labels)}")
        self.labels, self.candidates = unpack(state["labels"]), unpack(state["candidates"])
        self.history = [RoundStats(int(e), float(t), int(c), int(n), int(k), float(q)) for e, t, c, n, k, q in state["history"]]
