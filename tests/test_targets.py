import numpy as np
import pytest

from sparsecell.formats.points import Points
from sparsecell.training.targets import gaussian_heatmap, node_labels, sparsify


def test_heatmap_matches_formula_exactly():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 40, size=(7, 2))
    labels = rng.integers(0, 2, size=7)
    p = Points(xy, labels, ("a", "b"))
    sigma = 2.5
    g = gaussian_heatmap(p, (40, 44), sigma=sigma, truncate=50)
    yy, xx = np.mgrid[0:40, 0:44]
    for c in range(2):
        d2 = [(xx - x) ** 2 + (yy - y) ** 2 for (x, y), l in zip(xy, labels) if l == c]
        want = np.max([np.exp(-d / (2 * sigma**2)) for d in d2], axis=0) if d2 else np.zeros((40, 44))
        np.testing.assert_allclose(g[c + 1], want, atol=1e-6)
    np.testing.assert_allclose(g[0], 1 - g[1:].max(0), atol=1e-6)
    assert g.dtype == np.float32 and g.min() >= 0 and g.max() <= 1


def test_heatmap_default_truncation_is_negligible():
    p = Points.from_xy([[20.3, 17.8]])
    exact = gaussian_heatmap(p, (40, 40), sigma=3, truncate=100)
    fast = gaussian_heatmap(p, (40, 40), sigma=3)
    assert np.abs(exact - fast).max() < 4e-4


def test_heatmap_empty_and_edge_points():
    g = gaussian_heatmap(Points.empty(("a", "b")), (8, 9), sigma=2)
    assert g.shape == (3, 8, 9) and np.all(g[0] == 1) and np.all(g[1:] == 0)
    g = gaussian_heatmap(Points.from_xy([[0, 0], [8.9, 7.9]]), (8, 9), sigma=2)
    assert g[1, 0, 0] == 1.0 and g[1, 7, 8] == pytest.approx(np.exp(-(0.81 + 0.81) / 8), abs=1e-6)


def test_heatmap_rejects_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmap(Points.empty(), (4, 4), sigma=0)


def test_node_labels_marks_grid_cell_of_each_point_per_class():
    p = Points([[0, 0], [31.9, 31.9], [32, 0], [70, 40]], [0, 0, 1, 1], ("a", "b"))
    nl = node_labels(p, (64, 80), stride=32)  # 80 wide -> 3 columns (ceil)
    assert nl.shape == (2, 2, 3)
    want_a = np.zeros((2, 3), bool)
    want_a[0, 0] = True
    want_b = np.zeros((2, 3), bool)
    want_b[0, 1] = True
    want_b[1, 2] = True
    np.testing.assert_array_equal(nl[0], want_a)
    np.testing.assert_array_equal(nl[1], want_b)


def test_node_labels_ignores_points_outside_and_empty():
    p = Points.from_xy([[-1, 3], [5, 100]])
    assert not node_labels(p, (16, 16), 8).any()
    assert node_labels(Points.empty(), (16, 16), 8).shape == (1, 2, 2)


def _pts(n, classes=("a", "b"), seed=0):
    rng = np.random.default_rng(seed)
    return Points(rng.uniform(0, 500, (n, 2)), rng.integers(0, len(classes), n), classes)


def test_sparsify_keeps_fraction_reproducibly():
    p = _pts(400)
    a = sparsify(p, 0.25, seed=3)
    b = sparsify(p, 0.25, seed=3)
    c = sparsify(p, 0.25, seed=4)
    assert len(a) == 100
    np.testing.assert_array_equal(a.xy, b.xy)
    assert not np.array_equal(a.xy, c.xy)
    # kept points are a subset of the originals, in original order
    idx = [int(np.flatnonzero((p.xy == q).all(1))[0]) for q in a.xy]
    assert idx == sorted(idx)


def test_sparsify_per_class_keeps_each_class_fraction():
    p = Points(np.arange(200).reshape(100, 2), [0] * 80 + [1] * 20, ("a", "b"))
    s = sparsify(p, 0.25, seed=0, per_class=True)
    assert s.counts() == {"a": 20, "b": 5}


def test_sparsify_edge_fractions():
    p = _pts(10)
    assert len(sparsify(p, 0.0)) == 0
    assert len(sparsify(p, 1.0)) == 10
    assert len(sparsify(Points.empty(), 0.5)) == 0
    with pytest.raises(ValueError, match="keep"):
        sparsify(p, 1.5)


