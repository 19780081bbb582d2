"""Sparse clicks as real users make them: the annotated share estimated without an
oracle, regions known to the loss, and progressive pseudo-labelling (pu_pseudo)."""

import numpy as np
import pytest
import torch

from sparsecell.config import load_config
from sparsecell.training.crops import CropDataset, sparse_annotations
from sparsecell.errors import ConfigError
from sparsecell.losses.prior import estimate_keep
from sparsecell.metrics import Sweep
from sparsecell.formats.points import Points
from sparsecell.training.pseudo import PseudoLabeller, count_ratio, pseudo_threshold


# --- the annotated share --------------------------------------------------------------
def test_estimate_keep_is_the_density_ratio_capped_at_one():
    e = estimate_keep([30], [40_000], [100], [20_000])  # 30 / 4e4 against 100 / 2e4
    assert e.share == pytest.approx(0.15) and (e.clicks, e.cells) == (30, 100)
    assert "15.0%" in e.text()
    assert estimate_keep([300], [10_000], [10], [10_000]).share == 1.0
    assert estimate_keep([0], [100], [5], [100]) is None  # nothing clicked
    assert estimate_keep([5], [100], [], []) is None  # no validation


def test_pu_keep_auto_number_or_a_clear_error():
    assert load_config(None, []).loss.pu_keep == "auto"
    assert load_config(None, ["loss.pu_keep=0.3"]).loss.pu_keep == 0.3
    assert load_config(None, ["loss.pu_keep=auto"]).loss.pu_keep == "auto"
    with pytest.raises(ConfigError, match="pu_keep"):
        load_config(None, ["loss.pu_keep=most"])
    with pytest.raises(ConfigError, match="out of range"):
        load_config(None, ["loss.pu_keep=1.5"])
    with pytest.raises(ConfigError, match="sparsity"):
        load_config(None, ["data.sparsity=lazy"])
    with pytest.raises(ConfigError, match="data.sparsity=region"):  # a region side with another clicking: refused
        load_config(None, ["data.region=64"])
    assert load_config(None, ["data.sparsity=region", "data.region=64"]).data.region == 64


def test_a_config_from_before_data_sparsity_with_a_region_reads_as_region_clicking(tmp_path):
    from sparsecell.config import Config

    assert Config.from_dict({"data": {"region": 64, "keep": 0.2}}).data.sparsity == "region"
    assert Config.from_dict({"data": {"keep": 0.2}}).data.sparsity == "random"


# --- regions known to the loss ------------------------------------------------------------
def test_crop_dataset_known_mask_moves_with_the_crop_and_its_points():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    pts = Points(np.array([[10.0, 10.0], [12.0, 50.0]]), np.zeros(2, np.int64), ("a",))
    ds = CropDataset([img], [pts.subset([0])], crop=32, stride=16, sigma=2.0, crops_per_image=20, regions=[[(0, 0, 32, 32)]])
    seen = 0
    for i in range(len(ds)):
        x, target, labelled, extras = ds[i]
        known = extras["known"]
        assert known.shape == (32, 32) and set(torch.unique(known).tolist()) <= {0.0, 1.0}
        peak = (target[1] == target[1].max()).nonzero()
        if float(target[1].max()) > 0.99:  # the clicked cell is in the crop: it lies in the known region
            seen += 1
            assert known[peak[0, 0], peak[0, 1]] == 1.0
    assert seen > 0


def test_sparse_annotations_regions_only_when_known(tiny_config):
    from sparsecell.datasets import load_samples

    cfg = tiny_config("data.sparsity=region", "data.region=64", "data.keep=0.3")
    train_s, _, _ = load_samples(cfg)
    pts, regions = sparse_annotations(train_s, cfg.data)
    assert regions is not None and len(regions) == len(train_s)
    for p, boxes in zip(pts, regions):
        for x, y in p.xy:
            assert any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in boxes)
    cfg = tiny_config("data.sparsity=region", "data.region=64", "data.keep=0.3", "data.regions_known=false")
    assert sparse_annotations(train_s, cfg.data)[1] is None


# --- pseudo-labelling ---------------------------------------------------------------------
def _sweep():
    # thresholds 0.2..0.6: precision rises with the threshold; F1 best at 0.3
    counts = np.array([[80, 40, 20], [85, 15, 15], [70, 8, 30], [60, 4, 40], [40, 1, 60]])
    return Sweep((0.2, 0.3, 0.4, 0.5, 0.6), 6.0, counts)


