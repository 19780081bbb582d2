"""Ki-67 index, positive/negative class rule and the hot-spot search."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparsecell.slides.ki67 import MIN_CELLS, CountGrid, is_negative, is_positive, ki67_index, report_warnings


def test_index():
    assert ki67_index(0, 0) is None
    assert ki67_index(3, 1) == 0.75
    assert ki67_index(0, 7) == 0.0
    with pytest.raises(ValueError):
        ki67_index(-1, 2)


def test_class_rule():
    for name in ("Tumor: Positive", "Positive", "positive", "Ki67:Positive"):
        assert is_positive(name) and not is_negative(name), name
    for name in ("Tumor: Negative", "negative"):
        assert is_negative(name) and not is_positive(name), name
    for name in ("Tumor: positive cells", "Tumor", "PositiveX", "stroma"):
        assert not is_positive(name) and not is_negative(name), name


def test_warnings():
    assert MIN_CELLS == 500
    assert report_warnings(0) and report_warnings(499) and not report_warnings(500)


def _brute(pos_xy, neg_xy, width, height, cell, field, min_cells):
    k = round(field / cell)
    nx, ny = int(np.ceil(width / cell)), int(np.ceil(height / cell))
    best = None
    for i in range(ny - k + 1):
        for j in range(nx - k + 1):
            x0, y0 = j * cell, i * cell
            p, n = (
                int(((a[:, 0] >= x0) & (a[:, 0] < x0 + field) & (a[:, 1] >= y0) & (a[:, 1] < y0 + field)).sum())
                for a in (pos_xy, neg_xy)
            )
            if p + n < min_cells:
                continue
            idx = p / (p + n)
            if best is None or idx > best["index"]:
                best = {"index": idx, "positive": p, "total": p + n, "x0": x0, "y0": y0, "x1": x0 + field, "y1": y0 + field}
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hotspot_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    width, height, cell, field = 1000.0, 700.0, 50.0, 200.0
    xy = rng.uniform([0, 0], [width, height], size=(3000, 2))
    # a denser positive cluster somewhere
    centre = rng.uniform([200, 200], [800, 500])
    prob = np.where(np.hypot(*(xy - centre).T) < 150, 0.8, 0.2)
    pos = rng.random(len(xy)) < prob
    grid = CountGrid(width, height, cell)
    for part in np.array_split(np.arange(len(xy)), 4):
        grid.add(xy[part], pos[part])
    assert grid.total.sum() == len(xy) and grid.positive.sum() == pos.sum()
    for min_cells in (20, 150, 300):
        got = grid.hotspot(field, min_cells=min_cells)
        want = _brute(xy[pos], xy[~pos], width, height, cell, field, min_cells)
        assert got == want
        if got is not None:
            assert got["total"] >= min_cells


def test_hotspot_min_cells_and_limits():
    grid = CountGrid(100, 100, 10)
    grid.add([[5, 5]] * 10 + [[95, 95]] * 600, [True] * 10 + [False] * 300 + [True] * 300)
    # the all-positive field of 10 cells is too small; the 600-cell field wins
    hot = grid.hotspot(20, min_cells=500)
    assert hot["total"] == 600 and hot["index"] == 0.5
    assert grid.hotspot(20, min_cells=10)["index"] == 1.0
    assert grid.hotspot(20, min_cells=10_000) is None
    assert grid.hotspot(200, min_cells=1) is None  # field larger than the slide
    with pytest.raises(ValueError):
        grid.hotspot(25)
    with pytest.raises(ValueError):
        CountGrid(1e6, 1e6, 10)  # 10^10 grid cells
    assert CountGrid(1e4, 1e4, 20).total.shape == (500, 500)


def test_index_interval_is_wilson_widened_by_the_model_error_and_flags_cut_offs():
    from sparsecell.slides.ki67 import cutoff_warning, index_interval, interval_basis

    # 20 of 100 positive: Wilson by hand, z = 1.96
    z = 1.959964
    centre = (0.2 + z * z / 200) / (1 + z * z / 100)
    half = z * math.sqrt(0.2 * 0.8 / 100 + z * z / 40000) / (1 + z * z / 100)
    ci, crossed = index_interval(20, 80)
    assert ci == pytest.approx([centre - half, centre + half], abs=1e-4) and crossed == []
    assert ci == pytest.approx([0.1334, 0.2888], abs=2e-4)
    # a model error of 5 points adds 1.96 * 0.05 in quadrature: the interval now holds 30%
    ci5, crossed5 = index_interval(20, 80, index_error=5.0)
    half5 = math.hypot(half, z * 0.05)
    assert ci5 == pytest.approx([centre - half5, centre + half5], abs=1e-4) and crossed5 == [0.30]
    assert "30% cut-off" in cutoff_warning(0.2, ci5, crossed5) and cutoff_warning(0.2, ci, crossed) is None
    # more cells, narrower; none, undefined; bounds stay in [0, 1]
    assert index_interval(2000, 8000)[0][1] - index_interval(2000, 8000)[0][0] < ci[1] - ci[0]
    assert index_interval(0, 0) == (None, [])
    lo, hi = index_interval(0, 10, index_error=30.0)[0]
    assert lo == 0.0 and 0 < hi <= 1
    assert "cell count only" in interval_basis(None) and "RMS 5.0" in interval_basis(5.0)


def test_demo_table_shows_the_index_error_only_where_measured():
    from sparsecell.report import results_table

    base = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "f1_per_image": 0.5, "ap": 0.4, "threshold": 0.3}
    t = results_table({"pu_sar": {**base, "ki67_mae": 4.25}, "ce": base}, "pu_sar")
    assert "Ki-67 index error (pp)" in t.splitlines()[0]
    assert t.splitlines()[2].endswith("| 0.30 | 4.2 |") and t.splitlines()[3].endswith("| 0.30 | - |")
    assert "Ki-67" not in results_table({"ce": base})
