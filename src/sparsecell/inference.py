"""From heatmaps to points (and, with a model, from images to points).

``find_peaks`` is the paper's post-processing: per class channel, threshold the
heatmap, then keep local maxima at least ``min_distance`` px apart
(``skimage.feature.peak_local_max`` semantics, but border peaks are kept: cells on
the image edge count in the ground truth too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from .points import Points

if TYPE_CHECKING:  # torch is imported where a model runs, not for peak finding
    import torch

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


def predict_heatmap(model, images: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Softmax heatmaps (B, C+1, H, W) and node embeddings of normalised images
    (B, 3, H, W) of any size: padded to the model's stride, cropped back."""
    import torch

    H, W = images.shape[-2:]
    out = model(pad_to_multiple(images, model.stride))
    return torch.softmax(out.logits.float(), dim=1)[..., :H, :W], out.embedding


class Detector:
    """A trained detector, ready to find cells in images.

    Examples
    --------
    >>> det = Detector.from_checkpoint("runs/train/checkpoints/best.ckpt")  # doctest: +SKIP
    >>> points = det.predict(image)  # doctest: +SKIP
    """

    def __init__(self, model, classes: Sequence[str], threshold: float, config: dict | None = None, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.classes = tuple(classes)
        self.threshold = float(threshold)
        self.config = config or {}
        self.device = device
        train = self.config.get("train", {})
        self.min_distance = int(train.get("min_distance", 6))
        self.peak_mode = str(train.get("peak_mode", "per_class"))
        self.radius = float(train.get("radius", 6.0))

    @classmethod
    def from_checkpoint(cls, path, device: str | None = None) -> "Detector":
        """Load a checkpoint written by ``sparsecell train`` (safely: ``weights_only``)."""
        import pickle
        from pathlib import Path

        import torch

        from .config import Config
        from .errors import CheckpointError
        from .models import build_model

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"{path}: not a readable checkpoint ({first[:200]})") from None
        hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
        if not isinstance(hp, dict) or "config" not in hp or "state_dict" not in ckpt:
            raise CheckpointError(f"{path}: not a sparsecell checkpoint (no config or weights inside)")
        cfg = Config.from_dict(hp["config"], source=str(path))
        classes = tuple(hp["classes"])
        model = build_model(cfg.model.size, len(classes), **cfg.model.overrides())
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the model its config describes ({str(e).splitlines()[0]})") from None
        thr = round(float(ckpt["state_dict"].get("threshold", torch.tensor(cfg.train.threshold))), 4)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model, classes, thr, cfg.to_dict(), device)

    def heatmap(self, image: np.ndarray) -> np.ndarray:
        """(C+1, H, W) float32 softmax heatmap of a uint8 RGB image."""
        import torch

        with torch.no_grad():
            heat, _ = predict_heatmap(self.model, to_tensor(image)[None].to(self.device))
        return heat[0].cpu().numpy()

    def predict(self, image: np.ndarray, threshold: float | None = None) -> Points:
        """Cell centres found in a uint8 RGB (H, W, 3) image, with scores."""
        thr = self.threshold if threshold is None else float(threshold)
        return find_peaks(self.heatmap(image), self.classes, thr, self.min_distance, self.peak_mode)


def evaluate(detector: Detector, samples, radius: float | None = None, threshold: float | None = None) -> dict:
    """Scores of a detector on samples with full annotations.

    Returns a dict: ``threshold``, ``radius_px``, per class and ``all`` the micro and
    per-image precision/recall/F1 (see :class:`sparsecell.metrics.Scores`), ``ap``
    (threshold-free average precision) and ``f1_at`` the micro F1 at the paper's
    fixed 0.7 and at 0.5.
    """
    from .metrics import average_precision, score_points

    radius = detector.radius if radius is None else float(radius)
    thr = detector.threshold if threshold is None else float(threshold)
    truth, low = [], []
    for s in samples:
        pts = s.points if s.points.classes == detector.classes else s.points.with_classes(detector.classes)
        truth.append(pts)
        low.append(find_peaks(detector.heatmap(s.image), detector.classes, min(THRESHOLD_GRID[0], thr),
                              detector.min_distance, detector.peak_mode))  # fmt: skip
    scores = score_points(truth, [filter_scores(p, thr) for p in low], radius)
    out = {"threshold": thr, "radius_px": radius, "n_images": len(truth)}
    out.update({k: v.as_dict() for k, v in scores.items()})
    out["ap"] = average_precision(truth, low, radius)
    out["f1_at"] = {str(t): score_points(truth, [filter_scores(p, t) for p in low], radius)["all"].f1 for t in (0.5, 0.7)}
    return out


def node_energy(detector: Detector, image: np.ndarray, points: Points) -> np.ndarray:
    """The semantic energy the model assigns to an image given its (sparse) points:
    (H, W) float, the background channel of E (1 at labelled nodes)."""
    import torch

    from .losses import energy_map, semantic_energy
    from .targets import node_labels

    x = pad_to_multiple(to_tensor(image)[None].to(detector.device), detector.model.stride)
    with torch.no_grad():
        emb = detector.model(x).embedding
        Hp, Wp = x.shape[-2:]
        lab = torch.from_numpy(node_labels(points.with_classes(detector.classes), (Hp, Wp), detector.model.stride))
        e = energy_map(semantic_energy(emb, lab[None].to(emb.device)), (Hp, Wp))
    H, W = image.shape[:2]
    return e[0, 0, :H, :W].cpu().numpy()
