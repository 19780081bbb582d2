import numpy as np
import pytest

from sparsecell.inference.peaks import find_peaks
from sparsecell.metrics import (
    PAPER_THRESHOLD,
    THRESHOLD_GRID,
    Match,
    average_precision,
    detection_scores,
    match_points,
    micro_f1,
    radius_px,
    score_points,
    threshold_sweep,
)
from sparsecell.formats.points import Points
from sparsecell.training.targets import gaussian_heatmap


def test_match_simple_within_radius():
    m = match_points([[0, 0], [10, 0]], [[1, 0], [30, 0]], radius=5)
    assert (m.tp, m.fp, m.fn) == (1, 1, 1)
    assert m.pairs.tolist() == [[0, 0]]


def test_match_radius_is_inclusive_and_zero_distance_counts():
    m = match_points([[0, 0], [20, 20]], [[3, 4], [20, 20]], radius=5)
    assert m.tp == 2


def test_one_prediction_near_two_truths_matches_once():
    m = match_points([[0, 0], [4, 0]], [[2, 0]], radius=3)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)


def test_maximum_matching_beats_greedy_nearest():
    # greedy nearest would pair pred0 with true1 (distance 1) and leave true0 unmatched;
    # the maximum matching pairs pred0-true0 and pred1-true1.
    truth = [[0, 0], [4, 0]]
    pred = [[3, 0], [7, 0]]
    m = match_points(truth, pred, radius=3.5)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert sorted(map(tuple, m.pairs.tolist())) == [(0, 0), (1, 1)]


def test_ties_give_one_to_one_pairs():
    # two truths and two predictions all equally far: any perfect pairing, never double use
    m = match_points([[0, 0], [2, 0]], [[1, 1], [1, -1]], radius=2)
    assert m.tp == 2
    assert len(set(m.pairs[:, 0])) == 2 and len(set(m.pairs[:, 1])) == 2


def test_among_maximum_matchings_the_closest_is_taken():
    m = match_points([[0, 0], [10, 0]], [[1, 0], [9, 0]], radius=20)
    assert sorted(map(tuple, m.pairs.tolist())) == [(0, 0), (1, 1)]


def test_empty_predictions_and_empty_truth():
    m = match_points([[1, 1], [2, 2]], [], 5)
    assert (m.tp, m.fp, m.fn) == (0, 0, 2)
    m = match_points([], [[1, 1]], 5)
    assert (m.tp, m.fp, m.fn) == (0, 1, 0)
    s = detection_scores([match_points([[1, 1]], [], 5)])
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    s = detection_scores([match_points([], [], 5)])
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)


def test_micro_and_per_image_scores_hand_worked():
    # image A: 3 true, 2 pred, 2 tp -> P 1, R 2/3 ; image B: 1 true, 3 pred, 1 tp -> P 1/3, R 1
    a = Match(2, 0, 1, np.zeros((2, 2), int))
    b = Match(1, 2, 0, np.zeros((1, 2), int))
    s = detection_scores([a, b])
    assert (s.tp, s.fp, s.fn) == (3, 2, 1)
    assert s.precision == pytest.approx(3 / 5)
    assert s.recall == pytest.approx(3 / 4)
    assert s.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    pi, ri = (1 + 1 / 3) / 2, (2 / 3 + 1) / 2
    assert s.precision_per_image == pytest.approx(pi)
    assert s.recall_per_image == pytest.approx(ri)
    assert s.f1_per_image == pytest.approx(2 * pi * ri / (pi + ri))


def test_score_points_matches_within_class_only():
    classes = ("pos", "neg")
    truth = Points([[0, 0], [50, 50]], [0, 1], classes)
    pred = Points([[1, 0], [50, 51]], [1, 1], classes)  # first is the wrong class
    s = score_points([truth], [pred], radius=5)
    assert (s["pos"].tp, s["pos"].fp, s["pos"].fn) == (0, 0, 1)
    assert (s["neg"].tp, s["neg"].fp, s["neg"].fn) == (1, 1, 0)
    assert (s["all"].tp, s["all"].fp, s["all"].fn) == (1, 1, 1)


def test_radius_in_um():
    assert radius_px(6, "px") == 6
    assert radius_px(3.3, "um", mpp=0.55) == pytest.approx(6)
    with pytest.raises(ValueError, match="mpp"):
        radius_px(3, "um")


def test_average_precision_hand_worked():
    truth = Points.from_xy([[0, 0], [20, 0]])
    # scores 0.9 hit, 0.8 miss, 0.7 hit -> P/R steps (1, .5), (.5, .5), (2/3, 1) -> AP = .5*1 + .5*2/3
    pred = Points([[0, 1], [50, 50], [20, 1]], [0, 0, 0], ("tumour",), [0.9, 0.8, 0.7])
    assert average_precision([truth], [pred], 5) == pytest.approx(0.5 + 0.5 * 2 / 3)
    perfect = Points([[0, 1], [20, 1]], [0, 0], ("tumour",), [0.9, 0.8])
    assert average_precision([truth], [perfect], 5) == pytest.approx(1.0)