def test_pseudo_threshold_is_the_lowest_precise_enough_at_or_above_the_best():
    s = _sweep()
    assert s.best()[0] == 0.3
    assert pseudo_threshold(s, 0.85) == 0.3  # 85 / 100
    assert pseudo_threshold(s, 0.89) == 0.4  # 70 / 78 = 0.897
    assert pseudo_threshold(s, 0.9) == 0.5  # 60 / 64
    assert pseudo_threshold(s, 0.99) is None
    assert count_ratio(s, 0.3) == pytest.approx(100 / 100)
    assert count_ratio(s, 0.5) == pytest.approx(100 / 64)


class _Painter(torch.nn.Module):
    """A 'model' whose heatmap has a bright spot at each of some fixed places."""

    stride = 16

    def __init__(self, spots, value=4.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.spots, self.value = spots, value

    def forward(self, x):
        B, _, H, W = x.shape
        logits = torch.zeros(B, 2, H, W)
        logits[:, 0] = 2.0
        for x0, y0 in self.spots:
            logits[:, 1, y0, x0] = self.value
        from types import SimpleNamespace

        return SimpleNamespace(logits=logits + 0 * self.w, embedding=torch.zeros(B, 4, H // 16, W // 16))


def test_a_round_labels_confident_unclicked_cells_once_stable_and_reestimates_the_share():
    img = np.full((64, 64, 3), 200, np.uint8)
    clicks = [Points(np.array([[10.0, 10.0]]), np.zeros(1, np.int64), ("a",))]
    model = _Painter([(10, 10), (40, 20), (30, 50)])  # the click and two other cells
    lab = PseudoLabeller(1, ("a",), precision=0.9, stable=True, min_distance=3, radius=6.0, peak_mode="per_class")
    sweep = Sweep((0.5, 0.9), 6.0, np.array([[10, 0, 10], [5, 0, 15]]))  # best 0.5, 2 true cells per detection
    first = lab.round(model, [img], clicks, sweep, epoch=3)
    assert (first.candidates, first.labels) == (2, 0)  # found, not yet stable
    second = lab.round(model, [img], clicks, sweep, epoch=6)
    assert (second.candidates, second.labels) == (2, 2)
    assert sorted(map(tuple, lab.labels[0].xy.tolist())) == [(30.0, 50.0), (40.0, 20.0)]
    assert second.keep_estimate == pytest.approx(1 / (3 * 2.0))  # 1 click / (3 detections x 2)
    # a cell that is no longer found is dropped in the next round
    model.spots = [(10, 10), (40, 20)]
    assert lab.round(model, [img], clicks, sweep, epoch=9).labels == 1
    # no threshold precise enough: no round, the labels stay
    assert lab.round(model, [img], clicks, Sweep((0.5,), 6.0, np.array([[1, 9, 0]])), epoch=12) is None
    assert len(lab.labels[0]) == 1


def test_pseudo_labels_survive_a_checkpoint_read_with_weights_only(tmp_path):
    lab = PseudoLabeller(2, ("a", "b"), 0.9, True, 3, 6.0, "per_class")
    lab.labels = [Points(np.array([[1.5, 2.0]]), np.array([1]), ("a", "b")), Points.empty(("a", "b"))]
    torch.save({"pseudo_labels": lab.state_dict()}, tmp_path / "s.pt")
    back = PseudoLabeller(2, ("a", "b"), 0.9, True, 3, 6.0, "per_class")
    back.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True)["pseudo_labels"])
    assert back.labels[0].xy.tolist() == [[1.5, 2.0]] and back.labels[0].labels.tolist() == [1]
    assert len(back.labels[1]) == 0
    with pytest.raises(ValueError, match="images"):
        PseudoLabeller(3, ("a", "b"), 0.9, True, 3, 6.0, "per_class").load_state_dict(lab.state_dict())


def test_crop_dataset_gives_pseudo_labels_their_own_target():
    img = np.full((48, 48, 3), 128, np.uint8)
    clicks = Points(np.array([[10.0, 10.0]]), np.zeros(1, np.int64), ("a",))
    ds = CropDataset([img], [clicks], crop=48, stride=16, sigma=2.0, crops_per_image=1, flips=False, rot90=False)
    ds.pseudo = [Points(np.array([[30.0, 30.0]]), np.zeros(1, np.int64), ("a",))]
    x, target, labelled, extras = ds[0]
    assert float(target[1, 10, 10]) == pytest.approx(1.0) and float(target[1, 30, 30]) < 1e-6
    assert float(extras["pseudo"][1, 30, 30]) == pytest.approx(1.0) and float(extras["pseudo"][1, 10, 10]) < 1e-6
    assert labelled.sum() == 1  # only the click labels a node


def test_pu_pseudo_trains_keeps_its_labels_and_share_in_the_checkpoint(tiny_config):
    from sparsecell.inference.checkpoint import read_checkpoint
    from sparsecell.training.loop import train

    cfg = tiny_config("loss.name=pu_pseudo", "train.epochs=3", "loss.pseudo_start=0.3", "loss.pseudo_precision=0.01",
                      "loss.pseudo_stable=false", "data.keep=0.5")  # fmt: skip
    r = train(cfg, quiet=True)
    assert r.keep_estimate is not None and 0 < r.keep_estimate <= 1
    ck = read_checkpoint(r.last_checkpoint)
    assert ck.keep_estimate == pytest.approx(r.keep_estimate)
    raw = torch.load(r.last_checkpoint, weights_only=True)
    assert len(raw["pseudo_labels"]["labels"]) == cfg.data.synthetic_train
    assert len(raw["pseudo_labels"]["history"]) >= 1  # rounds ran (any threshold is precise enough here)


def test_train_prints_and_stores_the_estimated_share_and_never_reads_the_simulated_keep(tiny_config, capsys):
    from sparsecell.inference.checkpoint import read_checkpoint
    from sparsecell.datasets import load_samples
    from sparsecell.training.loop import train

    cfg = tiny_config("loss.name=pu", "data.keep=0.5")
    r = train(cfg)
    out = capsys.readouterr().out
    assert "annotated share estimated at" in out
    train_s, val_s, _ = load_samples(cfg)
    clicks = sum(len(p) for p in sparse_annotations(train_s, cfg.data)[0])
    want = estimate_keep([clicks], [sum(s.image.shape[0] * s.image.shape[1] for s in train_s)],
                         [sum(len(s.points) for s in val_s)], [sum(s.image.shape[0] * s.image.shape[1] for s in val_s)])
    assert r.keep_estimate == pytest.approx(want.share) and read_checkpoint(r.best_checkpoint).keep_estimate == pytest.approx(want.share)
    assert f"{want.share:.1%}" in out
    from sparsecell.losses import build_loss

    ck = read_checkpoint(r.best_checkpoint)
    assert build_loss(ck.config.loss, ck.config.data, ck.keep_estimate).keep == pytest.approx(want.share) != 0.5


def test_pu_sar_trains_from_salient_clicks_and_the_shrunk_variant_reports_its_evidence_of_bias(tiny_config, capsys, tmp_path):
    from sparsecell.inference.checkpoint import read_checkpoint
    from sparsecell.training.loop import train

    r = train(tiny_config("loss.name=pu_sar", "data.keep=0.5", "data.sparsity=salient"))
    out = capsys.readouterr().out
    assert "click weights for conspicuous clicking" in out and "evidence of biased" not in out
    assert r.click_bias is not None and len(r.click_bias) == len(read_checkpoint(r.best_checkpoint).classes)
    assert all(b is None or b == 1.0 for b in r.click_bias)  # by default unshrunk: the full weights
    shrunk = train(tiny_config("loss.name=pu_sar", "data.keep=0.5", "data.sparsity=salient", "loss.sar_shrink=true",
                               "loss.sar_reference=image", "train.epochs=1", f"train.out_dir={tmp_path / 'v2'}"))  # fmt: skip
    assert "evidence of biased clicks per class" in capsys.readouterr().out
    assert all(b is None or 0.0 <= b <= 1.0 for b in shrunk.click_bias)
    with pytest.raises(ConfigError, match="sar_reference"):
        tiny_config("loss.sar_reference=scanner")


def test_clicks_inside_known_complete_regions_weigh_one(tiny_config):
    from sparsecell.datasets import load_samples
    from sparsecell.training.loop import _click_weights

    cfg = tiny_config("loss.name=pu_sar", "data.keep=0.3", "data.sparsity=region", "data.region=32", "data.regions_known=true")
    train_s, val_s, _ = load_samples(cfg)
    points, regions = sparse_annotations(train_s, cfg.data)
    assert regions is not None and sum(len(p) for p in points) > 0
    weights, _ = _click_weights(train_s, points, val_s, cfg, regions)
    assert all(np.all(w == 1.0) for w in weights)  # every click lies in a complete region
    salient = [s.points.subset(np.arange(len(s.points)) % 3 == 0) for s in train_s]  # clicks outside any region
    half = [[(0, 0, s.image.shape[1], s.image.shape[0] // 2)] for s in train_s]  # the top half known complete
    weights, _ = _click_weights(train_s, salient, val_s, cfg, half)
    for p, w, s in zip(salient, weights, train_s):
        top = p.xy[:, 1] < s.image.shape[0] // 2
        assert np.all(w[top] == 1.0)
    assert any(np.any(w[p.xy[:, 1] >= s.image.shape[0] // 2] != 1.0) for p, w, s in zip(salient, weights, train_s))
