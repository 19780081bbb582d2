"""pu_sar: click weights against conspicuous clicking, and their road into the loss."""

import numpy as np
import torch

from sparsecell.training.crops import CropDataset, weight_map
from sparsecell.losses.functional import pu_risk
from sparsecell.losses.prior import SAR_MAX_WEIGHT, click_weights
from sparsecell.formats.points import Points
from sparsecell.training.targets import conspicuity, sparsify


def test_random_clicks_weigh_about_one_and_salient_faint_clicks_weigh_more():
    rng = np.random.default_rng(0)
    cells = rng.normal(size=4000)
    random_clicks = rng.choice(cells, 400, replace=False)
    w = click_weights(random_clicks, np.zeros(400, int), cells, np.zeros(4000, int), 1)
    assert abs(w.mean() - 1) < 1e-9 and np.percentile(np.abs(w - 1), 90) < 0.35
    # salient: chance proportional to exp(2 z), Gumbel top-k
    key = 2 * cells + rng.gumbel(size=len(cells))
    clicked = cells[np.argsort(-key)[:400]]
    w = click_weights(clicked, np.zeros(400, int), cells, np.zeros(4000, int), 1)
    assert abs(w.mean() - 1) < 1e-6 and w.max() <= SAR_MAX_WEIGHT
    faint, dark = clicked < np.median(clicked), clicked >= np.median(clicked)
    assert w[faint].mean() > 1.5 * w[dark].mean()


def test_weights_are_per_class():
    z = np.r_[np.full(50, 5.0), np.full(50, 1.0)]
    labels = np.r_[np.zeros(50, int), np.ones(50, int)]
    w = click_weights(z, labels, z, labels, 2)  # each class clicked like its cells: all 1
    np.testing.assert_allclose(w, 1.0)


def test_pu_risk_with_unit_weights_is_pu_and_weights_move_it():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16)
    target = torch.zeros(2, 3, 16, 16)
    target[:, 0] = 1
    target[:, 1, 4:7, 4:7], target[:, 0, 4:7, 4:7] = 1, 0
    target[:, 2, 10:13, 10:13], target[:, 0, 10:13, 10:13] = 1, 0
    base = pu_risk(logits, target, keep=0.3)
    assert torch.allclose(pu_risk(logits, target, keep=0.3, pos_weight=torch.ones(2, 16, 16)), base)
    w = torch.ones(2, 16, 16)
    w[:, 10:13, 10:13] = 4.0
    assert not torch.allclose(pu_risk(logits, target, keep=0.3, pos_weight=w), base)


def test_weight_map_and_crops_carry_each_clicks_weight():
    pts = Points(np.array([[10.0, 10.0], [40.0, 30.0]]), np.array([0, 0]), ("tumour",), np.array([3.0, 0.5]))
    m = weight_map(pts, (64, 64), 4.0)
    assert m[10, 10] == 3.0 and m[30, 40] == 0.5 and m[60, 5] == 1.0
    img = np.full((64, 64, 3), 200, np.uint8)
    ds = CropDataset([img], [pts.subset(np.arange(2))], crop=64, stride=16, sigma=2.0, crops_per_image=4,
                     click_weights=[np.array([3.0, 0.5])])  # fmt: skip
    for i in range(4):  # flips and rotations move the weights with the clicks
        _, target, _, extras = ds[i]
        w = extras["weight"].numpy()
        fg = 1 - target[0].numpy()
        peaks = np.argwhere(fg > 0.99)
        assert sorted(float(w[r, c]) for r, c in peaks) == [0.5, 3.0]


def test_salient_clicks_get_weights_from_conspicuity():
    rng = np.random.default_rng(1)
    img = np.full((128, 128, 3), 230, np.uint8)
    xy = rng.uniform(8, 120, size=(60, 2))
    shade = rng.uniform(40, 200, size=60)
    for (x, y), s in zip(xy, shade):
        img[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = int(s)
    pts = Points(xy, np.zeros(60, int), ("tumour",))
    clicked = sparsify(pts, 0.3, seed=0, mode="salient", image=img, beta=3.0, radius=2.0)
    w = click_weights(conspicuity(img, clicked, 2.0), clicked.labels, conspicuity(img, pts, 2.0), pts.labels, 1, bins=4)
    z = conspicuity(img, clicked, 2.0)
    assert np.corrcoef(z, w)[0, 1] < 0  # darker clicks weigh less


def test_shrinkage_leaves_unbiased_clicks_at_about_one_and_keeps_biased_weights():
    rng = np.random.default_rng(3)
    cells = rng.normal(size=300)  # a few hundred validation cells, as on BCData
    raw_sd, shrunk_sd = [], []
    for rep in range(20):
        clicks = rng.normal(size=150)  # unbiased clicks: any weight other than 1 is noise
        lab, cl = np.zeros(150, int), np.zeros(300, int)
        raw_sd.append(click_weights(clicks, lab, cells, cl, 1).std())
        f: list = []
        shrunk_sd.append(click_weights(clicks, lab, cells, cl, 1, shrink=True, factors=f).std())
        assert 0.0 <= f[0] <= 1.0
    assert np.mean(shrunk_sd) < 0.5 * np.mean(raw_sd)
    key = 2 * cells + rng.gumbel(size=300)  # salient: the darkest first
    clicked = cells[np.argsort(-key)[:60]]
    f = []
    w = click_weights(clicked, np.zeros(60, int), cells, np.zeros(300, int), 1, shrink=True, factors=f)
    w_raw = click_weights(clicked, np.zeros(60, int), cells, np.zeros(300, int), 1)
    assert f[0] > 0.8 and np.corrcoef(w, w_raw)[0, 1] > 0.99 and abs(w.mean() - 1) < 1e-6


def test_shrinkage_factor_is_zero_for_identical_histograms_and_none_for_an_empty_class():
    z = np.linspace(0, 1, 60)
    f: list = []
    w = click_weights(z, np.zeros(60, int), z, np.zeros(60, int), 2, shrink=True, factors=f)
    np.testing.assert_allclose(w, 1.0)
    assert f == [0.0, None]


def test_relative_conspicuity_ignores_a_darker_scan_and_raw_does_not():
    rng = np.random.default_rng(2)
    img = np.full((96, 96, 3), 235, np.uint8)
    img[rng.random((96, 96)) < 0.5] = 180  # tissue texture
    xy = rng.uniform(6, 90, size=(30, 2))
    for (x, y), s in zip(xy, rng.uniform(40, 160, size=30)):
        img[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = int(s)
    pts = Points(xy, np.zeros(30, int), ("tumour",))
    darker = (img * 0.8).astype(np.uint8)  # the same slide scanned darker
    rel, rel_dark = conspicuity(img, pts, 2.0, relative=True), conspicuity(darker, pts, 2.0, relative=True)
    assert rel.min() >= 0 and rel.max() <= 1
    np.testing.assert_allclose(rel, rel_dark, atol=0.03)
    assert (conspicuity(darker, pts, 2.0) - conspicuity(img, pts, 2.0)).min() > 0.5
    raw = conspicuity(img, pts, 2.0)
    assert np.all(np.diff(rel[np.argsort(raw, kind="stable")]) >= 0)  # the same order within an image