def test_find_peaks_recovers_points_and_respects_threshold():
    truth = Points([[10, 12], [40, 30], [25, 50]], [0, 1, 0], ("a", "b"))
    g = gaussian_heatmap(truth, (64, 64), sigma=3)
    g[1:] *= 0.6  # peaks at 0.6
    det = find_peaks(g, truth.classes, threshold=0.5, min_distance=6)
    s = score_points([truth], [det], radius=2)
    assert s["all"].f1 == 1.0
    assert np.allclose(np.sort(det.scores), 0.6, atol=1e-6)
    assert len(find_peaks(g, truth.classes, threshold=0.7)) == 0


def test_find_peaks_min_distance_and_border():
    g = np.zeros((2, 20, 20), np.float32)
    g[1, 0, 0] = 0.9  # border peak is kept
    g[1, 10, 10] = 0.8
    g[1, 10, 13] = 0.7  # within 6 px of a stronger peak: suppressed
    g[0] = 1 - g[1]
    det = find_peaks(g, ("a",), threshold=0.1, min_distance=6)
    assert sorted(map(tuple, det.xy.tolist())) == [(0.0, 0.0), (10.0, 10.0)]


def test_above_equals_find_peaks_at_higher_threshold():
    rng = np.random.default_rng(0)
    pts = Points(rng.uniform(0, 96, (40, 2)), rng.integers(0, 2, 40), ("a", "b"))
    g = gaussian_heatmap(pts, (96, 96), sigma=3)
    g[1:] *= rng.uniform(0.05, 1.0, size=(2, 1, 1)) * rng.uniform(0.5, 1, size=(2, 96, 96))
    low = find_peaks(g, pts.classes, threshold=THRESHOLD_GRID[0])
    for t in (0.05, 0.2, 0.5):
        a = low.above(t)
        b = find_peaks(g, pts.classes, threshold=t)
        assert sorted(map(tuple, a.xy.tolist())) == sorted(map(tuple, b.xy.tolist()))


def test_threshold_grid_is_fine_below_0_1():
    assert THRESHOLD_GRID[0] == 0.01
    assert sum(t < 0.1 for t in THRESHOLD_GRID) >= 9


def test_threshold_sweep_equals_scoring_each_threshold():
    rng = np.random.default_rng(1)
    truth = [Points(rng.uniform(0, 60, (n, 2)), rng.integers(0, 2, n), ("a", "b")) for n in (12, 0, 7)]
    peaks = [Points(np.clip(t.xy + rng.normal(0, 3, t.xy.shape), 0, 60), t.labels, t.classes, rng.uniform(0, 1, len(t)))
             for t in truth]  # fmt: skip
    peaks[1] = Points(rng.uniform(0, 60, (5, 2)), np.zeros(5, int), ("a", "b"), rng.uniform(0, 1, 5))  # all false
    sweep = threshold_sweep(truth, peaks, radius=4.0)
    assert sweep.thresholds == THRESHOLD_GRID and sweep.radius == 4.0
    for k, t in enumerate(sweep.thresholds):
        a = score_points(truth, [p.above(t) for p in peaks], 4.0)["all"]
        assert tuple(sweep.counts[k]) == (a.tp, a.fp, a.fn)
        assert sweep.f1[k] == pytest.approx(a.f1, abs=1e-12)
    thr, f1 = sweep.best()
    assert f1 == pytest.approx(max(sweep.f1)) and thr == sweep.thresholds[int(np.argmax(sweep.f1))]
    assert sweep.f1_at(PAPER_THRESHOLD) == pytest.approx(score_points(truth, [p.above(0.7) for p in peaks], 4.0)["all"].f1)


def test_sweep_ties_go_to_the_lowest_threshold():
    truth = [Points.from_xy([[10, 10]], ("a",))]
    peaks = [Points(np.array([[10.0, 10.0]]), np.zeros(1, int), ("a",), np.array([0.9]))]
    assert threshold_sweep(truth, peaks, 3.0, (0.1, 0.5, 0.8)).best() == (0.1, 1.0)


def test_micro_f1_conventions():
    assert micro_f1(0, 0, 0) == 1.0  # nothing to find, nothing found
    assert micro_f1(0, 3, 0) == 0.0 and micro_f1(0, 0, 3) == 0.0
    assert micro_f1(3, 1, 2) == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    np.testing.assert_allclose(micro_f1(np.array([1, 0]), np.array([1, 0]), np.array([0, 0])), [2 / 3, 1.0])


def test_evaluation_record_as_dict_keeps_the_json_shape():
    from sparsecell.metrics import Evaluation

    s = score_points([Points.from_xy([[1, 1]], ("a",))], [Points.from_xy([[1, 2]], ("a",))], 3.0)
    d = Evaluation(0.3, 3.0, 1, s, 1.0, {0.5: 1.0, 0.7: 0.0}).as_dict()
    assert d["threshold"] == 0.3 and d["radius_px"] == 3.0 and d["all"]["tp"] == 1 and d["a"]["f1"] == 1.0
    assert d["f1_at"] == {"0.5": 1.0, "0.7": 0.0} and d["ap"] == 1.0
