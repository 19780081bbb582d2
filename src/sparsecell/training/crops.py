"""Training data from samples: sparse annotations, random crops, augmentation, tensors.

* :func:`sparse_points` - the training annotations: the full ones thinned to
  ``data.keep`` (simulated sparsity), or all of them when they are sparse already.
* :func:`augment` - flips, 90-degree rotations and stain jitter of a crop and its points.
* :class:`CropDataset` - random training crops with their targets, for a DataLoader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import ConfigError
from ..formats.points import Points
from ..models.inputs import to_tensor
from .targets import clicks_in_boxes, in_boxes, region_boxes, sparsify

if TYPE_CHECKING:
    import torch

    from ..config import DataConfig
    from ..datasets import Sample

__all__ = ["sparse_points", "sparse_annotations", "region_clicks", "augment", "CropDataset"]


def sparse_points(samples: Sequence["Sample"], data: "DataConfig") -> list[Points]:
    """The training annotations: the full ones thinned to ``data.keep`` as
    ``data.sparsity`` says (per image, reproducible from ``data.sparse_seed``), or all
    of them when already sparse."""
    return sparse_annotations(samples, data)[0]


def sparse_annotations(samples: Sequence["Sample"], data: "DataConfig") -> tuple[list[Points], list | None]:
    """:func:`sparse_points` and, for region sparsity whose regions are known, the
    annotated regions of each image (a list of (x0, y0, x1, y1) boxes; else None)."""
    if data.regions_json is not None:
        given = read_regions_json(data.regions_json)
        regions = [given.get(s.image_id, []) for s in samples]
        points = [region_clicks(s, boxes, data, i) for i, (s, boxes) in enumerate(zip(samples, regions))]
        return points, (regions if data.regions_known else None)
    if data.already_sparse or data.keep >= 1.0:
        known = data.regions_known and any(s.complete for s in samples)  # e.g. suggested regions clicked through
        return [s.points for s in samples], ([[tuple(b) for b in s.complete] for s in samples] if known else None)
    points, regions = [], []
    for i, s in enumerate(samples):
        seed = _image_seed(data, i)
        if data.sparsity == "region":
            boxes = region_boxes(s.points, data.keep, seed, data.region or 128, s.image.shape[:2])
            points.append(s.points.subset(in_boxes(s.points, boxes)))
            regions.append(boxes)
        else:
            points.append(sparsify(s.points, data.keep, seed=seed, per_class=data.per_class, mode=data.sparsity,
                                   image=s.image, beta=data.salient_beta, radius=data.sigma))  # fmt: skip
    return points, (regions if data.sparsity == "region" and data.regions_known else None)


def region_clicks(sample: "Sample", boxes, data: "DataConfig", index: int) -> Points:
    """The clicks of one training image inside its ``data.regions_json`` regions: all its
    cells (``data.sparsity=region``), or ``data.keep`` of each region's cells,
    conspicuous first (``salient``: an annotator who clicks the obvious cells of a
    suggested region; with ``data.regions_known`` the loss is still told the region is
    complete, the mistake of a user who leaves such a square in the export)."""
    return clicks_in_boxes(sample.points, boxes, data.keep, seed=_image_seed(data, index), mode=data.sparsity,
                           image=sample.image, beta=data.salient_beta, radius=data.sigma, per_class=data.per_class)  # fmt: skip


def _image_seed(data: "DataConfig", index: int) -> int:
    """The simulated clicks' seed for training image ``index``: reproducible from ``data.sparse_seed``."""
    return data.sparse_seed * 1_000_003 + index


#: The largest regions file read (a file of boxes; anything bigger is not one).
REGIONS_JSON_BYTES = 64 << 20


def read_regions_json(path) -> dict[str, list[tuple[int, int, int, int]]]:
    """``{image_id: [(x0, y0, x1, y1), ...]}`` (whole px, inside x >= 0, y >= 0) from a JSON file of the completely
    annotated regions of each training image (``data.regions_json``); a file that is not
    one is a :class:`~sparsecell.errors.AnnotationError` naming it."""
    import json
    from pathlib import Path

    from ..errors import AnnotationError

    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: regions file not found (data.regions_json)")
    if path.stat().st_size > REGIONS_JSON_BYTES:
        raise AnnotationError(f"{path}: {path.stat().st_size >> 20} MiB is too large for a regions file (at most {REGIONS_JSON_BYTES >> 20} MiB)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: not JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(raw, dict):
        raise AnnotationError(f"{path}: must map image ids to lists of [x0, y0, x1, y1] boxes")
    out = {}
    for key, boxes in raw.items():
        try:
            b = np.asarray(boxes, np.float64).reshape(-1, 4)
        except (ValueError, TypeError):
            raise AnnotationError(f"{path}: {key!r}: not a list of [x0, y0, x1, y1] boxes") from None
        if not np.isfinite(b).all() or (b[:, 2] <= b[:, 0]).any() or (b[:, 3] <= b[:, 1]).any():
            raise AnnotationError(f"{path}: {key!r}: each box needs finite x0 < x1 and y0 < y1")
        b = np.concatenate([np.floor(np.clip(b[:, :2], 0, None)), np.ceil(np.clip(b[:, 2:], 0, None))], 1)
        out[str(key)] = [tuple(int(v) for v in row) for row in b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]]
    return out


