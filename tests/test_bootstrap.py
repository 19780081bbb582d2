"""Bootstrapping from the classical peer: its detections join the clicks as labels."""

from __future__ import annotations

import numpy as np
import pytest

from sparsecell.config import load_config
from sparsecell.datasets.base import Sample
from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_dataset
from sparsecell.errors import ConfigError
from sparsecell.formats.points import Points
from sparsecell.metrics import score_points
from sparsecell.training.bootstrap import bootstrap_points
from sparsecell.training.loop import train
from sparsecell.training.targets import sparsify

from conftest import TINY

CFG = SyntheticConfig(size=256, stain_jitter=0.0, lymphocytes=(0, 0), stromal=(0, 0))


def samples(n: int, seed: int) -> list[Sample]:
    return [Sample(img, pts, name) for img, pts, name in synthetic_dataset(n, seed, CFG)]


def test_the_peer_fills_in_around_the_clicks_and_never_overrides_them():
    train_s, val = samples(3, seed=21), samples(3, seed=22)
    clicks = [sparsify(s.points, 0.1, seed=k) for k, s in enumerate(train_s)]
    boxes = [[(0, 0, 64, 64)] for _ in train_s]  # a region the user annotated completely
    merged, record = bootstrap_points(train_s, clicks, val, ("positive", "negative"), 6.0, 0.5, boxes)
    assert record["added"] == sum(len(m) - len(c) for m, c in zip(merged, clicks)) > 0
    for m, c in zip(merged, clicks):
        n = len(c)
        np.testing.assert_array_equal(m.xy[:n], c.xy)  # the clicks first, as they were, classes and all
        np.testing.assert_array_equal(m.labels[:n], c.labels)
        extra = m.xy[n:]
        if len(c):
            d = np.hypot(extra[:, None, 0] - c.xy[None, :, 0], extra[:, None, 1] - c.xy[None, :, 1]).min(1)
            assert (d > 6.0).all()
        assert not ((extra[:, 0] < 64) & (extra[:, 1] < 64)).any()  # nothing added inside the complete region
    # the labels now find far more of the cells than the clicks alone, at a usable precision
    truth = [s.points for s in train_s]
    before, after = score_points(truth, clicks, 6.0)["all"], score_points(truth, merged, 6.0)["all"]
    assert after.recall > before.recall + 0.3 and after.precision > 0.6, (before, after)


def test_bootstrap_refuses_what_the_peer_cannot_do():
    s = samples(1, seed=1)
    four = Points(np.zeros((0, 2)), np.zeros(0, np.int64), ("a", "b", "c", "d"))
    with pytest.raises(ConfigError, match="one class or two"):
        bootstrap_points(s, [four], s, four.classes, 6.0, 0.5)
    with pytest.raises(ConfigError, match="no"):
        bootstrap_points(s, [s[0].points], [], s[0].points.classes, 6.0, 0.5)


def test_training_with_the_peer_runs_and_says_what_it_added(tmp_path, capsys):
    cfg = load_config(None, TINY + [f"train.out_dir={tmp_path / 'run'}", "data.bootstrap=classical", "train.epochs=1"])
    r = train(cfg)
    assert r.best_checkpoint.is_file()
    assert "bootstrap: the classical peer" in capsys.readouterr().out
