"""Tiles and seams: peaks found tile by tile equal the peaks of the stitched map."""

import numpy as np
import pytest
from scipy import ndimage

from sparsecell.inference.peaks import find_peaks
from sparsecell.inference.tiling import SeamPeaks, TileGrid


def smooth_heatmap(rng, C, H, W, sigma=3.0):
    """A softmax-like (C+1, H, W) map with many isolated maxima and no plateaus."""
    logits = np.stack([ndimage.gaussian_filter(rng.normal(size=(H, W)), sigma) * 8 for _ in range(C + 1)])
    logits[0] += 0.3
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def stitched(heat, grid, skipped):
    out = heat.copy()
    for r, c in skipped:
        y0, y1, x0, x1 = grid.core_box(r, c)
        out[:, y0:y1, x0:x1] = 0.0
        out[0, y0:y1, x0:x1] = 1.0
    return out


def run_tiles(heat, grid, classes, thr, md, mode, order, skipped):
    sp = SeamPeaks(grid, classes, thr, md, mode)
    parts = []
    for r, c in order:
        if (r, c) in skipped:
            parts.append(sp.skip(r, c))
        else:
            y0, y1, x0, x1 = grid.core_box(r, c)
            parts.append(sp.add(r, c, heat[:, y0:y1, x0:x1]))
    assert sp.pending == 0 and sp.held_bytes == 0
    xy = np.concatenate([p.xy for p in parts])
    lab = np.concatenate([p.labels for p in parts])
    sc = np.concatenate([p.scores for p in parts])
    return xy, lab, sc


def as_set(xy, lab):
    return sorted(zip(lab.tolist(), xy[:, 0].tolist(), xy[:, 1].tolist()))


@pytest.mark.parametrize("mode,C", [("per_class", 2), ("foreground", 2), ("per_class", 1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_seam_peaks_equal_the_stitched_maps_peaks(mode, C, seed):
    rng = np.random.default_rng(seed)
    H, W = 263, 301
    grid = TileGrid(H, W, tile=96, halo=16)  # cores of 64 px: 5 x 5 tiles, ragged last row and column
    heat = smooth_heatmap(rng, C, H, W)
    classes = [f"c{i}" for i in range(C)]
    tiles = list(grid)
    skipped = {tiles[i] for i in rng.choice(len(tiles), 4, replace=False)}
    order = [tiles[i] for i in rng.permutation(len(tiles))]  # any arrival order
    xy, lab, sc = run_tiles(heat, grid, classes, 0.3, 6, mode, order, skipped)
    ref = find_peaks(stitched(heat, grid, skipped), classes, 0.3, 6, mode)
    assert len(ref) > 50
    assert as_set(xy, lab) == as_set(ref.xy, ref.labels)
    assert len(np.unique(np.c_[lab, xy], axis=0)) == len(xy)  # nothing twice


def test_cells_planted_on_seams_and_corners_are_found_once():
    H = W = 200
    grid = TileGrid(H, W, tile=96, halo=16)  # seams at 64, 128, 192
    yy, xx = np.mgrid[:H, :W]
    cells = [(64, 64), (63.6, 127.6), (128, 30), (100, 64), (191, 192), (0, 0), (199, 150)]  # (y, x): corners, seams, edges
    fg = np.zeros((H, W), np.float32)
    for y, x in cells:
        fg = np.maximum(fg, np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 3.0**2)))
    heat = np.stack([1 - fg, fg])
    xy, lab, _ = run_tiles(heat, grid, ["tumour"], 0.5, 6, "per_class", list(grid), set())
    assert len(xy) == len(cells)
    for y, x in cells:
        d = np.hypot(xy[:, 0] - x, xy[:, 1] - y)
        assert (d < 1.0).sum() == 1


def test_a_plateau_across_a_seam_gives_one_peak():
    H, W = 120, 200
    grid = TileGrid(H, W, tile=96, halo=16)
    heat = np.zeros((2, H, W), np.float32)
    heat[1, 50:53, 62:67] = 1.0  # a saturated 3 x 5 blob straddling the seam at x = 64
    heat[0] = 1 - heat[1]
    xy, _, _ = run_tiles(heat, grid, ["tumour"], 0.5, 6, "per_class", list(grid), set())
    ref = find_peaks(heat, ["tumour"], 0.5, 6)
    assert len(xy) == 1 and np.array_equal(xy, ref.xy)


def test_a_single_tile_image_is_one_core():
    g = TileGrid(500, 700)
    assert g.single and g.shape == (1, 1) and g.core_box(0, 0) == (0, 500, 0, 700) == g.input_box(0, 0)


def test_tile_errors():
    with pytest.raises(ValueError, match="at least 1x1"):
        TileGrid(0, 10)
    g = TileGrid(300, 300, tile=96, halo=16)
    sp = SeamPeaks(g, ["a"], 0.5, 6)
    with pytest.raises(ValueError, match="core must be"):
        sp.add(0, 0, np.zeros((2, 10, 10)))
    sp.skip(0, 0)
    with pytest.raises(ValueError, match="twice"):
        sp.skip(0, 0)