def augment(image: np.ndarray, points: Points, rng: np.random.Generator, flips: bool = True, rot90: bool = True,
            colour_jitter: float = 0.0) -> tuple[np.ndarray, Points]:
    """Random flips, 90-degree rotations and stain jitter of a (H, W, 3) uint8 crop and its points.

    Stain jitter scales and shifts each channel's optical density by up to
    ``colour_jitter`` (relative), a cheap stand-in for stain variation. Channels after
    the third (e.g. a mask stacked on the image) are moved with it but not jittered.
    """
    H, W = image.shape[:2]
    xy = points.xy.copy()
    if flips and rng.random() < 0.5:
        image = image[:, ::-1]
        xy[:, 0] = W - 1 - xy[:, 0]
    if flips and rng.random() < 0.5:
        image = image[::-1]
        xy[:, 1] = H - 1 - xy[:, 1]
    if rot90:
        k = int(rng.integers(4))
        for _ in range(k):  # rotate 90 degrees counter-clockwise: (x, y) -> (y, W' - 1 - x)
            h, w = image.shape[:2]
            image = np.rot90(image)
            xy = np.stack([xy[:, 1], w - 1 - xy[:, 0]], axis=1)
    image = np.ascontiguousarray(image)
    if colour_jitter > 0:
        od = -np.log((image[..., :3].astype(np.float32) + 1.0) / 256.0)
        scale = 1.0 + rng.uniform(-colour_jitter, colour_jitter, size=3).astype(np.float32)
        shift = rng.uniform(-colour_jitter, colour_jitter, size=3).astype(np.float32) * 0.2
        od = np.clip(od * scale + shift, 0.0, None)
        rgb = np.clip(256.0 * np.exp(-od) - 1.0, 0, 255).astype(np.uint8)
        image = np.concatenate([rgb, image[..., 3:]], axis=-1) if image.shape[-1] > 3 else rgb
    return image, Points(xy, points.labels, points.classes, points.scores)


def weight_map(points: Points, shape: tuple[int, int], radius: float) -> np.ndarray:
    """(H, W) float32: each point's weight (its ``scores``) on the pixels within ``radius``
    of it (the nearest point's where discs overlap), 1 elsewhere."""
    from scipy.ndimage import distance_transform_edt

    H, W = shape
    out = np.ones((H, W), np.float32)
    if not len(points):
        return out
    seeds = np.zeros((H, W), bool)
    col = np.clip(np.round(points.xy[:, 0]).astype(int), 0, W - 1)
    row = np.clip(np.round(points.xy[:, 1]).astype(int), 0, H - 1)
    inside = (points.xy[:, 0] > -radius) & (points.xy[:, 0] < W + radius) & (points.xy[:, 1] > -radius) & (points.xy[:, 1] < H + radius)
    if not inside.any():
        return out
    seeds[row[inside], col[inside]] = True
    lookup = np.zeros((H, W), np.float32)
    lookup[row[inside], col[inside]] = points.scores[inside]
    dist, (ri, ci) = distance_transform_edt(~seeds, return_indices=True)
    near = dist <= radius
    out[near] = lookup[ri[near], ci[near]]
    return out


