"""Annotate next: the acquisition strategies on planted cases, the candidate grid, the
regions file training reads, and the simulated-loop summaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparsecell.annotate.acquire import STRATEGIES, Candidate, _cell_uncertainty, choose, grid_boxes
from sparsecell.annotate.report import clicks_to, mean_f1_over, summary
from sparsecell.errors import AnnotationError, ConfigError
from sparsecell.formats.points import Points


def cand(i, cells=(5.0,), unc=0.0, emb=(1.0, 0.0), dis=float("nan")):
    e = np.asarray(emb, float)
    return Candidate(0, (i * 10, 0, i * 10 + 10, 10), np.asarray(cells, float), unc, e / np.linalg.norm(e), dis)


def test_uncertainty_ranks_the_region_with_near_threshold_peaks_first():
    cs = [cand(0, unc=0.2), cand(1, unc=3.5), cand(2, unc=1.0)]
    picks = choose(cs, 2, "uncertain")
    assert [p.index for p in picks] == [1, 2]
    assert picks[0].rank == 1 and picks[0].reason == "uncertain"


def test_per_click_weighs_uncertainty_by_the_clicks_a_region_costs():
    """A crowded region with more undecided cells in all leads ``combined``; a sparse one
    with more undecided cells per click leads ``per_click``."""
    known = np.array([[0.0, 1.0]])  # both regions equally unlike what is annotated
    cs = [cand(0, cells=(30.0,), unc=4.0, emb=(1.0, 0.0)), cand(1, cells=(1.0,), unc=1.5, emb=(1.0, 0.0))]
    assert choose(cs, 1, "combined", annotated=known)[0].index == 0
    assert choose(cs, 1, "per_click", annotated=known)[0].index == 1
    assert choose(cs, 1, "per_click")[0].index == 1  # nothing annotated yet: the same order


def test_cell_uncertainty_peaks_at_the_threshold_and_between_two_classes():
    heat = np.zeros((3, 8, 8), np.float32)
    heat[1, 2, 2], heat[2, 2, 2] = 0.5, 0.45  # a cell torn between the classes
    heat[1, 5, 5] = 0.95  # a sure positive
    pts = Points(np.array([[2.0, 2.0], [5.0, 5.0], [6.0, 1.0]]), np.array([0, 0, 0]), ("positive", "negative"),
                 np.array([0.5, 0.95, 0.3]))  # fmt: skip
    u = _cell_uncertainty(heat, pts, 0.3)
    assert u[0] > 0.9  # almost equal classes
    assert u[2] == pytest.approx(1.0)  # exactly at the threshold
    assert u[1] < 0.2


def test_diversity_never_takes_two_identical_regions():
    a, b = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    cs = [cand(0, emb=a), cand(1, emb=a), cand(2, emb=b), cand(3, emb=(0.0, 0.0, 1.0))]
    for strategy in ("diverse", "combined"):
        picks = [p.index for p in choose(cs, 3, strategy)]
        assert not {0, 1} <= set(picks), strategy
        assert len(set(picks)) == 3


def test_diversity_keeps_away_from_what_is_annotated():
    a, b = (1.0, 0.0), (0.0, 1.0)
    cs = [cand(0, emb=a, unc=5.0), cand(1, emb=b, unc=1.0)]
    assert choose(cs, 1, "diverse", annotated=np.array([a]))[0].index == 1
    assert choose(cs, 1, "combined", annotated=np.array([a]))[0].index == 1  # uncertain, but like the annotated
    assert choose(cs, 1, "combined")[0].index == 0  # nothing annotated: the uncertain one


def test_balance_prefers_the_class_the_clicks_miss():
    cs = [cand(0, cells=(9.0, 1.0)), cand(1, cells=(1.0, 6.0))]
    assert choose(cs, 1, "densest")[0].index == 0
    pick = choose(cs, 1, "balance", clicks_per_class=[50, 2])[0]
    assert pick.index == 1 and pick.reason == "rare class"


def test_random_and_every_strategy_return_distinct_regions_up_to_the_pool():
    cs = [cand(i, cells=(float(i),), unc=float(i % 3), emb=(1.0, float(i)), dis=float(i)) for i in range(6)]
    for s in STRATEGIES:
        picks = choose(cs, 10, s, clicks_per_class=[3])
        assert sorted(p.index for p in picks) == list(range(6)), s
    assert [p.index for p in choose(cs, 3, "random", seed=1)] == [p.index for p in choose(cs, 3, "random", seed=1)]
    with pytest.raises(ConfigError, match="not known"):
        choose(cs, 1, "nearest")
    with pytest.raises(ConfigError, match="augmented"):
        choose([cand(0)], 1, "disagree")


def test_grid_boxes_respect_tissue_and_annotated_regions():
    boxes = grid_boxes(300, 200, 100)  # 3 x 2 whole squares
    assert len(boxes) == 6 and boxes[:, 2].max() <= 200 and boxes[:, 3].max() <= 300
    tissue = np.zeros((300, 200), bool)
    tissue[:100] = True
    assert len(grid_boxes(300, 200, 100, keep=tissue)) == 2
    left = grid_boxes(300, 200, 100, exclude=[(0, 0, 50, 300)])
    assert len(left) == 3 and (left[:, 0] >= 100).all()  # annotated regions are never suggested
    assert len(grid_boxes(50, 50, 100)) == 0


def test_regions_file_is_what_training_clicks(tmp_path):
    from sparsecell.config import DataConfig
    from sparsecell.datasets.base import Sample
    from sparsecell.training.crops import sparse_annotations

    pts = Points(np.array([[5.0, 5.0], [50.0, 50.0], [90.0, 10.0]]), np.array([0, 0, 0]), ("tumor",))
    s = Sample(np.zeros((100, 100, 3), np.uint8), pts, "img1")
    f = tmp_path / "regions.json"
    f.write_text(json.dumps({"img1": [[0, 0, 20.5, 20]], "other": [[0, 0, 1, 1]]}))
    points, regions = sparse_annotations([s], DataConfig(sparsity="region", regions_json=str(f)))
    assert len(points[0]) == 1 and regions == [[(0, 0, 21, 20)]]
    f.write_text(json.dumps({"img1": [[10, 0, 5, 20]]}))
    with pytest.raises(AnnotationError, match="regions.json.*x0 < x1"):
        sparse_annotations([s], DataConfig(sparsity="region", regions_json=str(f)))
    f.write_text("[1, 2]")
    with pytest.raises(AnnotationError, match="regions.json: must map"):
        sparse_annotations([s], DataConfig(sparsity="region", regions_json=str(f)))
    with pytest.raises(ValueError, match="sparsity"):
        DataConfig(regions_json=str(f))


def test_curve_area_and_clicks_to_target_by_hand():
    x, y = np.array([0.0, 100.0, 200.0]), np.array([0.2, 0.6, 0.7])
    assert mean_f1_over(x, y, 0, 200) == pytest.approx((0.4 * 100 + 0.65 * 100) / 200)
    assert clicks_to(x, y, 0.65) == pytest.approx(150.0)
    assert clicks_to(x, y, 0.8) is None
    rows = [{"dataset": "d", "strategy": "start", "seed": s, "round": 0, "clicks": 10, "f1": 0.2} for s in (0, 1)]
    for s, gain in ((0, 0.1), (1, 0.2)):
        rows += [{"dataset": "d", "strategy": "random", "seed": s, "round": 1, "clicks": 110, "f1": 0.4},
                 {"dataset": "d", "strategy": "combined", "seed": s, "round": 1, "clicks": 110, "f1": 0.4 + gain}]
    sm = summary({"rows": rows, "full_f1": {"d": 0.6}}, "d")
    mean, half, n = sm["combined"]["vs_random"]
    assert n == 2 and mean == pytest.approx(0.075)  # half the final gain, averaged over the range
    assert sm["combined"]["reach"] == [None, pytest.approx(10 + 100 * (0.57 - 0.2) / 0.4)]


def test_loop_gain_pairs_a_peer_round0_with_the_click_round0_over_the_common_clicks():
    from sparsecell.annotate.report import annotate_report, loop_gain

    rows = []
    for s in (0, 1):
        rows += [{"dataset": "d", "strategy": "start", "seed": s, "round": 0, "clicks": 100, "f1": 0.4},
                 {"dataset": "d", "strategy": "random", "seed": s, "round": 1, "clicks": 300, "f1": 0.6},
                 {"dataset": "d", "strategy": "start", "seed": s, "round": 0, "clicks": 0, "f1": 0.5, "round0": "peer"},
                 {"dataset": "d", "strategy": "random", "seed": s, "round": 1, "clicks": 200, "f1": 0.6 + 0.1 * s,
                  "round0": "peer"}]  # fmt: skip
    rows = [{**r, "val_f1": r["f1"]} for r in rows]
    gain = loop_gain({"rows": rows}, "d", ("exhaustive", "peer"), ("exhaustive", "clicks"))
    # over 100-200 clicks (from the later round 0 to the smaller final budget) the click loop
    # averages 0.45; the peer loop 0.575 on seed 0 (0.55 -> 0.6) and 0.65 on seed 1 (0.6 -> 0.7)
    assert gain["random"][0] == pytest.approx((0.125 + 0.2) / 2) and gain["random"][2] == 2
    text = annotate_report({"rows": rows, "default_strategy": "random"})
    assert "round 0: the classical peer's labels" in text and "Round 0 from the peer against round 0 from clicks" in text
