"""A trained detector: from images to scored cell centres, and its scores on annotated data.

:class:`Detector` runs a checkpoint's model (or an ONNX export of it) on images of any
size, tile by tile (:mod:`sparsecell.inference.tiling`), and turns its heatmaps into
cells with :func:`sparsecell.inference.peaks.find_peaks`; :func:`evaluate` scores it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..config import EvalConfig
from ..metrics import PAPER_THRESHOLD, THRESHOLD_GRID, Evaluation
from ..formats.points import Points
from .peaks import find_peaks
from .tiling import HALO, TILE, TileGrid

if TYPE_CHECKING:  # torch is imported where a model runs, not for peak finding
    import torch

__all__ = ["predict_heatmap", "Detector", "evaluate", "resolve_device", "TILE"]

def resolve_device(device: str | None) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` checked against this machine; None: cuda when available."""
    import torch

    from ..errors import ConfigError

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    d = str(device).strip().lower()
    if d == "cpu":
        return d
    if d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: no CUDA GPU is available here; use cpu")
        if d != "cuda" and int(d[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return d
    raise ConfigError(f"device {device!r} is not known; use cpu, cuda or cuda:N")


# ---------------------------------------------------------------------------------------
# Running a model
# ---------------------------------------------------------------------------------------
def predict_heatmap(model, images: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Softmax heatmaps (B, C+1, H, W) and node embeddings of normalised images
    (B, 3, H, W) of any size: padded to the model's stride, cropped back."""
    import torch

    from ..models.inputs import pad_to_multiple

    H, W = images.shape[-2:]
    out = model(pad_to_multiple(images, model.stride))
    return torch.softmax(out.logits.float(), dim=1)[..., :H, :W], out.embedding


class Detector:
    """A trained detector, ready to find cells in images.

    ``eval`` holds how heatmaps become cells and cells are scored (peak distance and
    mode, matching radius, resolution): the same section training validated with.

    Examples
    --------
    >>> det = Detector.from_checkpoint("runs/train/checkpoints/best.ckpt")  # doctest: +SKIP
    >>> points = det.predict(image)  # doctest: +SKIP
    """

    #: Tiles for large images (see :class:`sparsecell.inference.tiling.TileGrid`), in model px.
    tile: int = TILE
    halo: int = HALO

    def __init__(self, model, classes: Sequence[str], threshold: float, eval: EvalConfig | None = None,
                 device: str = "cpu", config=None, engine: str = "torch", index_error: float | None = None):  # fmt: skip
        self.model = model.eval().to(device)
        self.classes = tuple(classes)
        self.threshold = float(threshold)
        self.eval = eval if eval is not None else EvalConfig()
        self.config = config  # the training run's Config, when known
        self.device = device
        self.engine = engine  # what runs the model: torch, or onnx (onnxruntime)
        #: root-mean-square per-image Ki-67 index error on the validation images (percentage
        #: points; None: not measured), which widens a slide's index interval
        self.index_error = None if index_error is None else float(index_error)

    @classmethod
    def from_checkpoint(cls, path, device: str | None = None) -> "Detector":
        """Load a checkpoint written by ``sparsecell train`` (safely: ``weights_only``),
        run by PyTorch (:func:`sparsecell.inference.load.load_detector` also opens
        ONNX exports and chooses the engine)."""
        from pathlib import Path

        from ..errors import CheckpointError
        from ..models import build_model
        from .checkpoint import read_checkpoint

        if Path(path).suffix.lower() == ".onnx":
            raise CheckpointError(f"{path}: an ONNX export, not a checkpoint; open it with load_detector")
        ck = read_checkpoint(path)
        cfg = ck.config
        try:
            model = build_model(cfg.model.size, len(ck.classes), **cfg.model.overrides())
        except ValueError as e:
            raise CheckpointError(f"{ck.path}: its model settings are not valid ({e})") from None
        try:
            model.load_state_dict(ck.model_state())
        except RuntimeError as e:
            raise CheckpointError(f"{ck.path}: weights do not fit the model its config describes ({str(e).splitlines()[0]})") from None
        return cls(model, ck.classes, ck.threshold, cfg.eval, resolve_device(device), cfg, index_error=ck.index_error)

    def heatmap(self, image: np.ndarray) -> np.ndarray:
        """(C+1, H, W) float32 softmax heatmap of a uint8 RGB image; an image with a side
        above :attr:`tile` px is run tile by tile, each pixel from the tile whose core
        holds it (:class:`sparsecell.inference.tiling.TileGrid`)."""
        H, W = image.shape[:2]
        grid = TileGrid(H, W, self.tile, self.halo)
        if grid.single:
            return self._heatmap(image)
        out = np.empty((len(self.classes) + 1, H, W), np.float32)
        for r, c in grid:
            y0, y1, x0, x1 = grid.core_box(r, c)
            ys, ye, xs, xe = grid.input_box(r, c)
            out[:, y0:y1, x0:x1] = self._heatmap(image[ys:ye, xs:xe])[:, y0 - ys:y1 - ys, x0 - xs:x1 - xs]
        return out

    def _heatmap(self, image: np.ndarray) -> np.ndarray:
        import torch

        from ..models.inputs import to_tensor

        with torch.no_grad():
            heat, _ = predict_heatmap(self.model, to_tensor(image)[None].to(self.device))
        return heat[0].cpu().numpy()

    def peaks(self, image: np.ndarray, threshold: float) -> Points:
        """Scored cell centres above ``threshold`` (the model's peak settings)."""
        return find_peaks(self.heatmap(image), self.classes, threshold, self.eval.min_distance, self.eval.peak_mode)

    def predict(self, image: np.ndarray, threshold: float | None = None) -> Points:
        """Cell centres found in a uint8 RGB (H, W, 3) image, with scores."""
        return self.peaks(image, self.threshold if threshold is None else float(threshold))


def evaluate(detector: Detector, samples, radius: float | None = None, threshold: float | None = None) -> Evaluation:
    """Scores of a detector on samples with full annotations, at its threshold (or the
    one given) and its radius (or the one given): per class and pooled, threshold-free
    AP, micro F1 at the paper's fixed 0.7 and at 0.5, and on Ki-67 data (positive and
    negative classes) the index agreement over the images."""
    from ..metrics import average_precision, ki67_agreement, score_points, threshold_sweep

    radius = detector.eval.radius if radius is None else float(radius)
    thr = detector.threshold if threshold is None else float(threshold)
    truth, low = [], []
    for s in samples:
        pts = s.points
        if pts.classes != detector.classes:
            try:
                pts = pts.with_classes(detector.classes)
            except ValueError:
                from ..errors import AnnotationError

                raise AnnotationError(f"{s.image_id}: its annotations have the classes {list(s.points.classes)}, the model "
                                      f"{list(detector.classes)}; evaluate on data of the classes it was trained on") from None  # fmt: skip
        truth.append(pts)
        low.append(detector.peaks(s.image, min(THRESHOLD_GRID[0], thr)))
    kept = [p.above(thr) for p in low]
    scores = score_points(truth, kept, radius)
    fixed = threshold_sweep(truth, low, radius, (0.5, PAPER_THRESHOLD))
    return Evaluation(thr, radius, len(truth), scores, average_precision(truth, low, radius),
                      {t: fixed.f1_at(t) for t in fixed.thresholds}, ki67_agreement(truth, kept))  # fmt: skip


#END
