"""The synthetic Ki-67 tile generator: shapes, determinism, and that the ground truth
matches what is drawn (brown positives, blue negatives, nuclei darker than the rest)."""

from __future__ import annotations

import numpy as np
import pytest

from sparsecell.formats.points import Points
from sparsecell.datasets.synthetic_tiles import (
    STAIN_VECTORS,
    TUMOUR_CLASSES,
    SyntheticConfig,
    synthetic_dataset,
    synthetic_tile,
    tile_seed,
)

SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def tiles() -> list[tuple[np.ndarray, Points]]:
    return [synthetic_tile(s) for s in SEEDS]


def _stain_concentrations(img: np.ndarray) -> np.ndarray:
    """Colour deconvolution (Ruifrok & Johnston) of an RGB uint8 image into
    (haematoxylin, DAB, residual) densities, (H, W, 3)."""
    m = np.array([STAIN_VECTORS["hematoxylin"], STAIN_VECTORS["dab"]], np.float64)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    m = np.vstack([m, np.cross(m[0], m[1])])  # (3 stains, 3 channels)
    od = -np.log((img.astype(np.float64) + 1.0) / 256.0)  # (H, W, 3)
    return od @ np.linalg.inv(m)


def _at(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Mean over the 3 x 3 pixels around each point: (N,) + img.shape[2:]."""
    h, w = img.shape[:2]
    ix = np.round(xy[:, 0]).astype(int)
    iy = np.round(xy[:, 1]).astype(int)
    vals = [img[np.clip(iy + dy, 0, h - 1), np.clip(ix + dx, 0, w - 1)] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return np.mean(vals, axis=0)


def test_shapes_and_types(tiles):
    for img, pts in tiles:
        assert img.shape == (256, 256, 3)
        assert img.dtype == np.uint8
        assert isinstance(pts, Points)
        assert pts.classes == TUMOUR_CLASSES == ("positive", "negative")
        assert pts.xy.dtype == np.float64 and pts.xy.shape == (len(pts), 2)
        assert set(np.unique(pts.labels)) <= {0, 1}
        assert pts.scores is None
        assert 20 <= len(pts) <= 200  # 2-4 nests of 15-35 cells, some cut by the border


def test_deterministic():
    a_img, a_pts = synthetic_tile(7)
    b_img, b_pts = synthetic_tile(7)
    assert np.array_equal(a_img, b_img)
    assert np.array_equal(a_pts.xy, b_pts.xy)
    assert np.array_equal(a_pts.labels, b_pts.labels)


def test_different_seeds_differ(tiles):
    (a_img, a_pts), (b_img, b_pts) = tiles[0], tiles[1]
    assert not np.array_equal(a_img, b_img)
    assert np.abs(a_img.astype(int) - b_img.astype(int)).mean() > 5
    assert len(a_pts) != len(b_pts) or not np.allclose(a_pts.xy, b_pts.xy)


@pytest.mark.parametrize("size", [64, 100, 256])
def test_points_inside(size):
    cfg = SyntheticConfig(size=size)
    for s in range(3):
        img, pts = synthetic_tile(s, cfg)
        assert img.shape == (size, size, 3)
        assert pts.inside(size, size).all()
        assert np.all(pts.xy >= 0) and np.all(pts.xy < size)


def test_points_are_subpixel_and_not_overlapping(tiles):
    for _, pts in tiles:
        assert np.any(pts.xy != np.round(pts.xy))  # float centres, not pixel indices
        d = np.hypot(*(pts.xy[:, None, :] - pts.xy[None, :, :]).transpose(2, 0, 1))
        d[np.diag_indices(len(pts))] = np.inf
        # rejection keeps centres >= 0.8 (r_i + r_j), radii >= r0 * exp(-0.35)
        assert d.min() >= 1.6 * 4.5 * np.exp(-0.35) - 1e-9


def test_both_classes_present(tiles):
    counts = np.sum([np.bincount(p.labels, minlength=2) for _, p in tiles], axis=0)
    assert counts[0] > 0 and counts[1] > 0
    frac = counts[0] / counts.sum()
    assert 0.1 < frac < 0.75  # the tiles' Ki-67 indices are drawn from 0.2-0.6


def test_positive_nuclei_are_brown_negative_blue(tiles):
    dab_pos, dab_neg, rb_pos, rb_neg = [], [], [], []
    for img, pts in tiles:
        conc = _stain_concentrations(img)
        dab = _at(conc[..., 1], pts.xy)
        rgb = _at(img.astype(np.float64), pts.xy)  # (N, 3)
        rb = rgb[:, 0] - rgb[:, 2]
        pos = pts.labels == 0
        dab_pos.append(dab[pos])
        dab_neg.append(dab[~pos])
        rb_pos.append(rb[pos])
        rb_neg.append(rb[~pos])
    dab_pos, dab_neg = np.concatenate(dab_pos), np.concatenate(dab_neg)
    rb_pos, rb_neg = np.concatenate(rb_pos), np.concatenate(rb_neg)
    assert dab_pos.mean() > dab_neg.mean() + 0.5
    assert rb_pos.mean() > 0 > rb_neg.mean()  # brown: red > blue; haematoxylin: blue > red
    # nearly every positive is browner than the median negative
    assert np.mean(dab_pos > np.median(dab_neg)) > 0.9


def test_nuclei_darker_than_background(tiles):
    rng = np.random.default_rng(0)
    for img, pts in tiles:
        gray = img.astype(np.float64).mean(axis=2)
        at_points = _at(gray, pts.xy)
        cand = rng.uniform(0, 256, (600, 2))
        d = np.hypot(*(cand[:, None, :] - pts.xy[None, :, :]).transpose(2, 0, 1)).min(axis=1)
        far = cand[d > 12]  # away from every tumour nucleus (may still hit a lymphocyte)
        assert len(far) > 50
        bg = _at(gray, far)
        assert np.median(bg) > np.median(at_points) + 50
        assert np.median(bg) > 180  # pale stroma


def test_points_sit_on_nucleus_centres(tiles):
    """The centre of each annotated nucleus is darker than a ring 1.45 radii out."""
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for img, pts in tiles:
        gray = img.astype(np.float64).mean(axis=2)
        centre = _at(gray, pts.xy)
        ring = np.mean(
            [_at(gray, pts.xy + 6.5 * np.stack([np.cos(a), np.sin(a)]) * np.ones((len(pts), 1))) for a in ang], axis=0
        )
        assert np.mean(centre < ring) > 0.9


def test_dataset_ids_and_seeds():
    data = synthetic_dataset(3, seed=5, config=SyntheticConfig(size=64))
    assert [d[2] for d in data] == ["syn0000", "syn0001", "syn0002"]
    for i, (img, pts, _) in enumerate(data):
        img2, pts2 = synthetic_tile(tile_seed(5, i), SyntheticConfig(size=64))
        assert np.array_equal(img, img2) and np.array_equal(pts.xy, pts2.xy)
    assert not np.array_equal(data[0][0], data[1][0])
    other = synthetic_dataset(1, seed=6, config=SyntheticConfig(size=64))
    assert not np.array_equal(other[0][0], data[0][0])
    assert synthetic_dataset(0) == []


def test_config_scales_and_validates():
    img, pts = synthetic_tile(0, SyntheticConfig(n_clusters=(0, 0), lymphocytes=(0, 0), stromal=(0, 0)))
    assert len(pts) == 0 and img.shape == (256, 256, 3)
    _, pts = synthetic_tile(0, SyntheticConfig(positive_fraction=(1.0, 1.0)))
    assert len(pts) > 0 and np.mean(pts.labels == 0) > 0.7
    with pytest.raises(ValueError):
        SyntheticConfig(size=8)
    with pytest.raises(ValueError):
        SyntheticConfig(cells_per_cluster=(10, 5))
    with pytest.raises(ValueError):
        SyntheticConfig(positive_fraction=(0.2, 1.5))
    with pytest.raises(ValueError):
        SyntheticConfig(noise_std=-1.0)