def test_sparsify_by_region_keeps_whole_regions():
    p = _pts(1000)
    s = sparsify(p, 0.3, seed=1, region=100, shape=(500, 500))
    assert 0.3 * 1000 <= len(s) <= 0.3 * 1000 + 100  # at most one region over the target
    kept_cells = {(int(x // 100), int(y // 100)) for x, y in s.xy}
    # every point of a kept region is kept, no point of another region
    for x, y in p.xy:
        in_kept = (int(x // 100), int(y // 100)) in kept_cells
        assert in_kept == bool(((s.xy == [x, y]).all(1)).any())


def _dark_image(p, size=200, seed=0):
    """A white image where each point's nucleus has its own darkness (point i: grey 250 - 2 i)."""
    img = np.full((size, size, 3), 250, np.uint8)
    for i, (x, y) in enumerate(p.xy):
        img[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = 250 - 2 * i
    return img


def test_salient_sparsity_clicks_the_dark_cells_first_and_keeps_the_count():
    from sparsecell.training.targets import conspicuity

    g = np.stack(np.meshgrid(np.arange(10, 200, 19), np.arange(10, 200, 19)), -1).reshape(-1, 2)[:100].astype(float)
    p = Points(g, np.zeros(len(g), np.int64), ("tumour",))
    img = _dark_image(p)
    z = conspicuity(img, p, radius=2)
    assert np.all(np.diff(z) > 0)  # darker with the index
    s = sparsify(p, 0.1, seed=3, mode="salient", image=img, beta=4.0)
    assert len(s) == 10
    idx = [int(np.flatnonzero((p.xy == q).all(1))[0]) for q in s.xy]
    assert np.mean(np.array(idx) >= 50) >= 0.9  # the darker half, nearly always
    # beta 0: no preference (a uniform draw): the kept cells' mean index near the middle, over seeds
    means = [np.mean([int(np.flatnonzero((p.xy == q).all(1))[0]) for q in sparsify(p, 0.1, seed=k, mode="salient", image=img, beta=0.0).xy])
             for k in range(40)]
    assert 40 < np.mean(means) < 60
    assert sparsify(p, 0.1, seed=3, mode="salient", image=img).xy.tolist() == sparsify(p, 0.1, seed=3, mode="salient", image=img).xy.tolist()
    with pytest.raises(ValueError, match="needs the image"):
        sparsify(p, 0.1, mode="salient")
    with pytest.raises(ValueError, match="mode"):
        sparsify(p, 0.1, mode="biased")


def test_region_boxes_cover_exactly_the_kept_points():
    from sparsecell.training.targets import in_boxes, region_boxes

    p = _pts(500)
    boxes = region_boxes(p, 0.25, seed=2, side=100, shape=(500, 500))
    inside = in_boxes(p, boxes)
    assert inside.sum() >= 125 and all(x1 - x0 <= 100 and y1 - y0 <= 100 for x0, y0, x1, y1 in boxes)
    assert sparsify(p, 0.25, seed=2, mode="region", region=100, shape=(500, 500)).xy.tolist() == p.subset(inside).xy.tolist()


def test_salient_per_class_clicks_the_conspicuous_cells_of_every_class():
    # class 0 dark, class 1 pale: drawn over all cells, the pale class is never clicked; per class, both are
    g = np.stack(np.meshgrid(np.arange(10, 200, 19), np.arange(10, 200, 19)), -1).reshape(-1, 2)[:100].astype(float)
    labels = (np.arange(100) < 50).astype(np.int64)  # the first 50 (pale, low index) are class 1
    p = Points(g, labels, ("dark", "pale"))
    img = _dark_image(p)
    overall = sparsify(p, 0.2, seed=0, mode="salient", image=img, beta=4.0)
    within = sparsify(p, 0.2, seed=0, mode="salient", image=img, beta=4.0, per_class=True)
    assert np.bincount(overall.labels, minlength=2)[1] <= 2
    assert np.bincount(within.labels, minlength=2).tolist() == [10, 10]


def test_clicks_in_boxes_salient_takes_each_boxs_dark_cells_and_keeps_earlier_boxes():
    from sparsecell.training.targets import clicks_in_boxes

    g = np.stack(np.meshgrid(np.arange(10, 200, 19), np.arange(10, 200, 19)), -1).reshape(-1, 2)[:100].astype(float)
    p = Points(g, np.zeros(len(g), np.int64), ("tumour",))
    img = _dark_image(p)  # darker with the point's index: rows of 10, the lower rows darker
    top, bottom = (0, 0, 200, 49), (0, 105, 200, 200)  # 30 light cells, 50 dark ones
    every = clicks_in_boxes(p, [top, bottom])
    assert len(every) == 80
    half = clicks_in_boxes(p, [top, bottom], 0.5, seed=1, mode="salient", image=img, beta=4.0, radius=2)
    idx = np.array([int(np.flatnonzero((p.xy == q).all(1))[0]) for q in half.xy])
    assert (idx < 30).sum() == 15 and (idx >= 50).sum() == 25  # half of each box, never fewer than one
    assert np.mean(idx[idx < 30] >= 15) >= 0.8  # inside the light box, its darker cells first
    # a box added later leaves the earlier box's clicks as they were
    first = clicks_in_boxes(p, [top], 0.5, seed=1, mode="salient", image=img, beta=4.0, radius=2)
    assert set(map(tuple, first.xy.tolist())) <= set(map(tuple, half.xy.tolist()))
    one = clicks_in_boxes(p, [(0, 0, 20, 20)], 0.1, seed=0, mode="salient", image=img)
    assert len(one) == 1  # a square with a cell gets at least one click
    with pytest.raises(ValueError, match="needs the image"):
        clicks_in_boxes(p, [top], 0.5, mode="salient")