class CropDataset:
    """Random training crops with targets, for a torch DataLoader.

    Item: ``(image (3, crop, crop) float normalised, target (C+1, crop, crop),
    labelled nodes (C, crop/stride, crop/stride) bool, extras)``. The targets come from
    the (sparse) training points only. ``extras`` is a dict, empty unless
    ``regions`` is given (``"known"``: (crop, crop) float, 1 inside an annotated
    region) or :attr:`pseudo` is set (``"pseudo"``: the target heatmap of the
    pseudo-labelled cells, (C+1, crop, crop)). Each epoch draws ``crops_per_image`` crops
    of every image; crops are reproducible from ``seed``, the epoch and the index.
    Images smaller than the crop are padded by reflection (points kept).
    """

    def __init__(self, images: Sequence[np.ndarray], points: Sequence[Points], crop: int, stride: int, sigma: float,
                 crops_per_image: int = 4, seed: int = 0, flips: bool = True, rot90: bool = True,
                 colour_jitter: float = 0.0, regions: Sequence[Sequence[tuple]] | None = None,
                 click_weights: Sequence[np.ndarray] | None = None):
        if crop % stride:
            raise ConfigError(f"data.crop = {crop} is not a multiple of the model stride {stride}")
        if len(images) != len(points) or not images:
            raise ConfigError(f"CropDataset: {len(images)} images and {len(points)} point sets")
        self.images, self.points = list(images), list(points)
        self.crop, self.stride, self.sigma = crop, stride, sigma
        self.crops_per_image, self.seed = crops_per_image, seed
        self.flips, self.rot90, self.colour_jitter = flips, rot90, colour_jitter
        self.known = None  # per image, 1 inside its annotated regions (H, W, 1) uint8
        if regions is not None:
            self.known = []
            for img, boxes in zip(self.images, regions):
                mask = np.zeros((*img.shape[:2], 1), np.uint8)
                for x0, y0, x1, y1 in boxes:
                    mask[y0:y1, x0:x1] = 1
                self.known.append(mask)
        #: per image, the pseudo-labelled cells (set between epochs by pseudo-labelling), or None
        self.pseudo: list[Points] | None = None
        #: per image, a weight per click (``pu_sar``), or None
        self.click_weights = None if click_weights is None else [np.asarray(w, np.float64) for w in click_weights]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.crops_per_image

    def __getitem__(self, i: int):
        import torch

        from .targets import gaussian_heatmap, node_labels

        rng = np.random.default_rng((self.seed, self.epoch, i))
        k = i % len(self.images)
        img, pts = self.images[k], self.points[k]
        H, W = img.shape[:2]
        known = self.known[k] if self.known is not None else None
        c = self.crop
        if H < c or W < c:
            ph, pw = max(c - H, 0), max(c - W, 0)
            mode = "reflect" if ph < H and pw < W else "edge"
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode=mode)
            known = np.pad(known, ((0, ph), (0, pw), (0, 0)), mode=mode) if known is not None else None
            H, W = img.shape[:2]
        y0, x0 = int(rng.integers(H - c + 1)), int(rng.integers(W - c + 1))
        crop = img[y0:y0 + c, x0:x0 + c]
        if known is not None:  # the annotated regions travel with the crop as a 4th channel
            crop = np.concatenate([crop[..., :3], known[y0:y0 + c, x0:x0 + c]], axis=-1)
        n_click = len(pts)
        if self.click_weights is not None:  # the weights travel with the points (as their scores)
            pts = Points(pts.xy, pts.labels, pts.classes, self.click_weights[k])
        if self.pseudo is not None:
            extra = self.pseudo[k]
            sc = None if pts.scores is None else np.concatenate([pts.scores, np.ones(len(extra))])
            pts = Points(np.concatenate([pts.xy, extra.xy]), np.concatenate([pts.labels, extra.labels]), pts.classes, sc)
        m = 4 * self.sigma
        near = (pts.xy[:, 0] > x0 - m - 1) & (pts.xy[:, 0] < x0 + c + m) & (pts.xy[:, 1] > y0 - m - 1) & (pts.xy[:, 1] < y0 + c + m)
        local = pts.subset(near).translate(-x0, -y0)  # points just outside still shape the target
        clicked = np.arange(len(pts))[near] < n_click
        crop, local = augment(crop, local, rng, self.flips, self.rot90, self.colour_jitter)
        extras = {}
        if known is not None:
            extras["known"] = torch.from_numpy(crop[..., 3].astype(np.float32))
            crop = crop[..., :3]
        if self.pseudo is not None:
            extras["pseudo"] = torch.from_numpy(gaussian_heatmap(local.subset(~clicked), (c, c), self.sigma))
            local = local.subset(clicked)
        if self.click_weights is not None:
            extras["weight"] = torch.from_numpy(weight_map(local, (c, c), 3.0 * self.sigma))
        target = gaussian_heatmap(local, (c, c), self.sigma)
        labelled = node_labels(local, (c, c), self.stride)
        return to_tensor(crop), torch.from_numpy(target), torch.from_numpy(labelled), extras
